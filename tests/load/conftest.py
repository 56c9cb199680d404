"""Load tests: a seeded federation of processes shared by the module, and the ``loadtests`` folder.

``loadtests/`` is a plain folder of Locust files, not a package: its pure modules (state, checks,
metrics, profiles, summary, run) import each other by bare name, so the folder goes on
``sys.path``. Its Locust modules (locustfile, hooks, users, shapes) are never imported here:
``import locust`` monkey-patches the process with gevent; Locust runs in subprocesses.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ncp.federation import Federation
from ncp.publish import seed_federation
from ncp.synth import catalogue_json

ROOT = Path(__file__).resolve().parents[2]
LOADTESTS = ROOT / "loadtests"
if str(LOADTESTS) not in sys.path:
    sys.path.insert(0, str(LOADTESTS))


@pytest.fixture(scope="package")
def state_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The default topology (FR, AT) as processes, seeded, with its state file (docs/state-file.md)."""
    run_dir = tmp_path_factory.mktemp("load-federation")
    with Federation("builtin:default", run_dir, mode="process") as fed:
        published = asyncio.run(seed_federation(fed.topology, fed.plan.endpoints))
        fed.catalogue = {"patients": [p for pub in published.values() for p in catalogue_json(pub.data)]}
        path = run_dir / "state.json"
        fed.write_state(path)
        yield path
