"""A federation whose owner dies, however it dies, does not keep running: its roles are forked from a fork
server that stops them when the owner's end of its pipe closes (ncp/forkserver.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

_OWNER = """
import json, sys, time
from pathlib import Path
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
