"""Fixtures: one three-country test PKI per session (FR answers, AT and NO call)."""

from __future__ import annotations

import pytest

from ncp.security.pki import FederationPki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> FederationPki:
    return FederationPki.create(tmp_path_factory.mktemp("pki"), ["FR", "AT", "NO"])
