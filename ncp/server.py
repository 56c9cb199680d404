"""Run ASGI apps on loopback: in a thread (tests, embedded federation) or as the role processes use."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import subprocess
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import uvicorn

__all__ = ["Stoppable", "free_port", "run_forever", "serve_in_thread", "stop_process"]


# Ports are handed out below the kernel's ephemeral range (32768-60999 here): a port that
# bind(0) returned can be taken as the source port of an outgoing connection before its server
# binds it (seen in CI as "address already in use"). The counter is process-wide because the
# ports are; it starts at a per-process offset so that concurrent processes rarely meet.
_LOW, _HIGH = 20000, 32000
_candidates = itertools.count((os.getpid() * 7919) % (_HIGH - _LOW))


def _port_range() -> tuple[int, int]:
    """``XCWADO_PORT_RANGE=low-high`` narrows the range: concurrent test workers each take their own
    (tests/conftest.py), so a port planned for a role that binds seconds later is never handed out twice."""
    low, _, high = os.environ.get("XCWADO_PORT_RANGE", "").partition("-")
    return (int(low), int(high)) if high else (_LOW, _HIGH)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that nothing on ``host`` listens on and that no outgoing connection will take."""
    low, high = _port_range()
    for _ in range(high - low):
        port = low + next(_candidates) % (high - low)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on {host} in {low}-{high}")


@contextmanager
def serve_in_thread(
    app: Any, *, host: str = "127.0.0.1", port: int | None = None, **options: Any
) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a daemon thread; yields its ``http://host:port`` base URL.

    ``options`` go to ``uvicorn.Config`` (e.g. ``ssl_certfile`` for TLS listeners).
    """
    port = port or free_port(host)
    # The stdlib loop, as the role processes run (ncp.federation.run_role), not uvloop, which uvicorn's
    # "auto" picks: with many loops starting and stopping in one process, uvloop crashed the test process
    # in a loop's shutdown (SIGSEGV in CI; cf. MagicStack/uvloop#706).
    # uvicorn believes X-Forwarded-For/-Proto from 127.0.0.1 by default: here that would be every client.
    # Access log lines would carry query strings (patient identifiers): the audit trail records requests.
    # A request still in flight at stop (a stream whose peer went away) is cancelled after 2 s: without a
    # bound, stopping a federation waited out the thread join (10 s per such listener).
    options = {
        "loop": "asyncio",
        "proxy_headers": False,
        "access_log": False,
        "timeout_graceful_shutdown": 2,
        **options,
    }
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", **options)
    server = _WakeableServer(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"server on {host}:{port} did not start")
        time.sleep(0.01)
    scheme = "https" if options.get("ssl_certfile") else "http"
    try:
        yield f"{scheme}://{host}:{port}"
    finally:
        server.stop()
        thread.join(timeout=10)


class _WakeableServer(uvicorn.Server):
    """uvicorn's server, told to stop at once rather than at its next 0.1 s tick: the test suite starts
    and stops servers by the thousand."""

    _loop: asyncio.AbstractEventLoop | None = None
    _wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)

    def stop(self) -> None:
        self.should_exit = True
        if self._loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                self._loop.call_soon_threadsafe(self._wake.set)


def run_forever(main: Coroutine[Any, Any, None]) -> None:
    """Run a role process's servers on uvloop when it is installed (``uvicorn[standard]`` brings it).

    One loop for the process's whole life, so uvloop's crash with many loops in one process (above) does
    not arise; the stdlib loop's selector loop and TLS protocol are pure Python, paid on every request
    (docs/benchmarks.md, "Per-request costs").
    """
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


class Stoppable(Protocol):
    """What :func:`stop_process` needs: a :class:`subprocess.Popen`, or a forked role."""

    def terminate(self) -> None: ...

    def kill(self) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...


def stop_process(proc: Stoppable, grace_s: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited after ``grace_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
