"""H1Upstream, the lean HTTP/1.1 data-plane client: pooling, framing, back-pressure, timeouts, failures.

Servers are real: uvicorn (``serve_in_thread``) where a well-behaved server will do, a scripted asyncio
server on the test's own loop where the server must misbehave on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ncp.errors import UpstreamError, UpstreamTimeout
from ncp.gateway.h1client import H1Upstream
from ncp.gateway.proxy import Timeouts, UpstreamResponse, make_upstream
from ncp.security.pki import FederationPki
from ncp.server import serve_in_thread

BLOB = bytes(range(256)) * 2048  # 512 KiB
FAST = Timeouts(connect=2, first_byte=2, read=2)


async def _read(answer: UpstreamResponse) -> bytes:
    try:
        return b"".join([chunk async for chunk in answer.body])
    finally:
        await answer.close()


# --- a well-behaved server: uvicorn ------------------------------------------------------------------


@dataclass
class Seen:
    """What the uvicorn app saw: the client port of each request (one port = one connection)."""

    ports: list[int] = field(default_factory=list)
    in_flight: int = 0
    peak: int = 0


def _app(seen: Seen) -> Starlette:
    async def blob(request: Request) -> Response:
        seen.ports.append(request.client.port if request.client else 0)
        return Response(BLOB, media_type="application/octet-stream")

    async def chunked(request: Request) -> Response:
        async def pieces() -> AsyncIterator[bytes]:
            for at in range(0, len(BLOB), 100_000):
                yield BLOB[at : at + 100_000]

        return StreamingResponse(pieces(), media_type="application/octet-stream")

    async def slow(request: Request) -> Response:
        seen.ports.append(request.client.port if request.client else 0)
        seen.in_flight += 1
        seen.peak = max(seen.peak, seen.in_flight)
        await asyncio.sleep(0.1)
        seen.in_flight -= 1
        return Response(b"ok")

    async def closing(request: Request) -> Response:
        seen.ports.append(request.client.port if request.client else 0)
        return Response(b"bye", headers={"connection": "close"})

    routes = [
        Route("/blob", blob),
        Route("/chunked", chunked),
        Route("/slow", slow),
        Route("/close", closing),
    ]
    return Starlette(routes=routes)


@pytest.fixture
def uvicorn_server() -> Iterator[tuple[str, Seen]]:
    seen = Seen()
    with serve_in_thread(_app(seen)) as base:
        yield base, seen


async def test_a_connection_is_reused_once_its_answer_was_read_whole(
    uvicorn_server: tuple[str, Seen],
) -> None:
    base, seen = uvicorn_server
    async with _upstream(FAST) as upstream:
        for _ in range(3):
            assert await _read(await upstream.open(f"{base}/blob", {})) == BLOB
    assert len(seen.ports) == 3
    assert len(set(seen.ports)) == 1


async def test_chunked_bodies_are_decoded(uvicorn_server: tuple[str, Seen]) -> None:
    base, _ = uvicorn_server
    async with _upstream(FAST) as upstream:
        answer = await upstream.open(f"{base}/chunked", {})
        assert ("transfer-encoding", "chunked") in answer.headers
        assert await _read(answer) == BLOB
        assert await _read(await upstream.open(f"{base}/chunked", {})) == BLOB  # and the connection reused


async def test_no_more_than_limit_connections_are_open_and_the_rest_wait(
    uvicorn_server: tuple[str, Seen],
) -> None:
    base, seen = uvicorn_server
    upstream = H1Upstream(FAST, limit=2)

    async def one() -> bytes:
        return await _read(await upstream.open(f"{base}/slow", {}))

    try:
        bodies = await asyncio.gather(*(one() for _ in range(6)))
    finally:
        await upstream.aclose()
    assert bodies == [b"ok"] * 6
    assert seen.peak <= 2
    assert len(set(seen.ports)) <= 2


async def test_a_server_that_says_close_gets_a_new_connection_next_time(
    uvicorn_server: tuple[str, Seen],
) -> None:
    base, seen = uvicorn_server
    async with _upstream(FAST) as upstream:
        for _ in range(2):
            assert await _read(await upstream.open(f"{base}/close", {})) == b"bye"
    assert len(set(seen.ports)) == 2


async def test_a_caller_that_says_close_does_not_pool_the_connection(
    uvicorn_server: tuple[str, Seen],
) -> None:
    base, seen = uvicorn_server
    async with _upstream(FAST) as upstream:
        for _ in range(2):
            assert await _read(await upstream.open(f"{base}/blob", {"connection": "close"})) == BLOB
    assert len(set(seen.ports)) == 2


async def test_an_answer_abandoned_half_read_closes_its_connection(uvicorn_server: tuple[str, Seen]) -> None:
    base, seen = uvicorn_server
    async with _upstream(FAST) as upstream:
        answer = await upstream.open(f"{base}/chunked", {})
        await anext(aiter(answer.body))
        await answer.close()
        assert await _read(await upstream.open(f"{base}/blob", {})) == BLOB
    assert len(seen.ports) == 1  # /chunked is not recorded: the /blob request came on a new connection


async def test_at_the_limit_an_idle_connection_to_another_origin_makes_room(
    scripted: Callable[[Handler], Awaitable[Scripted]],
) -> None:
    async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while await _request(reader, first):
            writer.write(_head(2) + b"ok")

    first, second = await scripted(keep_alive), await scripted(keep_alive)
    async with _upstream(FAST, limit=1) as upstream:
        assert await _read(await upstream.open(f"{first.base}/x", {})) == b"ok"
        assert await _read(await upstream.open(f"{second.base}/x", {})) == b"ok"
        await asyncio.wait_for(first.closed.wait(), 2)  # the idle one was closed for it


def test_make_upstream_builds_it_by_name() -> None:
    assert isinstance(make_upstream("h1", FAST), H1Upstream)


# --- TLS with the federation PKI ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> FederationPki:
    return FederationPki.create(tmp_path_factory.mktemp("pki"), ["AT", "FR"], host="127.0.0.1")


@pytest.fixture
def tls_server(pki: FederationPki) -> Iterator[tuple[str, Seen]]:
    seen = Seen()
    with serve_in_thread(_app(seen), **pki.uvicorn_options("FR")) as base:
        yield base, seen


async def test_mutual_tls_with_a_pinned_peer_streams_and_reuses(
    tls_server: tuple[str, Seen], pki: FederationPki
) -> None:
    base, seen = tls_server
    assert base.startswith("https://")
    async with _upstream(FAST, ssl_context=pki.client_ssl_context("AT", peer="FR")) as upstream:
        for _ in range(2):
            assert await _read(await upstream.open(f"{base}/blob", {})) == BLOB
        assert await _read(await upstream.open(f"{base}/chunked", {})) == BLOB
    assert len(set(seen.ports)) == 1


async def test_a_server_that_is_not_the_pinned_peer_is_unreachable(
    tls_server: tuple[str, Seen], pki: FederationPki
) -> None:
    base, seen = tls_server
    async with _upstream(FAST, ssl_context=pki.client_ssl_context("AT", peer="AT")) as upstream:
        with pytest.raises(UpstreamError, match="next hop unreachable: SSLCertVerificationError"):
            await upstream.open(f"{base}/blob", {})
    assert seen.ports == []


# --- a scripted server that misbehaves on purpose ----------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


@dataclass
class Scripted:
    """A raw HTTP/1.1 server on the test's loop: ``handler(reader, writer, n)`` plays connection n."""

    base: str = ""
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0


