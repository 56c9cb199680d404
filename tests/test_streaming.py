"""A streamed answer (ncp.streaming) stops when its client leaves, and otherwise behaves as Starlette's."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ncp.bodytimeout import BodyTimeout
from ncp.server import serve_in_thread
from ncp.streaming import StreamedResponse

CHUNK = b"x" * 65536


@dataclass
class Seen:
    sent: int = 0
    closed: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def served() -> Iterator[tuple[str, Seen]]:
    seen = Seen()

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                await asyncio.sleep(0.001)  # as an upstream read: the loop runs between chunks
                seen.sent += 1
                yield CHUNK
        finally:
            seen.closed.set()

    async def finite(count: int) -> AsyncIterator[bytes]:
        for _ in range(count):
            yield CHUNK

    async def release() -> None:
        seen.released.set()

    async def forever(request: Request) -> Response:
        return StreamedResponse(endless(), background=BackgroundTask(release))

    async def some(request: Request) -> Response:
        return StreamedResponse(finite(int(request.query_params["n"])), background=BackgroundTask(release))

    app = Starlette(routes=[Route("/forever", forever), Route("/some", some)])
    with serve_in_thread(BodyTimeout(app)) as base:
        yield base, seen


def test_a_client_that_leaves_stops_the_stream_and_the_upstream_is_released(served: tuple[str, Seen]) -> None:
    base, seen = served
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
    assert seen.closed.wait(5), "the body iterator was not closed after the client left"
    assert seen.released.wait(5), "the background task (the upstream's release) did not run"
    sent = seen.sent
    time.sleep(0.3)
    assert seen.sent == sent  # nothing more is produced for nobody


def test_a_complete_stream_is_sent_whole_and_then_released(served: tuple[str, Seen]) -> None:
    base, seen = served
    with httpx.Client() as client:
        for n in (0, 1, 7):
            seen.released.clear()
            answer = client.get(f"{base}/some", params={"n": n})
            assert answer.status_code == 200
            assert answer.content == CHUNK * n
            assert seen.released.wait(5)
