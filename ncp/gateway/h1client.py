"""A lean HTTP/1.1 GET client for the data plane: asyncio Protocols and httptools' C parser.

Why: aiohttp's request building (yarl, multidicts, connector, a timer per read) and body path (stream
reader, chunk joining) were 24-30 % of each gateway's CPU per image request (issue 16). This client
does only what a gateway hop needs: ``GET`` with the given headers, a keep-alive pool per origin, TLS
with the caller's context, and the body handed on in the pieces the socket delivered.

* Framing (RFC 9112 6.3): Content-Length and chunked bodies are httptools'; a body with neither ends
  at EOF, so a close before the end of a framed body is a failure, never a shorter answer.
* Persistence (RFC 9112 9.3): a connection is reused only after its response arrived completely and
  neither side asked to close; one abandoned half-read is closed. A reused connection that the server
  closed meanwhile is retried once on a new one, when nothing of the answer came (GET is idempotent,
  RFC 9110 9.2.2).
* Back-pressure: reading pauses while more than ``_HIGH_WATER`` bytes wait for the consumer.
* Timeouts: one timer per connection, re-armed from its callback (the earliest deadline wins), never
  one per chunk.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import NamedTuple, cast

import httptools
from starlette.background import BackgroundTask

from ncp.errors import UpstreamError, UpstreamTimeout
from ncp.gateway.proxy import Timeouts, UpstreamResponse, _loggable

__all__ = ["H1Upstream", "ServerDisconnected"]

log = logging.getLogger(__name__)

_READ_SIZE = 256 * 1024  # one read from the socket (or TLS) into the connection's buffer
_HIGH_WATER = 1024 * 1024  # unread body bytes above which the socket is no longer read
_MAX_HEAD = 64 * 1024  # a response head larger than this is not an answer we relay
_IDLE_S = 15.0  # a pooled connection idle longer is not reused (aiohttp's keep-alive default)
_DEFAULT_PORT = {b"http": 80, b"https": 443}
# RFC 9110 5.1 / 5.5: token names (joined by ':', which no token holds), values without CR, LF or NUL
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_NAMES = re.compile(rf"{_TOKEN}(?::{_TOKEN})*")
_NOT_IN_VALUE = re.compile(r"[\r\n\0]")
_NOT_VISIBLE_ASCII = re.compile(r"[^\x21-\x7e]")
_URL_SAFE = "!#$%&'()*+,-./:;=?@[]_~"

_IDLE, _HEAD, _BODY, _DONE, _FAILED = range(5)


class ServerDisconnected(ConnectionError):
    """The next hop closed the connection before its answer was complete."""


class _Origin(NamedTuple):
    key: tuple[bytes, str, int]  # (scheme, host, port): the pool a connection belongs to
    host: str
    port: int
    tls: bool


def _parse(url: str) -> tuple[_Origin, bytes]:
    """The URL's origin and its request line + Host field; ValueError for what cannot be sent."""
    if _NOT_VISIBLE_ASCII.search(url):  # as aiohttp/yarl would send it: percent-encoded
        from urllib.parse import quote

        url = quote(url, safe=_URL_SAFE)
    try:
        parts = httptools.parse_url(url.encode("ascii"))
    except httptools.HttpParserInvalidURLError:
        raise ValueError(f"not a URL: {_loggable(url)}") from None
    scheme = parts.schema
    if scheme not in _DEFAULT_PORT or not parts.host or parts.userinfo:
        raise ValueError(f"only http(s) URLs with a host and no user info: {_loggable(url)}")
    host = parts.host.decode("ascii")
    port = parts.port or _DEFAULT_PORT[scheme]
    authority = f"[{host}]" if ":" in host else host
    if parts.port is not None and parts.port != _DEFAULT_PORT[scheme]:
        authority = f"{authority}:{port}"
    target = (parts.path or b"/") + (b"?" + parts.query if parts.query is not None else b"")
    line = b"GET %s HTTP/1.1\r\nHost: %s\r\n" % (target, authority.encode("ascii"))
    return _Origin((scheme, host, port), host, port, scheme == b"https"), line


