"""``xcwado up --front nginx``: the federation's gateways behind nginx (docs/decisions.md, "The nginx front").
It starts and answers through nginx, stops with its nginx processes, and refuses what it cannot run in one
line: the Docker runtime, and a machine without nginx."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ncp import federation
from ncp.federation import Federation, FrontUnavailable
from ncp.nginx import NGINX_ABSENT, nginx_binary, process_children


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


@pytest.mark.skipif(nginx_binary() is None, reason=NGINX_ABSENT)
def test_up_with_the_front_answers_through_nginx_and_stops_it(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ncp.cli", "up", "--no-seed", "--front", "nginx", "--run-dir", "run",
         "--state", str(state)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert state.exists(), proc.stdout.read() if proc.stdout and proc.poll() is not None else "timeout"
        gateway = json.loads(state.read_text())["countries"]["AT"]["gateway"]
        answer = httpx.get(f"{gateway}/health", timeout=10)
        assert answer.status_code == 200 and answer.json()["country"] == "AT"
        assert answer.headers["server"].startswith("nginx")
        masters = _nginx_masters_under(tmp_path / "run")
        assert len(masters) == 2  # one front per country
        workers = [w for m in masters for w in process_children(m)]
        assert workers
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    assert not state.exists()
    assert _nginx_masters_under(tmp_path / "run") == []
    assert not any(Path(f"/proc/{w}").exists() for w in workers)


def test_a_machine_without_nginx_is_told_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(federation, "nginx_binary", lambda: None)  # fault injection: nginx absent
    with pytest.raises(FrontUnavailable, match="install Debian's nginx"):
        Federation("builtin:default", tmp_path / "run", front="nginx")
    assert not (tmp_path / "run" / "plan.json").exists()
