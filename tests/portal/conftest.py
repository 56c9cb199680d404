"""A secure, seeded default federation (FR affiliation, AT treatment) shared by the portal specifications,
and a clinician who signs in at AT's portal over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from portal_harness import Clinician, Portal

from ncp.federation import Federation
from ncp.publish import seed_federation


@pytest.fixture(scope="package")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    with Federation("builtin:default", tmp_path_factory.mktemp("portal"), mode="thread", secure=True) as fed:
        published = asyncio.run(seed_federation(fed.topology, fed.plan.endpoints))
        yield Portal(fed, published)


@pytest.fixture
def clinician(portal: Portal) -> Iterator[Clinician]:
    who = Clinician(portal)
    yield who
    who.close()
