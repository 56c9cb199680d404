"""Shared fixtures: real servers on loopback (uvicorn in a thread), never mocks of our own roles."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from ncp.server import serve_in_thread


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    """``serve(app, **uvicorn_options) -> base URL``; every server stops at the end of the test."""
    with ExitStack() as stack:

        def start(app: Any, **options: Any) -> str:
            return stack.enter_context(serve_in_thread(app, **options))

        yield start


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A plain HTTP client for a test to drive the servers with."""
    with httpx.Client(timeout=30) as client:
        yield client


# The fast tier (`make check`) leaves these out: each starts federations, subprocesses, Docker, Orthanc
# or a browser. `make test` runs everything.
_INTEGRATION_DIRS = frozenset(
    {"bench", "cli", "deploy", "e2e", "load", "orthanc", "portal", "scenario", "soak", "viewer"}
)
_INTEGRATION_FILES = frozenset(
    {
        "fuzz/test_fuzz.py",
        "gateway/test_ssrf.py",
        "link/test_federation_links.py",
        "security/test_audit_access.py",
        "security/test_audit_durability.py",
        "xds/test_xds_mutations.py",
        "xds/test_xds_country.py",
        "xds/test_xds_external.py",
        "xca/test_xca_country.py",
        "xca/test_xca_mutations.py",
        "xca/test_xca_xua.py",
    }
)


# `make test` runs everything else in five workers (pytest-xdist, a file per worker), then these alone:
# the emulated links' tests bound elapsed times from above, the soak samples at fixed intervals and must
# see no request fail, and Locust's distributed run needs its workers' last reports to reach the master
# in time; saturated cores distort all of them.
_SERIAL_FILES = frozenset(
    {
        "link/test_link_shaping.py",
        "link/test_link_faults.py",
        "link/test_link_relay_api.py",
        "soak/test_soak.py",
        "load/test_locust_smoke.py",
    }
)


def pytest_configure(config: pytest.Config) -> None:
    """Each pytest-xdist worker plans ports in a slice of its own (ncp.server.free_port): the other worker
    never takes a port between its planning and a role process binding it."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if worker and count:
        size = (32000 - 20000) // int(count)
        low = 20000 + int(worker.removeprefix("gw")) * size
        os.environ["XCWADO_PORT_RANGE"] = f"{low}-{low + size}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        where = item.path.relative_to(root).as_posix()
        if where.split("/")[0] in _INTEGRATION_DIRS or where in _INTEGRATION_FILES:
            item.add_marker(pytest.mark.integration)
        if where in _SERIAL_FILES:
            item.add_marker(pytest.mark.serial)