@contextlib.asynccontextmanager
async def _upstream(timeouts: Timeouts, **options: Any) -> AsyncIterator[H1Upstream]:
    upstream = H1Upstream(timeouts, **options)
    try:
        yield upstream
    finally:
        await upstream.aclose()


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Handler], Awaitable[Scripted]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> Scripted:
        state = Scripted()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            state.connections += 1
            try:
                await handler(reader, writer, state.connections)
            except OSError:
                pass
            finally:
                writer.close()
                state.closed.set()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        state.base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        return state

    yield start
    for server in servers:
        server.close()


async def _request(reader: asyncio.StreamReader, state: Scripted) -> bool:
    """Read one request head; false at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return False
    state.requests.append(head)
    return True


def _head(length: int | None = None, *extra: str) -> bytes:
    fields = [*extra, *([f"Content-Length: {length}"] if length is not None else [])]
    return ("HTTP/1.1 200 OK\r\n" + "".join(f"{f}\r\n" for f in fields) + "\r\n").encode()


async def test_the_request_carries_the_target_host_and_the_given_headers_only(
    scripted: Callable[[Handler], Awaitable[Scripted]],
) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _request(reader, state)
        writer.write(_head(2) + b"ok")

    state = await scripted(answer)
    async with _upstream(FAST) as upstream:
        answer_ = await upstream.open(
            f"{state.base}/dicom-web/studies/1.2?includefield=all#x",
            {"Accept": 'multipart/related; type="application/dicom"', "x-request-id": "rid-1"},
        )
        assert await _read(answer_) == b"ok"
    host = state.base.removeprefix("http://")
    assert state.requests == [
        b"GET /dicom-web/studies/1.2?includefield=all HTTP/1.1\r\n"
        + f"Host: {host}\r\n".encode()
        + b'Accept: multipart/related; type="application/dicom"\r\n'
        + b"x-request-id: rid-1\r\n\r\n"
    ]


@pytest.mark.parametrize(
    "headers",
    [{"x-a": "1\r\nInjected: yes"}, {"x-a": "1\nInjected: yes"}, {"x-a\r\nInjected": "yes"}, {"x a": "1"}],
)
async def test_header_injection_is_refused_before_anything_is_sent(
    scripted: Callable[[Handler], Awaitable[Scripted]], headers: dict[str, str]
) -> None:
    async def nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _request(reader, state)

    state = await scripted(nothing)
    async with _upstream(FAST) as upstream:
        with pytest.raises(ValueError, match="CR/LF"):
            await upstream.open(f"{state.base}/x", headers)
    assert state.connections == 0


async def test_response_headers_come_back_in_order_with_names_as_received(
    scripted: Callable[[Handler], Awaitable[Scripted]],
) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _request(reader, state)
        writer.write(
            _head(2, "X-Mixed-Case: A", 'Warning: 299 pacs "one"', 'warning: 299 pacs "two"') + b"ok"
        )

    state = await scripted(answer)
    async with _upstream(FAST) as upstream:
        response = await upstream.open(f"{state.base}/x", {})
        await _read(response)
    assert response.headers == [
        ("X-Mixed-Case", "A"),
        ("Warning", '299 pacs "one"'),
        ("warning", '299 pacs "two"'),
        ("Content-Length", "2"),
    ]


async def test_redirects_are_not_followed_and_bodies_not_decompressed(
    scripted: Callable[[Handler], Awaitable[Scripted]],
) -> None:
    gzipped = b"\x1f\x8b\x08\x00not really"

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while await _request(reader, state):
            if len(state.requests) == 1:
                writer.write(b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n")
            else:
                writer.write(_head(len(gzipped), "Content-Encoding: gzip") + gzipped)

    state = await scripted(answer)
    async with _upstream(FAST) as upstream:
        redirect = await upstream.open(f"{state.base}/x", {})
        assert (redirect.status, await _read(redirect)) == (302, b"")
        assert await _read(await upstream.open(f"{state.base}/y", {})) == gzipped
    assert len(state.requests) == 2


async def test_a_body_without_framing_ends_when_the_server_closes(
    scripted: Callable[[Handler], Awaitable[Scripted]],
) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _request(reader, state)
        writer.write(_head(None) + BLOB)
        await writer.drain()

    state = await scripted(answer)
    async with _upstream(FAST) as upstream:
        assert await _read(await upstream.open(f"{state.base}/x", {})) == BLOB
        assert await _read(await upstream.open(f"{state.base}/x", {})) == BLOB
    assert state.connections == 2  # such a connection cannot be reused (RFC 9112 6.3)


async def test_an_interim_answer_is_skipped_for_the_final_one(
    scripted: Callable[[Handler], Awaitable[Scripted]],
) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _request(reader, state)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n" + _head(2) + b"ok")

    state = await scripted(answer)
    async with _upstream(FAST) as upstream:
        response = await upstream.open(f"{state.base}/x", {})
        assert (response.status, response.headers) == (200, [("Content-Length", "2")])
        assert await _read(response) == b"ok"


async def test_an_http_1_0_answer_does_not_keep_its_connection(
    scripted: Callable[[Handler], Awaitable[Scripted]],
) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while await _request(reader, state):
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")  # and the connection left open

    state = await scripted(answer)
    async with _upstream(FAST) as upstream:
        for _ in range(2):
            assert await _read(await upstream.open(f"{state.base}/x", {})) == b"ok"
    assert state.connections == 2  # RFC 9112 9.3: HTTP/1.0 without keep-alive closes


async def test_an_oversized_response_head_is_502(scripted: Callable[[Handler], Awaitable[Scripted]]) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _request(reader, state)
        writer.write(b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"a" * 100_000 + b"\r\n")
        await asyncio.sleep(5)

    state = await scripted(answer)
    async with _upstream(FAST) as upstream:
        with pytest.raises(UpstreamError, match="next hop unreachable: HttpParserError"):
            await upstream.open(f"{state.base}/x", {})


async def test_body_pieces_are_handed_on_as_they_arrive(
    scripted: Callable[[Handler], Awaitable[Scripted]],
) -> None:
    second = asyncio.Event()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _request(reader, state)
        writer.write(_head(8) + b"1234")
        await second.wait()
        writer.write(b"5678")

    state = await scripted(answer)
    async with _upstream(FAST) as upstream:
        response = await upstream.open(f"{state.base}/x", {})
        pieces = aiter(response.body)
        assert await anext(pieces) == b"1234"  # before the server sent the rest
        second.set()
        assert await anext(pieces) == b"5678"
        await response.close()


async def test_a_slow_reader_backs_up_to_the_server_not_into_memory(
    scripted: Callable[[Handler], Awaitable[Scripted]],
) -> None:
    total, piece = 64 * 1024 * 1024, b"\x00" * (1024 * 1024)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _request(reader, state)
        writer.write(_head(total))
        for _ in range(total // len(piece)):
            writer.write(piece)
            await writer.drain()
            state.sent += len(piece)

    state = await scripted(answer)
    async with _upstream(FAST) as upstream:
        response = await upstream.open(f"{state.base}/x", {})
        pieces = aiter(response.body)
        received = len(await anext(pieces))
        await asyncio.sleep(0.5)  # the server writes as fast as it is let
        backlog = state.sent - received
        async for chunk in pieces:
            received += len(chunk)
        await response.close()
    assert received == total
    # 1 MiB in the client, the rest in the kernel's socket buffers (a few MB on loopback)
    assert backlog < 16 * 1024 * 1024


async def test_a_pooled_connection_the_server_closed_meanwhile_is_retried_on_a_new_one(
    scripted: Callable[[Handler], Awaitable[Scripted]],
) -> None:
    async def one_answer_per_connection(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> None:
        await _request(reader, state)
        writer.write(_head(2) + b"ok")  # keep-alive by default, but the next request is met by a close
        await _request(reader, state)

    state = await scripted(one_answer_per_connection)
    async with _upstream(FAST) as upstream:
        for _ in range(3):
            assert await _read(await upstream.open(f"{state.base}/x", {})) == b"ok"
    assert state.connections == 3


async def test_a_new_connection_closed_before_any_answer_is_not_retried(
    scripted: Callable[[Handler], Awaitable[Scripted]],
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _request(reader, state)

    state = await scripted(hang_up)
    async with _upstream(FAST) as upstream:
        with pytest.raises(UpstreamError, match="next hop unreachable: ServerDisconnected"):
            await upstream.open(f"{state.base}/x", {})
    assert state.connections == 1


async def test_a_refused_connection_is_502_and_the_log_keeps_no_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        upstream = H1Upstream(FAST)
        try:
            with caplog.at_level(logging.WARNING), pytest.raises(UpstreamError) as caught:
                await upstream.open(f"http://127.0.0.1:{port}/x?access_token=s3cr3t", {})
        finally:
            await upstream.aclose()
    assert caught.value.message == "next hop unreachable: ConnectionRefusedError"
    assert caught.value.status == 502
    assert "ConnectionRefusedError" in caplog.text
    assert "s3cr3t" not in caplog.text


async def test_a_malformed_head_is_502(scripted: Callable[[Handler], Awaitable[Scripted]]) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _request(reader, state)
        writer.write(b"SMTP ready\r\n\r\n")

    state = await scripted(garbage)
    async with _upstream(FAST) as upstream:
        with pytest.raises(UpstreamError, match="next hop unreachable: HttpParser"):
            await upstream.open(f"{state.base}/x", {})


async def test_no_head_in_time_is_504(scripted: Callable[[Handler], Awaitable[Scripted]]) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _request(reader, state)
        await asyncio.sleep(5)

    state = await scripted(silent)
    async with _upstream(Timeouts(connect=2, first_byte=0.3, read=2)) as upstream:
        with pytest.raises(UpstreamTimeout, match=r"no answer from the next hop within 0.3 s") as caught:
            await upstream.open(f"{state.base}/x", {})
    assert caught.value.status == 504


async def test_a_connection_that_is_not_established_in_time_is_504(
    scripted: Callable[[Handler], Awaitable[Scripted]],
) -> None:
    async def never_speaks_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await asyncio.sleep(5)

    state = await scripted(never_speaks_tls)
    async with _upstream(Timeouts(connect=0.3, first_byte=2, read=2)) as upstream:
        with pytest.raises(UpstreamTimeout, match=r"no connection to the next hop within 0.3 s"):
            await upstream.open(state.base.replace("http://", "https://") + "/x", {})


@pytest.mark.parametrize("length", [10, None])  # silence in a body that ends at EOF is no end either
async def test_silence_mid_body_raises_timeout_in_the_body(
    scripted: Callable[[Handler], Awaitable[Scripted]], length: int | None
) -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _request(reader, state)
        writer.write(_head(length) + b"12345")
        await asyncio.sleep(5)

    state = await scripted(stall)
    async with _upstream(Timeouts(connect=2, first_byte=2, read=0.3)) as upstream:
        response = await upstream.open(f"{state.base}/x", {})
        pieces = aiter(response.body)
        assert await anext(pieces) == b"12345"
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await anext(pieces)
        waited = asyncio.get_running_loop().time() - started
        await response.close()
    assert 0.2 < waited < 1.5


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@pytest.mark.parametrize(
    ("ending", "error"),
    [
        ("close", "ServerDisconnected"),  # Content-Length promised more (RFC 9112 6.3: incomplete)
        ("reset", "ConnectionResetError"),
        ("bad-chunk", "ConnectionError"),
    ],
)
async def test_an_answer_cut_after_its_head_fails_in_the_body_never_short(
    scripted: Callable[[Handler], Awaitable[Scripted]], ending: str, error: str
) -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _request(reader, state)
        if ending == "bad-chunk":
            writer.write(_head(None, "Transfer-Encoding: chunked") + b"5\r\n12345\r\nzz\r\n")
            await asyncio.sleep(5)
        writer.write(_head(1000) + b"x" * 500)
        await writer.drain()
        await asyncio.sleep(0.1)
        if ending == "reset":
            _reset(writer)

    state = await scripted(cut)
    async with _upstream(FAST) as upstream:
        response = await upstream.open(f"{state.base}/x", {})
        with pytest.raises(ConnectionError) as caught:
            await _read(response)
    assert type(caught.value).__name__ == error


async def test_close_releases_an_unread_complete_answer_and_aclose_closes_the_pool(
    scripted: Callable[[Handler], Awaitable[Scripted]],
) -> None:
    async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while await _request(reader, state):
            writer.write(_head(2) + b"ok")

    state = await scripted(keep_alive)
    upstream = H1Upstream(FAST)
    for _ in range(2):
        response = await upstream.open(f"{state.base}/x", {})
        await asyncio.sleep(0.05)  # the whole (small) answer has arrived, unread
        await response.close()
    assert state.connections == 1
    assert not state.closed.is_set()
    await upstream.aclose()
    await asyncio.wait_for(state.closed.wait(), 2)


# --- the role processes' loop ------------------------------------------------------------------------


def test_it_runs_on_uvloop_in_the_clear_and_over_mutual_tls(
    uvicorn_server: tuple[str, Seen], tls_server: tuple[str, Seen], pki: FederationPki
) -> None:
    """In a child process: uvloop in the test process itself crashed CI (ncp/server.py)."""
    script = textwrap.dedent(f"""
        import asyncio, uvloop
        from pathlib import Path
        from ncp.gateway.h1client import H1Upstream
        from ncp.gateway.proxy import Timeouts
        from ncp.security.pki import FederationPki

        async def sizes(base, tls):
            upstream = H1Upstream(Timeouts(), ssl_context=tls)
            sizes = []
            for path in ("/blob", "/chunked", "/blob"):
                answer = await upstream.open(base + path, {{}})
                sizes.append(sum([len(c) async for c in answer.body]))
                await answer.close()
            await upstream.aclose()
            return sizes

        async def main():
            tls = FederationPki.load(Path({str(pki.directory)!r})).client_ssl_context("AT", peer="FR")
            print(await sizes({uvicorn_server[0]!r}, None), await sizes({tls_server[0]!r}, tls))

        uvloop.run(main())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{[len(BLOB)] * 3} {[len(BLOB)] * 3}"
    assert len(set(uvicorn_server[1].ports)) == 1
    assert len(set(tls_server[1].ports)) == 1