def _fields(headers: Mapping[str, str]) -> tuple[bytes, bool]:
    """The header block as sent (names and values as given) and whether it asks to close."""
    if (headers and not _NAMES.fullmatch(":".join(headers))) or _NOT_IN_VALUE.search(
        "".join(headers.values())
    ):
        bad = next(n for n, v in headers.items() if not _NAMES.fullmatch(n) or _NOT_IN_VALUE.search(v))
        raise ValueError(f"header {bad[:40]!r}: not a token name, or CR/LF/NUL in its value")
    block = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    close = any(n.lower() == "connection" and "close" in v.lower() for n, v in headers.items())
    return block.encode("latin-1") + b"\r\n", close


class _Connection(asyncio.BufferedProtocol):
    """One HTTP/1.1 connection; one exchange at a time. httptools calls the ``on_*`` methods."""

    def __init__(self, pool: _Pool, origin: _Origin) -> None:
        self.origin = origin
        self._pool = pool
        self._loop = pool.loop
        self._read_timeout = pool.timeouts.read
        self._buffer = memoryview(bytearray(_READ_SIZE))
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = self._loop.create_future()
        self.counted = True  # holds one of the pool's ``limit`` places
        self.idle_since = 0.0
        self.reusable = True  # false once either side asked to close
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # the current exchange
        self._phase = _IDLE
        self._head: asyncio.Future[None] | None = None
        self._deadline = 0.0
        self.received = 0
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.chunks: deque[bytes] = deque()
        self._unread = 0
        self._paused = False
        self._last_data = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None

    # --- asyncio -------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio's subclasses

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self._phase is not _HEAD and self._phase is not _BODY:
            if self._phase is not _FAILED:  # nothing is owed: unsolicited data (RFC 9112 9.3)
                self._fail(ServerDisconnected("data from the next hop outside any answer"))
            return
        self.received += nbytes
        self._last_data = self._loop.time()
        try:
            self._parser.feed_data(self._buffer[:nbytes])
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(exc if self._phase is _HEAD else ConnectionError(f"malformed answer: {exc!r}"))
            return
        if self._phase is _HEAD and self.received > _MAX_HEAD:
            self._fail(httptools.HttpParserError(f"response head over {_MAX_HEAD} bytes"))
            return
        if self._unread > _HIGH_WATER and not self._paused:
            self._paused = True
            self._transport.pause_reading()  # type: ignore[union-attr]
        self._wake()

    def eof_received(self) -> bool | None:
        return None  # close our side too: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        if self._phase is _BODY and exc is None and not self._framed():
            self._complete()  # RFC 9112 6.3 (8): a body with no framing ends at EOF
        elif self._phase is _HEAD or self._phase is _BODY:
            cause = exc if isinstance(exc, OSError) else None
            self._fail(cause or ServerDisconnected("the next hop closed the connection"), abort=False)
        self._disarm()
        self._pool.forget(self)
        if not self.lost.done():
            self.lost.set_result(None)

    # --- httptools -----------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._phase is _DONE:  # a second answer to one request: RFC 9112 9.3 unsolicited data
            self._fail(ServerDisconnected("data from the next hop outside any answer"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        if self._phase is not _HEAD:  # after a failure in this same read
            return
        status = self._parser.get_status_code()
        if status < 200:  # an interim answer (RFC 9110 15.2): the final one follows
            self.headers = []
            return
        self.status = status
        self._phase = _BODY
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._phase is not _BODY:  # after a failure in this same read
            return
        self.chunks.append(body)
        self._unread += len(body)

    def on_message_complete(self) -> None:
        if self._phase is _BODY:  # not an interim answer's end, nor one after a failure
            self.reusable = self.reusable and self._parser.should_keep_alive()
            self._complete()

    # --- the exchange --------------------------------------------------------------------------------

    async def exchange(self, request: bytes, deadline: float) -> None:
        """Send ``request``; return once the response head is in (errors as the head's exception)."""
        assert self._transport is not None
        self._phase, self._deadline = _HEAD, deadline
        self.received = self.status = self._unread = 0
        self.headers = []
        self._error = None
        self._head = head = self._loop.create_future()
        self._transport.write(request)
        self._arm(deadline)
        await head

    @property
    def complete(self) -> bool:
        return self._phase is _DONE

    async def readable(self) -> None:
        """Wait for body bytes, the end of the body, or the failure that the reader must see."""
        if self._error is None:
            self._waiter = waiter = self._loop.create_future()
            self._arm(self._last_data + self._read_timeout)
            try:
                await waiter
            finally:
                self._waiter = None
        if self._error is not None:
            raise self._error

    def consumed(self, size: int) -> None:
        self._unread -= size
        if self._paused and self._unread <= _HIGH_WATER and self._transport is not None:
            self._paused = False
            self._last_data = self._loop.time()  # silence while paused was ours, not the server's
            self._transport.resume_reading()

    def park(self) -> None:
        """Between exchanges: nothing buffered, reading on (to see the server close), idle clock on."""
        self._phase = _IDLE
        self.chunks.clear()
        self._unread = 0
        self.idle_since = self._loop.time()
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()

    def close(self) -> None:
        self.reusable = False
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        self.reusable = False
        if self._transport is not None:
            self._transport.abort()

    def _complete(self) -> None:
        self._phase = _DONE
        self._wake()

    def _framed(self) -> bool:
        return any(n.lower() in ("content-length", "transfer-encoding") for n, _ in self.headers)

    def _fail(self, exc: BaseException, *, abort: bool = True) -> None:
        """End the exchange with ``exc``: the head's awaiter or the body's reader raises it (an answer
        already complete stays so; its connection is not reused)."""
        self._error = exc
        if self._phase is not _DONE:
            self._phase = _FAILED  # and stays: a close that follows is no end of a body
        self.reusable = False
        if self._head is not None and not self._head.done():
            self._head.set_exception(exc)
        self._wake()
        if abort and self._transport is not None:
            self._transport.abort()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- the one timer -------------------------------------------------------------------------------

    def _arm(self, when: float) -> None:
        """Make sure the timer fires by ``when``; a later check re-arms itself (no timer per chunk)."""
        if self._timer is not None:
            if self._timer_at <= when:
                return
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        if self._phase is _HEAD:
            due = self._deadline
        elif self._phase is _BODY and self._waiter is not None:
            due = self._last_data + self._read_timeout
        else:
            return
        if self._loop.time() < due:
            self._arm(due)
        elif self._phase is _HEAD:
            self._fail(TimeoutError("no response head in time"))
        else:
            self._fail(TimeoutError(f"the next hop was silent for {self._read_timeout:g} s mid-answer"))


class _Pool:
    """Keep-alive connections per origin, at most ``limit`` open in all; callers beyond it queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeouts: Timeouts, limit: int) -> None:
        self.loop = loop
        self.timeouts = timeouts
        self._limit = limit
        self._idle: dict[tuple[bytes, str, int], list[_Connection]] = {}
        self._count = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.closed = False

    async def acquire(
        self, origin: _Origin, ssl_context: ssl.SSLContext | None, deadline: float, *, fresh: bool
    ) -> tuple[_Connection, bool]:
        """A connection to ``origin`` and whether it was reused (``fresh``: never a pooled one)."""
        while True:
            if not fresh and (conn := self._pooled(origin)) is not None:
                return conn, True
            if self._count < self._limit:
                return await self._connect(origin, ssl_context, deadline), False
            if not self._evict():
                await self._wait_turn(deadline)

    def release(self, conn: _Connection) -> None:
        """Back to the pool after a complete answer that may keep the connection (RFC 9112 9.3)."""
        if conn.complete and conn.reusable and not self.closed:
            conn.park()
            self._idle.setdefault(conn.origin.key, []).append(conn)
            self._wake()
        else:
            self.discard(conn)

    def discard(self, conn: _Connection) -> None:
        conn.abort()
        self.forget(conn)

    def forget(self, conn: _Connection) -> None:
        """``conn`` is closed or closing: out of the idle lists, its place free."""
        stack = self._idle.get(conn.origin.key)
        if stack is not None and conn in stack:
            stack.remove(conn)
        if conn.counted:
            conn.counted = False
            self._count -= 1
            self._wake()

    async def aclose(self) -> None:
        self.closed = True
        conns = [c for stack in self._idle.values() for c in stack]
        self._idle.clear()
        for conn in conns:
            conn.close()
        if conns:  # let TLS close_notify and the transports finish on this loop
            await asyncio.wait([c.lost for c in conns], timeout=1.0)

    def _pooled(self, origin: _Origin) -> _Connection | None:
        stack = self._idle.get(origin.key)
        stale = self.loop.time() - _IDLE_S
        while stack:
            conn = stack.pop()
            if conn.reusable and conn.idle_since > stale:
                return conn
            self.discard(conn)
        return None

    async def _connect(
        self, origin: _Origin, ssl_context: ssl.SSLContext | None, deadline: float
    ) -> _Connection:
        self._count += 1
        conn = _Connection(self, origin)
        limit = min(self.timeouts.connect, deadline - self.loop.time())
        try:
            async with asyncio.timeout(limit):
                await self.loop.create_connection(
                    lambda: conn,
                    origin.host,
                    origin.port,
                    ssl=ssl_context if origin.tls else None,
                    server_hostname=origin.host if origin.tls else None,
                )
        except TimeoutError:
            self.discard(conn)
            raise UpstreamTimeout(f"no connection to the next hop within {limit:g} s") from None
        except BaseException:
            self.discard(conn)  # a cancelled handshake may have made its transport already
            raise
        return conn

    def _evict(self) -> bool:
        """Close one idle connection (of any origin) to make room; false when none is idle."""
        for stack in self._idle.values():
            if stack:
                self.discard(stack[0])  # the longest idle
                return True
        return False

    async def _wait_turn(self, deadline: float) -> None:
        turn = self.loop.create_future()
        self._waiters.append(turn)
        try:
            async with asyncio.timeout_at(deadline):
                await turn
        except BaseException:
            if turn.done() and not turn.cancelled():
                self._wake()  # the place we were given goes to the next in line
            turn.cancel()
            raise

    def _wake(self) -> None:
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return


class _Lease:
    """One response's hold on its connection: released once, to the pool or closed."""

    __slots__ = ("_conn", "_pool")

    def __init__(self, pool: _Pool, conn: _Connection) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn

    async def body(self) -> AsyncIterator[bytes]:
        conn = self._conn
        assert conn is not None
        chunks = conn.chunks
        try:
            while True:
                if chunks:
                    chunk = chunks.popleft()
                    conn.consumed(len(chunk))
                    yield chunk
                elif conn.complete:
                    return
                else:
                    await conn.readable()
        finally:
            self.release()

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn)

    async def close(self) -> None:  # async: a BackgroundTask runs a sync one in a worker thread
        self.release()


class H1Upstream:
    """HTTP/1.1 GET over asyncio Protocols and httptools (see the module's docstring)."""

    def __init__(
        self, timeouts: Timeouts, ssl_context: ssl.SSLContext | None = None, limit: int = 100
    ) -> None:
        self._timeouts = timeouts
        self._ssl = ssl_context
        self._limit = limit
        self._pool: _Pool | None = None

    async def open(self, url: str, headers: Mapping[str, str]) -> UpstreamResponse:
        started = time.perf_counter()
        origin, line = _parse(url)
        fields, close = _fields(headers)
        pool = self._pool_here()
        deadline = pool.loop.time() + self._timeouts.first_byte
        try:
            conn = await self._exchange(pool, origin, line + fields, deadline)
        except UpstreamError:
            raise
        except TimeoutError:
            raise UpstreamTimeout(
                f"no answer from the next hop within {self._timeouts.first_byte:g} s"
            ) from None
        except (OSError, httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            log.warning("upstream %s failed: %s", _loggable(url), _loggable(f"{type(exc).__name__}: {exc}"))
            raise UpstreamError(f"next hop unreachable: {type(exc).__name__}") from None
        if close:
            conn.reusable = False
        lease = _Lease(pool, conn)
        return UpstreamResponse(
            status=conn.status,
            headers=conn.headers,
            body=lease.body(),
            close=BackgroundTask(lease.close),
            elapsed_to_headers=time.perf_counter() - started,
        )

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()

    def _pool_here(self) -> _Pool:
        if self._pool is None:  # created lazily inside the running loop
            self._pool = _Pool(asyncio.get_running_loop(), self._timeouts, self._limit)
        return self._pool

    async def _exchange(self, pool: _Pool, origin: _Origin, request: bytes, deadline: float) -> _Connection:
        """Send on a pooled connection, or a new one; once more on a new one when a reused connection
        turns out closed before any byte of the answer (RFC 9112 9.3.1: GET is safe to retry)."""
        if origin.tls and self._ssl is None:
            self._ssl = ssl.create_default_context()
        fresh = False
        while True:
            conn, reused = await pool.acquire(origin, self._ssl, deadline, fresh=fresh)
            try:
                await conn.exchange(request, deadline)
                return conn
            except ConnectionError:
                pool.discard(conn)
                if fresh or not reused or conn.received:
                    raise
                fresh = True
            except BaseException:
                pool.discard(conn)
                raise
