"""``xcwado up --front nginx``: the federation's gateways behind nginx (docs/decisions.md, "The nginx front").
It starts and answers through nginx, passes the scenario catalogue, stops with its nginx processes, and
refuses a machine without nginx in one line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from scenario_support import run_scenarios

from ncp import federation
from ncp.federation import Federation, FrontUnavailable
from ncp.nginx import NGINX_ABSENT, nginx_binary, process_children

needs_nginx = pytest.mark.skipif(nginx_binary() is None, reason=NGINX_ABSENT)


def _nginx_masters_under(folder: Path) -> list[int]:
    """The nginx masters whose configuration lies in ``folder`` (nginx retitles its master "nginx: master
    process <its command line>")."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            title = cmdline.read_bytes().replace(b"\0", b" ")
        except OSError:
            continue  # a process that ended meanwhile
        if title.startswith(b"nginx: master") and str(folder).encode() in title:
            found.append(int(cmdline.parent.name))
    return found


@contextmanager
def up_behind_fronts(folder: Path, *options: str) -> Iterator[Path]:
    """``xcwado up --front nginx`` in ``folder`` until the block ends (Ctrl-C, as a user stops it, which
    must succeed); its state file."""
    state = folder / "state.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ncp.cli", "up", "--front", "nginx", "--run-dir", "run", "--state", str(state),
         *options],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert state.exists(), proc.stdout.read() if proc.stdout and proc.poll() is not None else "timeout"
        yield state
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    assert not state.exists()


@needs_nginx
def test_up_with_the_front_answers_through_nginx_and_stops_it(tmp_path: Path) -> None:
    with up_behind_fronts(tmp_path, "--no-seed") as state:
        gateway = json.loads(state.read_text())["countries"]["AT"]["gateway"]
        answer = httpx.get(f"{gateway}/health", timeout=10)
        assert answer.status_code == 200 and answer.json()["country"] == "AT"
        assert answer.headers["server"].startswith("nginx")
        masters = _nginx_masters_under(tmp_path / "run")
        assert len(masters) == 2  # one front per country
        workers = [w for m in masters for w in process_children(m)]
        assert workers
    assert _nginx_masters_under(tmp_path / "run") == []
    assert not any(Path(f"/proc/{w}").exists() for w in workers)


@needs_nginx
def test_the_scenario_catalogue_passes_through_the_fronts(tmp_path: Path) -> None:
    """Every scenario a running federation can be given passes with its gateways behind their fronts, the
    negative paths among them: nginx changes no answer a client sees."""
    with up_behind_fronts(tmp_path) as state:
        results = run_scenarios(state, tmp_path / "scenarios.json", "--all")
    passed = {r["id"] for r in results if r["outcome"] == "passed"}
    assert "XB-001" in passed and any(p.startswith("NG-") for p in passed), passed


def test_a_machine_without_nginx_is_told_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(federation, "nginx_binary", lambda: None)  # fault injection: nginx absent
    with pytest.raises(FrontUnavailable, match="install Debian's nginx"):
        Federation("builtin:default", tmp_path / "run", front="nginx")
    assert not (tmp_path / "run" / "plan.json").exists()
