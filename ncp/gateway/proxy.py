"""The streaming data plane: forward one request to the next hop and stream its answer back.

Rules (docs/architecture.md "Data plane", after Go's ``httputil.ReverseProxy``): bodies pass through untouched
(never decompressed, never buffered), hop-by-hop headers are dropped both ways, status and
``Warning`` are kept. A failure before the first byte becomes 502/504; after it, the client
connection is aborted so a truncated study can never look complete.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import aiohttp
import httpx
from starlette.background import BackgroundTask
from starlette.responses import Response

from ncp.errors import UpstreamError, UpstreamTimeout
from ncp.security.audit import redact
from ncp.streaming import StreamedResponse

__all__ = [
    "AiohttpUpstream",
    "DataPlane",
    "HttpxUpstream",
    "Timeouts",
    "Upstream",
    "UpstreamResponse",
    "forward_headers",
    "make_upstream",
    "relay",
]

log = logging.getLogger(__name__)

# RFC 9110 §7.6.1 hop-by-hop fields, plus fields each hop sets for itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "date",
        "server",
        "content-length",
    }
)
_CHUNK = 256 * 1024
# How a next hop fails once its answer has started, whichever client reads it.
_TRANSPORT_ERRORS = (aiohttp.ClientError, httpx.HTTPError, TimeoutError, ConnectionError)


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    first_byte: float = 30.0  # time to response headers
    read: float = 30.0  # max silence between two chunks


@dataclass
class UpstreamResponse:
    status: int
    headers: list[tuple[str, str]]
    body: AsyncIterator[bytes]
    close: BackgroundTask
    elapsed_to_headers: float


class Upstream(Protocol):
    """An HTTP client that opens a streamed GET to the next hop."""

    async def open(self, url: str, headers: Mapping[str, str]) -> UpstreamResponse: ...

    async def aclose(self) -> None: ...


def forward_headers(headers: Mapping[str, str], *, keep: frozenset[str] | None = None) -> dict[str, str]:
    """The inbound headers minus hop-by-hop ones (or only ``keep`` when given)."""
    out = {}
    for name, value in headers.items():
        low = name.lower()
        if low in HOP_BY_HOP or (keep is not None and low not in keep):
            continue
        out[low] = value
    return out


class AiohttpUpstream:
    """aiohttp client: about 3x less CPU per hop than httpx (docs/benchmarks.md)."""

    def __init__(
        self, timeouts: Timeouts, ssl_context: ssl.SSLContext | None = None, limit: int = 100
    ) -> None:
        self._timeouts = timeouts
        self._session: aiohttp.ClientSession | None = None
        self._ssl = ssl_context
        self._limit = limit

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # created lazily inside the running loop
            connector = aiohttp.TCPConnector(
                limit=self._limit, ssl=self._ssl if self._ssl is not None else True
            )
            timeout = aiohttp.ClientTimeout(
                total=None, connect=self._timeouts.connect, sock_read=self._timeouts.read
            )
            # no cookie jar: one session serves every consumer, so a cookie a next hop set for one request
            # must not ride on another's (and matching jars per request is CPU spent for nothing)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=timeout,
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def open(self, url: str, headers: Mapping[str, str]) -> UpstreamResponse:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeouts.first_byte):
                resp = await self._client().get(url, headers=dict(headers), allow_redirects=False)
        except TimeoutError:
            raise UpstreamTimeout(
                f"no answer from the next hop within {self._timeouts.first_byte:g} s"
            ) from None
        except aiohttp.ClientError as exc:
            log.warning("upstream %s failed: %s", _loggable(url), _loggable(f"{type(exc).__name__}: {exc}"))
            raise UpstreamError(f"next hop unreachable: {type(exc).__name__}") from None
        elapsed = time.perf_counter() - started

        async def body() -> AsyncIterator[bytes]:
            async for chunk in resp.content.iter_chunked(_CHUNK):
                yield chunk

        async def release() -> None:  # on the event loop: a sync task would run in a worker thread
            resp.release()

        return UpstreamResponse(
            status=resp.status,
            headers=[(k, v) for k, v in resp.headers.items()],
            body=body(),
            close=BackgroundTask(release),
            elapsed_to_headers=elapsed,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class HttpxUpstream:
    """httpx client, kept for the side-by-side benchmark that chose aiohttp."""

    def __init__(self, timeouts: Timeouts, verify: object = True, cert: object = None) -> None:
        self._timeouts = timeouts
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeouts.read, connect=timeouts.connect),
            verify=verify,  # type: ignore[arg-type]
            cert=cert,  # type: ignore[arg-type]
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=100),
        )

    async def open(self, url: str, headers: Mapping[str, str]) -> UpstreamResponse:
        started = time.perf_counter()
        request = self._client.build_request("GET", url, headers=dict(headers))
        try:
            async with asyncio.timeout(self._timeouts.first_byte):
                resp = await self._client.send(request, stream=True)
        except (TimeoutError, httpx.TimeoutException):
            raise UpstreamTimeout(
                f"no answer from the next hop within {self._timeouts.first_byte:g} s"
            ) from None
        except httpx.HTTPError as exc:
            log.warning("upstream %s failed: %s", _loggable(url), _loggable(f"{type(exc).__name__}: {exc}"))
            raise UpstreamError(f"next hop unreachable: {type(exc).__name__}") from None
        return UpstreamResponse(
            status=resp.status_code,
            headers=list(resp.headers.multi_items()),
            body=resp.aiter_raw(_CHUNK),
            close=BackgroundTask(resp.aclose),
            elapsed_to_headers=time.perf_counter() - started,
        )

    async def aclose(self) -> None:
        await self._client.aclose()


DataPlane = Literal["aiohttp", "httpx", "h1"]


def make_upstream(kind: DataPlane, timeouts: Timeouts, tls: ssl.SSLContext | None = None) -> Upstream:
    if kind == "aiohttp":
        return AiohttpUpstream(timeouts, ssl_context=tls)
    if kind == "h1":
        from ncp.gateway.h1client import H1Upstream  # h1client builds on this module's types

        return H1Upstream(timeouts, ssl_context=tls)
    return HttpxUpstream(timeouts, verify=tls if tls is not None else True)


async def relay(
    upstream: Upstream,
    url: str,
    headers: Mapping[str, str],
    *,
    hop: str,
    request_id: str,
    rebase: tuple[str, str] | None = None,
) -> Response:
    """Forward a GET and stream the answer back unchanged (status, ``Warning``, bytes).

    ``rebase`` (internal base, public base) is for small JSON answers whose URLs name the upstream:
    a 200 is read whole, rewritten and sent with its new length. Image payloads never take it."""
    resp = await upstream.open(url, headers)
    if rebase is not None and resp.status == 200:
        return await _rebased(resp, url, rebase, hop=hop, request_id=request_id)
    if log.isEnabledFor(logging.INFO):  # redacting costs a regex pass: only when the line is written
        elapsed = resp.elapsed_to_headers * 1000
        log.info("relay %s %s -> %d (%.1f ms to headers)", hop, _loggable(url), resp.status, elapsed)
    response = StreamedResponse(_guarded(resp.body, url), status_code=resp.status, background=resp.close)
    response.raw_headers = _answer_headers(resp, hop, request_id)
    return response


def _answer_headers(
    resp: UpstreamResponse, hop: str, request_id: str, length: int | None = None
) -> list[tuple[bytes, bytes]]:
    """The upstream's end-to-end headers, its length (or ``length``), our timing and correlation."""
    out = [
        (k, v)
        for k, v in resp.headers
        if (k.lower() not in HOP_BY_HOP and k.lower() != "x-request-id")
        or (k.lower() == "content-length" and length is None)
    ]
    if length is not None:
        out.append(("content-length", str(length)))
    out.append(("server-timing", f'{hop};desc="upstream headers";dur={resp.elapsed_to_headers * 1000:.1f}'))
    out.append(("x-request-id", request_id))
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in out]


