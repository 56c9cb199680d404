"""Fixtures: two regions, each an XCA Responding Gateway over its XDS.b registry + repository, with a
recorder on the wire in front of each; the schemas and catalogue of tests/xds."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from lxml import etree

sys.path.insert(0, str(Path(__file__).parent.parent / "xds"))  # xds_support: catalogue, schemas, client
sys.path.insert(0, str(Path(__file__).parent.parent / "xcai"))  # xcai_support: the RAD-69 client

from xca_support import NORTH, SOUTH, Region, start_region
from xds_support import CT, CT_REPORT, MR, xds_schema


@pytest.fixture(scope="session")
def schema() -> etree.XMLSchema:
    return xds_schema()


@pytest.fixture
def regions(serve: Callable[..., str], tmp_path: Path, http: httpx.Client) -> tuple[Region, Region]:
    """North holds Alice's CT (manifest + report), south her MR (manifest), both seeded with ITI-41."""
    north = start_region(serve, tmp_path, http, NORTH, [(CT, CT_REPORT)])
    south = start_region(serve, tmp_path, http, SOUTH, [(MR, None)])
    return north, south
