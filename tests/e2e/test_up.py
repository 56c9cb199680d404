"""`xcwado up` keeps a federation running, publishes its state file, and stops cleanly on SIGTERM or
Ctrl-C (SIGINT), also when started as a shell's background job (which inherits SIGINT ignored)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _as_background_job() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what `cmd &` in a non-interactive shell does


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_up_writes_the_state_file_serves_and_stops_cleanly(tmp_path: Path, stop: signal.Signals) -> None:
    state = tmp_path / "state.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ncp.cli", "up", "--state", str(state), "--run-dir", str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=_as_background_job,
    )
    try:
        deadline = time.monotonic() + 180
        while not state.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert state.exists(), (
            proc.stdout.read().decode() if proc.stdout and proc.poll() is not None else "timeout"
        )
        doc = json.loads(state.read_text())
        for country in ("FR", "AT"):
            entry = doc["countries"][country]
            assert httpx.get(f"{entry['gateway']}/health").status_code == 200
            assert all(url.startswith("http://127.0.0.1:") for url in entry["pacs"].values())
        assert doc["security"]["enabled"] and Path(doc["security"]["ca_file"]).exists()
        assert sum(len(p["studies"]) for p in doc["catalogue"]["patients"]) > 0
        gateway = doc["countries"]["AT"]["gateway"]
    finally:
        proc.send_signal(stop)
        assert proc.wait(timeout=60) == 0
    assert not state.exists()  # it described a running federation
    try:
        httpx.get(f"{gateway}/health", timeout=2)
        still_up = True
    except httpx.HTTPError:
        still_up = False
    assert not still_up
