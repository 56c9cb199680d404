"""Fixtures: an XDS.b registry + repository over real HTTP, and the official schemas."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from xds_support import HCID, PATIENT_ISSUER, REPOSITORY, xds_schema

from ncp.registry.xds.app import XdsSettings, create_xds_app


@pytest.fixture
def start_xds(serve: Callable[..., str], tmp_path: Path) -> Callable[..., str]:
    """Start an empty registry + repository (settings overrides as keywords); returns its base URL."""

    def start(**overrides: Any) -> str:
        settings = XdsSettings(
            db_path=tmp_path / "xds" / "xds.sqlite",
            home_community_id=HCID,
            repository_unique_id=REPOSITORY,
            patient_id_domain=PATIENT_ISSUER,
            **overrides,
        )
        return serve(create_xds_app(settings))

    return start


@pytest.fixture
def xds(start_xds: Callable[..., str]) -> str:
    return start_xds()


@pytest.fixture(scope="session")
def schema() -> etree.XMLSchema:
    return xds_schema()
