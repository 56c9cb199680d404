"""Tiny real TCP peers on loopback for the link relay tests (no mocks: the relay sees real sockets)."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import pytest
from linkpeers import Peer, pattern, start_server


@pytest.fixture
async def echo_server() -> AsyncIterator[Peer]:
    """Echoes every byte; on EOF it half-closes back (so EOF propagation can be observed)."""
    peer = Peer(0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer.connections += 1
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
        except OSError as exc:
            peer.errors.append(exc)
        finally:
            writer.close()

    server = await start_server(handle, peer)
    yield peer
    server.close()


@pytest.fixture
async def blob_server() -> AsyncIterator[Peer]:
    """Reads ``<n>\\n`` and sends ``n`` pattern bytes, then closes; ``<n> rst\\n``: then resets instead;
    ``<n> keep\\n``: then waits for the next request on the same connection."""
    peer = Peer(0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer.connections += 1
        try:
            while words := (await reader.readline()).split():
                await _send_blob(writer, int(words[0]), peer)
                if words[1:] == [b"rst"]:
                    writer.get_extra_info("socket").setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    writer.transport.abort()
                    return
                if words[1:] != [b"keep"]:
                    break
        except OSError as exc:
            peer.errors.append(exc)
        writer.close()

    server = await start_server(handle, peer)
    yield peer
    server.close()


async def _send_blob(writer: asyncio.StreamWriter, total: int, peer: Peer) -> None:
    offset = 0
    while offset < total:
        n = min(65536, total - offset)
        writer.write(pattern(offset, n))
        await writer.drain()
        offset += n
        peer.sent = max(peer.sent, offset)
