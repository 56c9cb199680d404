"""``xcwado scenario run --target STATE``: the catalogue runs against systems it did not start.

The systems here are a federation started by the test and described by its state file, exactly what an
outside team's NCP provides in the same form; the runner must not start anything of its own.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ncp.federation import Federation
from ncp.publish import seed_federation
from ncp.scenario.runner import load_scenarios
from ncp.synth import catalogue_json

XCWADO = [sys.executable, "-m", "ncp.cli"]


@pytest.fixture(scope="module")
def state_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    run_dir = tmp_path_factory.mktemp("target")
    with Federation("builtin:default", run_dir / "run", mode="thread", secure=True) as fed:
        published = asyncio.run(seed_federation(fed.topology, fed.plan.endpoints))
        fed.catalogue = {"patients": [p for pub in published.values() for p in catalogue_json(pub.data)]}
        fed.write_state(run_dir / "state.json")
        yield run_dir / "state.json"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*XCWADO, "scenario", "run", *args], capture_output=True, text=True, timeout=600)


def test_the_catalogue_passes_against_a_running_target_and_skips_only_what_it_cannot_hold(
    state_file: Path, tmp_path: Path
) -> None:
    done = run_cli("--all", "--target", str(state_file), "--json", str(tmp_path / "r.json"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "r.json").read_text())
    outcomes = {s["id"]: (s["outcome"], s["message"]) for s in report["scenarios"]}
    # the target holds the default topology's MADO catalogue and cannot be made to lose a role (NG-012):
    # the others say why they did not run
    cannot = {s.id for s in load_scenarios() if s.topology or s.encoding == "MCWG"} | {"NG-012"}
    assert {i for i, (o, _) in outcomes.items() if o == "skipped"} == cannot
    reasons = ("topology", "MCWG", "only be caused in the simulated federation")
    assert all(any(r in m for r in reasons) for i, (_, m) in outcomes.items() if i in cannot)
    assert {i for i, (o, _) in outcomes.items() if o != "skipped"} == {
        i for i, (o, _) in outcomes.items() if o == "passed"
    }
    assert len(outcomes) - len(cannot) >= 25


def test_every_request_went_to_the_systems_the_state_file_names(state_file: Path, tmp_path: Path) -> None:
    state = json.loads(state_file.read_text())
    known = {urlsplit(url).netloc for c in state["countries"].values() for url in (c["gateway"], c["border"])}
    done = run_cli("XB-001", "NG-002", "--target", str(state_file), "--json", str(tmp_path / "r.json"))
    assert done.returncode == 0, done.stdout[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    netlocs = {
        urlsplit(x["url"]).netloc for s in report["scenarios"] for st in s["steps"] for x in st["requests"]
    }
    assert netlocs and netlocs <= known


def test_a_target_that_is_not_a_state_file_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    bogus = tmp_path / "target.json"
    bogus.write_text(json.dumps({"countries": {}}))
    done = run_cli("--all", "--target", str(bogus))
    assert done.returncode == 2
    assert str(bogus) in done.stdout and "topology" in done.stdout
