"""The command line as a newcomer meets it: ``xcwado ...`` in a subprocess, its exit status and stderr."""

from __future__ import annotations

import importlib
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TOML = (ROOT / "ncp" / "topologies" / "default.toml").read_text()
LOADTESTS = ROOT / "loadtests"


def load_runner() -> ModuleType:
    """loadtests/run.py, the runner behind ``xcwado load`` (a folder of modules that import each other by
    bare name, as tests/load/conftest.py explains; its pure modules never import Locust)."""
    if str(LOADTESTS) not in sys.path:
        sys.path.insert(0, str(LOADTESTS))
    return importlib.import_module("run")


def xcwado(*args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``xcwado ARGS`` as the console script runs it (``python -m ncp.cli``: same entry point)."""
    return subprocess.run(
        [sys.executable, "-m", "ncp.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def refused(done: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit status 2 and exactly one line on stderr that names what to fix; never a traceback."""
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    assert done.returncode == 2, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
