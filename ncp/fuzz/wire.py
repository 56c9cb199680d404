"""Raw HTTP/1.1 on a socket: the fuzzer's client.

A real client (httpx, aiohttp) normalises what the fuzzer wants to send as is: it removes dot
segments, refuses non-ASCII header values and computes Content-Length. Here a request is bytes
on the wire, and the answer is parsed just enough to judge it (status, headers, body).
"""

from __future__ import annotations

import socket
import ssl
import time
from contextlib import suppress
from dataclasses import dataclass

__all__ = ["Listener", "RawRequest", "RawResponse", "exchange"]

_CRLF = b"\r\n"
_MAX_HEAD = 256 * 1024
_MAX_BODY = 64 * 1024 * 1024


@dataclass(frozen=True)
class Listener:
    """Where a role listens; ``tls`` is the client context for a secure border (mTLS)."""

    name: str
    host: str
    port: int
    tls: ssl.SSLContext | None = None

    @property
    def origin(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"


@dataclass(frozen=True)
class RawRequest:
    """One request as bytes. ``Content-Length`` is added from the body unless a header names it."""

    method: bytes
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def encode(self, extra: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
        headers = [*self.headers, *extra]
        names = {k.lower() for k, _ in headers}
        if self.body and not names & {b"content-length", b"transfer-encoding"}:
            headers.append((b"Content-Length", str(len(self.body)).encode()))
        elif self.method.upper() in (b"POST", b"PUT", b"PATCH") and not names & {b"content-length"}:
            headers.append((b"Content-Length", b"0"))
        lines = [self.method + b" " + self.target + b" HTTP/1.1", *(k + b": " + v for k, v in headers)]
        return _CRLF.join(lines) + _CRLF + _CRLF + self.body


@dataclass(frozen=True)
class RawResponse:
    """``status`` 0 means no answer: ``error`` says what happened instead."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    elapsed: float = 0.0
    error: str = ""

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name.lower()), None)


def exchange(listener: Listener, request: RawRequest, *, timeout: float = 30.0) -> RawResponse:
    """Send ``request`` on a fresh connection and read one answer. A connection per request: no
    answer to a hostile request can leak into the next one. The connection is not half-closed (the
    server would take that for a disconnect), so a body shorter than announced stays pending."""
    start = time.monotonic()
    try:
        with _connect(listener, timeout) as sock:
            _send(sock, request.encode())
            status, headers, body = _read_response(sock, head_only=request.method.upper() == b"HEAD")
    except (OSError, ValueError) as exc:
        return RawResponse(0, elapsed=time.monotonic() - start, error=f"{type(exc).__name__}: {exc}")
    return RawResponse(status, headers, body, time.monotonic() - start)


def _send(sock: socket.socket, data: bytes) -> None:
    """A server may answer (and close) before the whole body is sent, e.g. 413 on Content-Length: the
    answer is still there to read."""
    with suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(data)


def _connect(listener: Listener, timeout: float) -> socket.socket:
    sock = socket.create_connection((listener.host, listener.port), timeout=timeout)
    if listener.tls is None:
        return sock
    return listener.tls.wrap_socket(sock, server_hostname=listener.host)


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.eof = False

    def fill(self) -> bool:
        if self.eof:
            return False
        chunk = self.sock.recv(256 * 1024)
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def until(self, marker: bytes, limit: int) -> bytes:
        while (idx := self.buf.find(marker)) < 0:
            if len(self.buf) > limit or not self.fill():
                raise ValueError(f"connection ended before {marker!r} ({len(self.buf)} bytes read)")
        out = bytes(self.buf[:idx])
        del self.buf[: idx + len(marker)]
        return out

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self.fill():
                raise ValueError(f"connection ended {n - len(self.buf)} bytes short of the body")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def rest(self) -> bytes:
        while len(self.buf) <= _MAX_BODY and self.fill():
            pass
        return bytes(self.buf)


def _read_response(sock: socket.socket, *, head_only: bool) -> tuple[int, tuple[tuple[str, str], ...], bytes]:
    reader = _Reader(sock)
    while True:
        status, headers = _parse_head(reader.until(_CRLF + _CRLF, _MAX_HEAD))
        if status >= 200:  # 100 Continue and other interim answers come before the real one
            break
    fields = dict(headers)
    if head_only or status in (204, 304):
        return status, headers, b""
    if "chunked" in fields.get("transfer-encoding", "").lower():
        return status, headers, _dechunk(reader)
    if "content-length" in fields:
        return status, headers, reader.exactly(int(fields["content-length"]))
    return status, headers, reader.rest()


def _parse_head(head: bytes) -> tuple[int, tuple[tuple[str, str], ...]]:
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    headers = []
    for line in lines:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return int(rest[:3]), tuple(headers)


def _dechunk(reader: _Reader) -> bytes:
    body = bytearray()
    while True:
        size = int(reader.until(_CRLF, 1024).split(b";")[0], 16)
        if size == 0:
            reader.until(_CRLF, _MAX_HEAD)  # (no trailers expected) the final CRLF
            return bytes(body)
        body += reader.exactly(size)
        reader.exactly(2)