_REBASE_LIMIT = 64 * 1024 * 1024  # a study's metadata; anything larger is not what rebase is for


async def _rebased(
    resp: UpstreamResponse, url: str, rebase: tuple[str, str], *, hop: str, request_id: str
) -> Response:
    chunks, size = [], 0
    try:
        async for chunk in resp.body:
            size += len(chunk)
            if size > _REBASE_LIMIT:
                raise UpstreamError(f"answer over {_REBASE_LIMIT} bytes where JSON metadata was expected")
            chunks.append(chunk)
    except _TRANSPORT_ERRORS as exc:
        log.warning("upstream %s failed mid-answer (%s)", _loggable(url), type(exc).__name__)
        raise UpstreamError(f"next hop failed mid-answer: {type(exc).__name__}") from None
    finally:
        await resp.close()
    body = b"".join(chunks).replace(rebase[0].encode(), rebase[1].encode())
    response = Response(body, status_code=resp.status)
    response.raw_headers = _answer_headers(resp, hop, request_id, len(body))
    return response


async def _guarded(body: AsyncIterator[bytes], url: str) -> AsyncIterator[bytes]:
    """Re-raise a mid-stream failure so the server aborts the connection (no clean short message)."""
    try:
        async for chunk in body:
            yield chunk
    except _TRANSPORT_ERRORS as exc:
        log.warning(
            "upstream %s failed mid-stream (%s); aborting the client connection",
            _loggable(url),
            type(exc).__name__,
        )
        raise


def _loggable(text: str) -> str:
    """``text`` fit for a log line: no token in a query string, no bearer value, no JWT/SAML shape (an
    exception's repr may carry the request's headers, e.g. aiohttp's ``RequestInfo``, so only ``str``)."""
    return redact(text) or ""
