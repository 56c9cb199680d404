"""Fixtures: an empty registry over real HTTP, and one holding the catalogue published with ITI-65."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from registry_catalogue import ALICE, BOB, HCID, Published, bundle_for

from ncp.registry.app import RegistrySettings, create_registry_app
from ncp.server import free_port


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """One client per test (creating an httpx client costs ~40 ms: its SSL context)."""
    with httpx.Client(timeout=30) as client:
        yield client


@pytest.fixture
def start_registry(serve: Callable[..., str], tmp_path: Path) -> Callable[..., str]:
    """Start an empty registry (settings overrides as keywords); returns its FHIR base URL."""

    def start(**overrides: Any) -> str:
        port = free_port()
        base = f"http://127.0.0.1:{port}/fhir"
        settings = RegistrySettings(
            db_path=tmp_path / f"db-{port}" / "registry.sqlite",
            public_base_url=base,
            home_community_id=HCID,
            **overrides,
        )
        serve(create_registry_app(settings), port=port)
        return base

    return start


@pytest.fixture
def published(start_registry: Callable[..., str], http: httpx.Client) -> Published:
    """The catalogue published with one ITI-65 transaction per patient."""
    pub = Published(start_registry(), http)
    for patient in (ALICE, BOB):
        response = pub.post(bundle_for(patient))
        assert response.status_code == 200, response.text
        pub_docs = [
            e["response"]["location"].split("/DocumentReference/")[1].split("/")[0]
            for e in response.json()["entry"]
            if "/DocumentReference/" in e["response"]["location"]
        ]
        for doc_id in pub_docs:
            doc = pub.get(f"/DocumentReference/{doc_id}").json()
            uid = next(
                r["identifier"]["value"].removeprefix("urn:oid:")
                for r in doc["context"]["related"]
                if r["identifier"]["type"]["coding"][0]["code"] == "110180"
            )
            kind = doc["type"]["coding"][0]["code"]
            (pub.manifests if kind == "18748-4" else pub.reports)[uid] = doc_id
    return pub
