"""Fixtures: one three-country test PKI per session (FR answers, AT and NO call)."""

from __future__ import annotations

import pytest
from token_clock import Clock

from ncp.security.pki import FederationPki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> FederationPki:
    return FederationPki.create(tmp_path_factory.mktemp("pki"), ["FR", "AT", "NO"])


@pytest.fixture
def tick() -> Clock:
    """A clock the test moves: ``tick.now += 60``."""
    return Clock()
