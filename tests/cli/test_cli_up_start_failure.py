"""A role that never comes up stops ``xcwado up`` at once, in one line naming the role and where its log is
(it used to wait 60 s, then printed a ``RuntimeError`` traceback);
nothing keeps running, no state file stays."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from cli_support import refused

DYING_ROLE = "AT/registry/national"

LOG_NAME = DYING_ROLE.replace("/", "-") + ".log"

# Fault injection: every Python process of the run imports this; the one that opens DYING_ROLE's log (the
# role's process, as it starts) exits at once, as a role whose port, storage or configuration fails would.
_SITECUSTOMIZE = f"""
import os
import sys


def _fail(event, args):
    if event == "open" and not _fail.done and str(args[0]).endswith({LOG_NAME!r}):
        _fail.done = True
        fd = os.open(args[0], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.write(fd, b"injected fault: this role cannot start\\n")
        os._exit(3)  # SystemExit would be reported by site as an error


_fail.done = False
sys.addaudithook(_fail)
"""


def test_a_role_that_exits_while_starting_is_named_in_one_line(tmp_path: Path) -> None:
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(inject), os.environ.get("PYTHONPATH")])),
    }
    state, run_dir = tmp_path / "state.json", tmp_path / "run"
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ncp.cli",
            "up",
            "--state",
            str(state),
            "--run-dir",
            str(run_dir),
            "--no-seed",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    elapsed = time.monotonic() - started
    line = refused(done, DYING_ROLE, "exited with status 3", str(run_dir / "logs"))
    assert "did not start" in line
    assert elapsed < 45, f"waited {elapsed:.0f} s for a role that had already exited"
    assert not state.exists()
    log = run_dir / "logs" / LOG_NAME
    assert "injected fault" in log.read_text()
