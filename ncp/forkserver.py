"""Role processes forked from one process that has already imported the roles' code.

A role process that starts as ``python -m ncp.cli serve-role`` spends about a second importing Starlette,
aiohttp, pydicom, lxml and the rest before it serves anything; a federation has seven roles or more and the
test suite starts dozens of federations. A :class:`ForkServer` pays the imports once per federation and
forks each role from there (the pattern of :mod:`multiprocessing`'s ``forkserver``, without its rule that
every script starting a federation guard its main module).

The server is single-threaded and never runs an event loop, so a fork copies no lock held by another thread
and no loop. It talks over two pipes, one line of JSON per message:

* ``{"plan": ..., "role": ..., "log": ...}`` in, ``{"pid": N}`` out: a role started;
* ``{"exited": N, "status": S}`` out whenever a role ends (``S`` as :attr:`subprocess.Popen.returncode`:
  negative for a signal).

When its parent goes away (the pipe closes), it stops every role still running: a federation whose owner
crashed does not keep its ports.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import IO, Any

__all__ = ["ForkServer", "RoleChild"]


class ForkServer:
    """The parent's side: start roles, learn when they end."""

    def __init__(self, log_path: Path) -> None:
        with open(log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "ncp.forkserver"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._requests: IO[bytes] = self._proc.stdin
        self._replies: IO[bytes] = self._proc.stdout
        self._exits: dict[int, int] = {}
        # one reader at a time: roles are stopped from several threads at once, and a thread that read
        # another role's line keeps it in ``_exits`` for that role's thread instead of leaving it waiting
        self._lock = threading.Lock()

    def spawn(self, plan_file: Path, role_id: str, log_path: Path) -> RoleChild:
        request = {"plan": str(plan_file), "role": role_id, "log": str(log_path)}
        with self._lock:
            self._requests.write(json.dumps(request).encode() + b"\n")
            self._requests.flush()
            while "pid" not in (reply := self._next()):
                pass
        return RoleChild(self, int(reply["pid"]))

    def status(self, pid: int) -> int:
        """The exit status of a role whose process has ended (its line follows the end at once)."""
        with self._lock:
            while pid not in self._exits:
                self._next()
            return self._exits.pop(pid)

    def close(self) -> None:
        self._requests.close()
        self._proc.wait(timeout=15)
        self._replies.close()

    def _next(self) -> dict[str, Any]:
        line = self._replies.readline()
        if not line:
            raise RuntimeError(f"the role fork server exited with status {self._proc.wait()}")
        reply: dict[str, Any] = json.loads(line)
        if "exited" in reply:
            self._exits[int(reply["exited"])] = int(reply["status"])
        return reply


class RoleChild:
    """One forked role: the subset of :class:`subprocess.Popen` a federation uses. Signals go through a
    pidfd, so they can never reach another process that reused the pid."""

    def __init__(self, server: ForkServer, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._server = server
        try:
            self._fd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:  # it has already exited, and the server has waited for it
            self._fd = None

    def poll(self) -> int | None:
        return self._ended(0.0)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        status = self._ended(timeout)
        if status is None:
            raise subprocess.TimeoutExpired(f"role process {self.pid}", timeout or 0.0)
        return status

    def _signal(self, sig: int) -> None:
        if self.returncode is None and self._fd is not None:
            with contextlib.suppress(ProcessLookupError):  # it has exited, and is not yet waited for
                signal.pidfd_send_signal(self._fd, sig)

    def _ended(self, timeout: float | None) -> int | None:
        if self.returncode is None:
            if self._fd is not None:
                readable, _, _ = select.select([self._fd], [], [], timeout)
                if not readable:
                    return None
                os.close(self._fd)
                self._fd = None
            self.returncode = self._server.status(self.pid)  # its line follows the end at once
        return self.returncode


# --- the server's side ----------------------------------------------------------------------------------


def _serve() -> None:
    import uvicorn  # noqa: F401  the imports this process exists to pay once

    from ncp.federation import run_role

    with contextlib.suppress(ImportError):
        import uvloop  # noqa: F401
    children: set[int] = set()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a Python handler, so that the wakeup fd hears of it
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the federation's owner
    pending = b""
    try:
        while True:
            readable, _, _ = select.select([0, wake_r], [], [])
            if wake_r in readable:
                os.read(wake_r, 512)
                _reap(children)
            if 0 in readable:
                data = os.read(0, 65536)
                if not data:
                    break
                pending += data
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    pid = _fork(json.loads(line), run_role, [wake_r, wake_w])
                    children.add(pid)
                    _say({"pid": pid})
    finally:
        for pid in children:  # the parent is gone: so are its roles
            os.kill(pid, signal.SIGTERM)


def _fork(request: dict[str, str], run_role: Any, close: list[int]) -> int:
    pid = os.fork()
    if pid:
        return pid
    status = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in close:
            os.close(fd)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        devnull = os.open(os.devnull, os.O_RDONLY)
        for source, target in ((devnull, 0), (log, 1), (log, 2)):
            os.dup2(source, target)
        os.close(log)
        os.close(devnull)
        import logging

        logging.basicConfig(level=logging.WARNING)  # as ``python -m ncp.cli`` sets it up
        run_role(Path(request["plan"]), request["role"])
        status = 0
    except SystemExit as exc:  # uvicorn's, e.g. on a port it cannot bind
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _reap(children: set[int]) -> None:
    while children:
        pid, wait_status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        children.discard(pid)
        _say({"exited": pid, "status": os.waitstatus_to_exitcode(wait_status)})


def _say(message: dict[str, int]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    _serve()
