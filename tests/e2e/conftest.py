"""A seeded federation per topology, shared by the end-to-end tests of a module (real HTTP, threads)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e_federations import Seeded, start_seeded


@pytest.fixture(scope="module")
def default_mado(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    yield from start_seeded("builtin:default", tmp_path_factory.mktemp("default-mado"), "MADO")


@pytest.fixture(scope="module")
def default_mcwg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    yield from start_seeded("builtin:default", tmp_path_factory.mktemp("default-mcwg"), "MCWG")


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    yield from start_seeded("builtin:three-country", tmp_path_factory.mktemp("three"))
