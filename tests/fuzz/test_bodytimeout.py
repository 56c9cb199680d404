"""A request body that stops arriving is answered 408; a slow one, or a long answer, is left alone."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import urlsplit

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ncp.bodytimeout import BodyTimeout
from ncp.errors import NcpError, fhir_error_response

IDLE_S = 0.5


async def count_body(request: Request) -> Response:
    return PlainTextResponse(str(len(await request.body())))


async def stream_slowly(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            await asyncio.sleep(IDLE_S)
            yield b"chunk\n"

    return StreamingResponse(chunks())


def app() -> Starlette:
    return Starlette(
        routes=[Route("/body", count_body, methods=["POST"]), Route("/stream", stream_slowly)],
        middleware=[Middleware(BodyTimeout, idle_s=IDLE_S)],
        exception_handlers={NcpError: lambda request, exc: fhir_error_response(exc)},  # type: ignore[arg-type, return-value]
    )


@pytest.fixture
def connect(serve: Callable[..., str]) -> Iterator[Callable[[], socket.socket]]:
    url = urlsplit(serve(app()))
    sockets: list[socket.socket] = []

    def open_one() -> socket.socket:
        sock = socket.create_connection((url.hostname, url.port), timeout=10)
        sockets.append(sock)
        return sock

    yield open_one
    for sock in sockets:
        sock.close()


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def post_head(length: int, *, keep_alive: bool = False) -> bytes:
    connection = "keep-alive" if keep_alive else "close"
    head = f"POST /body HTTP/1.1\r\nHost: x\r\nConnection: {connection}\r\nContent-Length: {length}\r\n\r\n"
    return head.encode()


def test_a_body_that_stops_arriving_is_answered_408_and_the_connection_closed(
    connect: Callable[[], socket.socket],
) -> None:
    sock = connect()
    started = time.monotonic()
    sock.sendall(post_head(1000, keep_alive=True) + b"0123456789")
    answer = read_all(sock)  # returns once the server closes the connection
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in answer.lower()
    assert b'"resourceType": "OperationOutcome"' in answer
    assert time.monotonic() - started < IDLE_S + 2


def test_a_slow_but_steady_body_is_read_whole(connect: Callable[[], socket.socket]) -> None:
    sock = connect()
    sock.sendall(post_head(50))
    for _ in range(5):  # 5 x 0.3 s: longer than the bound in all, never silent that long
        time.sleep(IDLE_S * 0.6)
        sock.sendall(b"x" * 10)
    answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\n50")


def test_a_long_streamed_answer_is_not_cut_by_the_bound(connect: Callable[[], socket.socket]) -> None:
    sock = connect()
    sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"chunk\n") == 4


def test_a_client_gone_mid_body_leaves_no_error_in_the_log(
    connect: Callable[[], socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    server_log = logging.getLogger("uvicorn.error")
    server_log.addHandler(caplog.handler)
    try:
        sock = connect()
        sock.sendall(post_head(1000) + b"0123456789")
        time.sleep(0.1)
        sock.close()
        time.sleep(0.3)
    finally:
        server_log.removeHandler(caplog.handler)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
