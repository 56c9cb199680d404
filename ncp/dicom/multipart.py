"""Streaming ``multipart/related`` encoding and decoding (RFC 2046 5.1, RFC 2387, PS3.18 8.7).

The encoder and the decoder are exact inverses, work chunk by chunk and hold at most one part
(decoder) or one chunk (encoder) in memory. A message is::

    [preamble CRLF] --boundary CRLF headers CRLF CRLF body
    CRLF --boundary CRLF headers CRLF CRLF body ...
    CRLF --boundary-- [CRLF epilogue]

The decoder refuses a message without its closing delimiter: a consumer verifies a retrieval
with it, so a truncated stream must be an error, never a short list of parts.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from ncp.dicom.media import parse_media_type
from ncp.errors import InvalidRequest, PayloadTooLarge

__all__ = [
    "CHUNK_SIZE",
    "DecodedPart",
    "Framer",
    "MultipartDecoder",
    "Part",
    "encode_multipart",
    "encode_multipart_bytes",
    "iter_parts",
    "multipart_content_type",
    "new_boundary",
]

CHUNK_SIZE = 256 * 1024
_CRLF = b"\r\n"
# RFC 2046 5.1.1 bchars; a boundary is 1-70 of them and does not end with a space.
_BOUNDARY = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")
_TOKEN = re.compile(r"^[0-9A-Za-z!#$%&'*+\-.^_`|~]+$")
_MAX_HEADER_BYTES = 16 * 1024
_MAX_PADDING = 1024


def new_boundary() -> str:
    """A fresh random boundary (128 bits): never present in DICOM payloads by chance."""
    return f"ncp-{secrets.token_hex(16)}"


def _param(value: str) -> str:
    return value if _TOKEN.fullmatch(value) else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def multipart_content_type(part_type: str, boundary: str, transfer_syntax: str | None = None) -> str:
    """``multipart/related; type="application/dicom"; boundary=...`` (PS3.18 8.7.3.2: type always quoted)."""
    value = f'multipart/related; type="{part_type}"; boundary={_param(boundary)}'
    return f"{value}; transfer-syntax={transfer_syntax}" if transfer_syntax else value


def _check_boundary(boundary: str) -> bytes:
    if not _BOUNDARY.fullmatch(boundary):
        raise ValueError(f"invalid multipart boundary {boundary!r} (RFC 2046 5.1.1)")
    return boundary.encode("ascii")


async def _bytes_source(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def _file_source(path: Path, chunk_size: int) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as f:
        while chunk := await f.read(chunk_size):
            yield chunk


@dataclass(frozen=True)
class Part:
    """A body part to encode: headers and an async source of body chunks (consumed once)."""

    content_type: str
    chunks: AsyncIterable[bytes]
    content_location: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_bytes(cls, body: bytes, content_type: str, content_location: str | None = None) -> Part:
        return cls(content_type, _bytes_source(body), content_location)

    @classmethod
    def from_file(
        cls, path: Path, content_type: str, content_location: str | None = None, chunk_size: int = CHUNK_SIZE
    ) -> Part:
        """The file is opened when the encoder reaches this part and read ``chunk_size`` at a time."""
        return cls(content_type, _file_source(path, chunk_size), content_location)

    def header_block(self) -> bytes:
        fields = {"Content-Type": self.content_type, **self.headers}
        if self.content_location is not None:
            fields["Content-Location"] = self.content_location
        lines = []
        for name, value in fields.items():
            if any(c in name + value for c in "\r\n\0") or not _TOKEN.fullmatch(name):
                raise ValueError(f"invalid part header {name!r}: {value!r}")
            lines.append(f"{name}: {value}\r\n")
        return "".join(lines).encode("latin-1") + _CRLF


class Framer:
    """The framing of one message, part by part: what :func:`encode_multipart` writes, for writers that
    send a small part's delimiter, headers and body in one buffer (one write per part: docs/decisions.md,
    "Data plane: per-request costs")."""

    def __init__(self, boundary: str) -> None:
        self._dash = b"--" + _check_boundary(boundary)
        self._lead = b""

    def head(self, header_block: bytes) -> bytes:
        """The next part's delimiter line and ``header_block`` (:meth:`Part.header_block`)."""
        head = self._lead + self._dash + _CRLF + header_block
        self._lead = _CRLF
        return head

    def close(self) -> bytes:
        """The close delimiter (RFC 2046 5.1.1)."""
        return self._lead + self._dash + b"--" + _CRLF

    def whole(self, header_block: bytes, body: bytes, *, last: bool = False) -> bytes:
        """A whole part in one buffer; the last one followed by the close delimiter."""
        head = self.head(header_block)
        return b"".join((head, body, self.close() if last else b""))


async def encode_multipart(parts: AsyncIterable[Part], boundary: str) -> AsyncIterator[bytes]:
    """Yield the message chunk by chunk; each part's body is passed through as its source yields it."""
    framer = Framer(boundary)
    async for part in parts:
        yield framer.head(part.header_block())
        async for chunk in part.chunks:
            if chunk:
                yield chunk
    yield framer.close()


def encode_multipart_bytes(bodies: Iterable[bytes], part_type: str, boundary: str) -> bytes:
    """A whole message in memory, for small bodies and tests; same framing as :func:`encode_multipart`."""
    framer = Framer(boundary)
    header_block = f"Content-Type: {part_type}\r\n\r\n".encode("latin-1")
    return b"".join([*(framer.whole(header_block, body) for body in bodies), framer.close()])


