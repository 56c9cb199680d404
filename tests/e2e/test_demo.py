"""`xcwado demo` as a user runs it: role processes, mTLS and tokens, exit status 0 only when verified."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_demo_runs_the_three_steps_across_processes_and_writes_the_state_file(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "ncp.cli", "demo", "--run-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "All steps verified." in run.stdout
    assert "FAIL" not in run.stdout
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["security"]["enabled"] is True
    assert state["countries"]["FR"]["border"].startswith("https://")
    patients = state["catalogue"]["patients"]
    assert {p["country"] for p in patients} == {"FR", "AT"}
    study = patients[0]["studies"][0]
    assert study["series"] and study["manifest_sop_instance_uid"]
