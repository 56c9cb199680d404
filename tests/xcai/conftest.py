"""Fixtures: imaging document sources (the embedded PACS with RAD-69) over real HTTP, the XDS-I.b schema."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from lxml import etree

sys.path.insert(0, str(Path(__file__).parent.parent / "xds"))  # xds_support: the SOAP client, schemas

from xcai_support import DE_HCID, DE_RLUID, FR_HCID, FR_RLUID, Study, ct_study, stow, xdsi_schema

from ncp.pacs.app import PacsSettings, create_pacs_app


@pytest.fixture(scope="session")
def schema() -> etree.XMLSchema:
    return xdsi_schema()


@pytest.fixture(scope="session")
def ct() -> Study:
    return ct_study("xcai-ct")


@pytest.fixture(scope="session")
def mr() -> Study:
    return ct_study("xcai-mr", count=2)


@pytest.fixture
def start_pacs(serve: Callable[..., str], tmp_path: Path, http: httpx.Client) -> Callable[..., str]:
    """``start_pacs(rluid, hcid, *studies) -> base URL``: an embedded PACS answering RAD-69 for ``rluid``."""

    def start(rluid: str, hcid: str, *studies: Study) -> str:
        settings = PacsSettings(
            storage_dir=tmp_path / f"pacs-{rluid}", retrieve_location_uid=rluid, home_community_id=hcid
        )
        base = serve(create_pacs_app(settings))
        for study in studies:
            stow(http, base, study)
        return base

    return start


@pytest.fixture
def fr_pacs(start_pacs: Callable[..., str], ct: Study) -> str:
    return start_pacs(FR_RLUID, FR_HCID, ct)


@pytest.fixture
def de_pacs(start_pacs: Callable[..., str], mr: Study) -> str:
    return start_pacs(DE_RLUID, DE_HCID, mr)
