"""Helpers for the link relay tests: the test stream, server bookkeeping, a blob client."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

# A prime period, so no chunk size hides a lost, doubled or reordered chunk.
PATTERN = random.Random(5).randbytes(65521)


def pattern(offset: int, size: int) -> bytes:
    """Bytes ``offset .. offset+size`` of the endless test stream."""
    start = offset % len(PATTERN)
    reps = (start + size) // len(PATTERN) + 1
    return (PATTERN * reps)[start : start + size]


@dataclass
class Peer:
    """A server on 127.0.0.1: its port and what it observed."""

    port: int
    sent: int = 0
    errors: list[BaseException] = field(default_factory=list)
    connections: int = 0


async def start_server(handle: object, peer: Peer) -> asyncio.Server:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)  # type: ignore[arg-type]
    peer.port = server.sockets[0].getsockname()[1]
    return server


async def fetch(
    port: int, nbytes: int, *, rst: bool = False, read_timeout: float = 10.0
) -> tuple[bytes, str]:
    """Ask the blob server (through ``port``) for ``nbytes``; returns (bytes received, how it ended):
    ``eof`` (clean FIN), ``reset`` (connection error) or ``timeout`` (no byte for ``read_timeout``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{nbytes}{' rst' if rst else ''}\n".encode())
    received = bytearray()
    try:
        while True:
            try:
                data = await asyncio.wait_for(reader.read(65536), read_timeout)
            except TimeoutError:
                return bytes(received), "timeout"
            except ConnectionError:
                return bytes(received), "reset"
            if not data:
                return bytes(received), "eof"
            received += data
    finally:
        writer.close()