@dataclass(frozen=True)
class DecodedPart:
    """A decoded body part; header names are lower-cased."""

    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    last: str | None = None
    for raw in block.decode("latin-1").split("\r\n"):
        if raw[:1] in (" ", "\t") and last is not None:  # obsolete line folding (RFC 5322 2.2.3)
            headers[last] += " " + raw.strip()
            continue
        name, sep, value = raw.partition(":")
        if not sep or not name.strip() or not _TOKEN.fullmatch(name.strip()):
            raise InvalidRequest(f"malformed multipart part header line {raw[:80]!r}")
        last = name.strip().lower()
        headers[last] = value.strip()
    return headers


class MultipartDecoder:
    """Incremental multipart parser: :meth:`feed` chunks, collect complete parts, then :meth:`close`.

    Memory is bounded by the largest part (``max_part_bytes`` caps it, raising PayloadTooLarge).
    Both quoted and unquoted ``boundary``/``type`` parameters are accepted.
    """

    _PREAMBLE, _DELIMITER, _HEADERS, _BODY, _END = range(5)

    def __init__(self, content_type: str, *, max_part_bytes: int | None = None) -> None:
        media_type, params = parse_media_type(content_type)
        if not media_type.startswith("multipart/"):
            raise InvalidRequest(f"expected a multipart/related message, got {media_type!r}")
        boundary = params.get("boundary", "")
        if not boundary or len(boundary) > 200 or any(c in boundary for c in "\r\n"):
            raise InvalidRequest("multipart message without a usable boundary parameter (RFC 2046 5.1.1)")
        self.media_type = media_type
        self.part_type: str | None = params.get("type")
        self.boundary = boundary
        self.parts_seen = 0
        self._dash = b"--" + boundary.encode("latin-1")
        self._delimiter = _CRLF + self._dash
        self._max_part = max_part_bytes
        self._buf = bytearray()
        self._state = self._PREAMBLE
        self._at_start = True
        self._search_from = 0
        self._headers: dict[str, str] = {}

    @property
    def complete(self) -> bool:
        """True once the closing delimiter has been read."""
        return self._state == self._END

    def feed(self, chunk: bytes) -> list[DecodedPart]:
        """Consume ``chunk``; return the parts it completed (possibly none)."""
        if self._state == self._END:
            return []  # the epilogue is ignored (RFC 2046 5.1.1)
        self._buf += chunk
        out: list[DecodedPart] = []
        while self._step(out):
            pass
        return out

    def close(self) -> None:
        """Raise InvalidRequest unless the closing delimiter was seen (truncated message)."""
        if self._state != self._END:
            raise InvalidRequest(
                f"truncated multipart message: no closing delimiter after {self.parts_seen} complete part(s)"
            )

    def _step(self, out: list[DecodedPart]) -> bool:
        if self._state == self._PREAMBLE:
            return self._preamble()
        if self._state == self._DELIMITER:
            return self._after_delimiter()
        if self._state == self._HEADERS:
            return self._read_headers()
        if self._state == self._BODY:
            return self._read_body(out)
        return False

    def _consume(self, n: int, state: int) -> bool:
        del self._buf[:n]
        self._state = state
        self._search_from = 0
        return True

    def _preamble(self) -> bool:
        buf = self._buf
        if self._at_start:
            if len(buf) < len(self._dash) and self._dash.startswith(buf):
                return False
            self._at_start = False
            if buf.startswith(self._dash):
                return self._consume(len(self._dash), self._DELIMITER)
        idx = buf.find(self._delimiter, self._search_from)
        if idx >= 0:
            return self._consume(idx + len(self._delimiter), self._DELIMITER)
        keep = len(self._delimiter) - 1  # the preamble is discarded, bar a possible delimiter prefix
        if len(buf) > keep:
            del buf[: len(buf) - keep]
        return False

    def _after_delimiter(self) -> bool:
        buf = self._buf
        if len(buf) < 2:
            return False
        if buf.startswith(b"--"):
            self._state = self._END
            self._buf = bytearray()
            return False
        end = buf.find(_CRLF)
        if end < 0:
            if len(buf) > _MAX_PADDING:
                raise InvalidRequest("malformed multipart boundary delimiter line")
            return False
        if buf[:end].strip(b" \t"):
            raise InvalidRequest("malformed multipart boundary delimiter: text after the boundary")
        return self._consume(end + 2, self._HEADERS)

    def _read_headers(self) -> bool:
        buf = self._buf
        if buf.startswith(_CRLF):
            self._headers = {}
            return self._consume(2, self._BODY)
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _MAX_HEADER_BYTES:
                raise InvalidRequest(f"multipart part headers longer than {_MAX_HEADER_BYTES} bytes")
            return False
        self._headers = _parse_headers(bytes(buf[:end]))
        return self._consume(end + 4, self._BODY)

    def _read_body(self, out: list[DecodedPart]) -> bool:
        buf = self._buf
        idx = buf.find(self._delimiter, self._search_from)
        if idx < 0:
            self._search_from = max(0, len(buf) - len(self._delimiter) + 1)
            if self._max_part is not None and self._search_from > self._max_part:
                raise PayloadTooLarge(f"multipart part larger than {self._max_part} bytes")
            return False
        if self._max_part is not None and idx > self._max_part:
            raise PayloadTooLarge(f"multipart part larger than {self._max_part} bytes")
        with memoryview(buf) as view:
            body = bytes(view[:idx])
        out.append(DecodedPart(self._headers, body))
        self.parts_seen += 1
        return self._consume(idx + len(self._delimiter), self._DELIMITER)


async def iter_parts(
    chunks: AsyncIterable[bytes], content_type: str, *, max_part_bytes: int | None = None
) -> AsyncIterator[DecodedPart]:
    """Decode a streamed message part by part; raises InvalidRequest at the end if it was truncated."""
    decoder = MultipartDecoder(content_type, max_part_bytes=max_part_bytes)
    async for chunk in chunks:
        for part in decoder.feed(chunk):
            yield part
        if decoder.complete:
            break
    decoder.close()
