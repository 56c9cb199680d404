"""Fixtures: a PACS over real HTTP (uvicorn in a thread), loaded through STOW-RS."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pacs_harness import Pacs
from pacs_samples import Sample, sample_study

from ncp.pacs.app import PacsSettings, create_pacs_app
from ncp.server import serve_in_thread


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


@pytest.fixture
def start_pacs(serve: Callable[..., str], tmp_path: Path, http: httpx.Client) -> Callable[..., Pacs]:
    """``start_pacs(**settings) -> Pacs``: a fresh PACS (own storage folder) per call."""
    counter = iter(range(1000))

    def start(**overrides: Any) -> Pacs:
        storage = tmp_path / f"pacs-{next(counter)}"
        app = create_pacs_app(PacsSettings(storage_dir=storage, **overrides))
        return Pacs(serve(app) + "/dicom-web", storage, http)

    return start


@pytest.fixture
def pacs(start_pacs: Callable[..., Pacs]) -> Pacs:
    return start_pacs()


@pytest.fixture(scope="session")
def study() -> list[Sample]:
    """One CT study: 2 series x 3 instances."""
    return sample_study("pacs-tests")


@pytest.fixture
def loaded(pacs: Pacs, study: list[Sample]) -> Pacs:
    pacs.load(study)
    return pacs


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, study: list[Sample]) -> Iterator[Pacs]:
    """One loaded PACS per test module, for tests that only read (saves a server start per test)."""
    storage = tmp_path_factory.mktemp("pacs-shared")
    with (
        serve_in_thread(create_pacs_app(PacsSettings(storage_dir=storage))) as url,
        httpx.Client(timeout=30) as http,
    ):
        pacs = Pacs(url + "/dicom-web", storage, http)
        pacs.load(study)
        yield pacs
