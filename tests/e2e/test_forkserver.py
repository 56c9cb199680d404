"""Role processes forked from one fork server (ncp/forkserver.py): a role that dies at once is reported with
its exit status like any other, and a federation whose owner dies, however it dies, does not keep running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ncp.federation import Federation
from ncp.forkserver import ForkServer, RoleChild

_OWNER = """
import json, sys, time
from pathlib import Path

import pytest

from ncp.federation import Federation
from ncp.forkserver import ForkServer, RoleChild
from ncp.federation import Federation

fed = Federation("builtin:default", Path(sys.argv[1]))
fed.start()
print(json.dumps(fed.pids), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_roles_stop_when_the_owner_of_the_federation_is_killed(tmp_path: Path) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True
    )
    assert owner.stdout is not None
    pids: dict[str, int] = json.loads(owner.stdout.readline())
    assert len(pids) >= 7 and all(_alive(pid) for pid in pids.values())
    owner.send_signal(signal.SIGKILL)  # no finally, no atexit: only the kernel closes its pipes
    owner.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids.values()):
        time.sleep(0.1)
    assert [role for role, pid in pids.items() if _alive(pid)] == []


def test_a_role_that_exits_at_once_reports_its_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pidfd_open = os.pidfd_open

    def late(pid: int, flags: int = 0) -> int:  # fault injection: the parent looks only once it is gone
        time.sleep(0.3)
        return pidfd_open(pid, flags)

    monkeypatch.setattr(os, "pidfd_open", late)
    server = ForkServer(tmp_path / "forkserver.log")
    try:
        # a log it cannot open: each role fails first thing, often before the parent has looked at it
        plan, logs = tmp_path / "plan.json", tmp_path / "missing"
        children = [server.spawn(plan, "FR/gateway", logs / f"{i}.log") for i in range(5)]
        assert [child.wait(timeout=30) for child in children] == [1] * 5
        assert "FileNotFoundError" in (tmp_path / "forkserver.log").read_text()
    finally:
        server.close()


def _stop(child: RoleChild, statuses: list[int]) -> None:
    child.terminate()
    statuses.append(child.wait(30))


def test_roles_stopped_from_many_threads_at_once_all_get_their_status(tmp_path: Path) -> None:
    """A federation stops its roles in parallel: each thread must get its own role's status, whichever thread
    read the fork server's line first (two threads reading each other's line once left both waiting)."""
    fed = Federation("builtin:default", tmp_path / "run")  # its plan and PKI; the roles are started here
    plan = tmp_path / "run" / "plan.json"
    fed.plan.write(plan)
    server = ForkServer(tmp_path / "forkserver.log")
    try:
        for _ in range(3):
            children = [server.spawn(plan, r.id, tmp_path / f"{r.name}.log") for r in fed.plan.roles]
            statuses: list[int] = []
            waiters = [threading.Thread(target=_stop, args=(c, statuses), daemon=True) for c in children]
            for waiter in waiters:
                waiter.start()
            for waiter in waiters:
                waiter.join(timeout=40)
            assert len(statuses) == len(children)
    finally:
        server.close()
