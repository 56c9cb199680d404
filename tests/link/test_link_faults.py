"""Injected faults (Toxiproxy's toxics); failures keep their meaning across the link (RFC 9112 §8)."""

from __future__ import annotations

import asyncio
import time

import pytest
from linkpeers import Peer, fetch, pattern

from ncp.link import FaultSpec, LinkProfile, LinkRelay
from ncp.server import free_port

N = 100_000


async def _until(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_reset_aborts_both_sides_after_n_bytes(blob_server: Peer) -> None:
    profile = LinkProfile(rtt_ms=10, fault=FaultSpec("reset", N))
    async with LinkRelay("127.0.0.1", 0, "127.0.0.1", blob_server.port, profile) as relay:
        body, end = await fetch(relay.port, 50_000_000)  # more than socket buffers hold
        await _until(lambda: blob_server.errors)
        stats = relay.stats.snapshot()
    assert end == "reset"
    assert len(body) <= N and body == pattern(0, len(body))
    assert (stats.bytes_down, stats.faults_injected) == (N, 1)
    assert isinstance(blob_server.errors[0], ConnectionError)  # the server was reset too


async def test_stall_holds_the_connection_open_and_silent(blob_server: Peer) -> None:
    profile = LinkProfile(fault=FaultSpec("stall", N))
    async with LinkRelay("127.0.0.1", 0, "127.0.0.1", blob_server.port, profile) as relay:
        body, end = await fetch(relay.port, 1_000_000, read_timeout=0.5)
        assert (len(body), end) == (N, "timeout")
        assert body == pattern(0, N)
        # fetch() closed its socket after the timeout: the relay lets the connection go
        await _until(lambda: relay.stats.connections_active == 0)


async def test_a_stalled_connection_stays_open_while_the_client_waits(blob_server: Peer) -> None:
    profile = LinkProfile(fault=FaultSpec("stall", 0))
    async with LinkRelay("127.0.0.1", 0, "127.0.0.1", blob_server.port, profile) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(b"1000\n")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.3)
        assert relay.stats.connections_active == 1
        writer.close()


async def test_truncate_ends_cleanly_after_n_bytes(blob_server: Peer) -> None:
    """The silently short body (Toxiproxy limit_data) that only framing can expose."""
    profile = LinkProfile(fault=FaultSpec("truncate", N))
    async with LinkRelay("127.0.0.1", 0, "127.0.0.1", blob_server.port, profile) as relay:
        body, end = await fetch(relay.port, 1_000_000)
    assert (body, end) == (pattern(0, N), "eof")


async def test_refuse_refuses_connections_and_sends_nothing(blob_server: Peer) -> None:
    profile = LinkProfile(fault=FaultSpec("refuse"))
    async with LinkRelay("127.0.0.1", 0, "127.0.0.1", blob_server.port, profile) as relay:
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", relay.port)
    assert blob_server.connections == 0


async def test_faults_can_be_switched_on_and_off_on_a_running_link(blob_server: Peer) -> None:
    async with LinkRelay("127.0.0.1", 0, "127.0.0.1", blob_server.port) as relay:
        port = relay.port
        assert await fetch(port, 1000) == (pattern(0, 1000), "eof")
        await relay.set_profile(LinkProfile(fault=FaultSpec("refuse")))
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        await relay.set_profile(LinkProfile(fault=FaultSpec("reset", 10)))
        assert relay.port == port
        assert await fetch(port, 1000) == (pattern(0, 10), "reset")
        await relay.set_profile(LinkProfile())
        assert await fetch(port, 1000) == (pattern(0, 1000), "eof")


async def test_an_upstream_reset_reaches_the_client_as_a_reset(blob_server: Peer) -> None:
    """Turning an RST into a FIN would make a partial body look complete (RFC 9112 §8)."""
    async with LinkRelay("127.0.0.1", 0, "127.0.0.1", blob_server.port, LinkProfile(rtt_ms=10)) as relay:
        body, end = await fetch(relay.port, N, rst=True)
    assert end == "reset"
    assert len(body) <= N and body == pattern(0, len(body))


async def test_an_unreachable_target_resets_the_client_after_one_rtt() -> None:
    dead = free_port()
    async with LinkRelay("127.0.0.1", 0, "127.0.0.1", dead, LinkProfile(rtt_ms=40)) as relay:
        start = time.perf_counter()
        body, end = await fetch(relay.port, 10)
        elapsed = time.perf_counter() - start
        assert relay.stats.connections_failed == 1
    assert (body, end) == (b"", "reset")
    assert 0.040 <= elapsed < 0.040 + 0.150


async def test_a_slow_reader_backs_up_to_the_sender_not_into_memory(blob_server: Peer) -> None:
    profile = LinkProfile(rtt_ms=20, bandwidth_mbit=400)  # 50 MB/s link, reader ~1 MB/s
    async with LinkRelay("127.0.0.1", 0, "127.0.0.1", blob_server.port, profile) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(b"200000000\n")
        received, peak = 0, 0
        for _ in range(100):
            received += len(await reader.read(8192))
            peak = max(peak, relay.stats.buffered_bytes)
            await asyncio.sleep(0.008)
        writer.close()
        assert relay.stats.peak_buffered_bytes <= relay.buffer_limit < 2_000_000
        assert peak >= relay.buffer_limit // 2  # the window did fill: the bound, not luck, held
        # Without back-pressure the server would have pushed ~50 MB by now; kernel socket buffers
        # (a few MB each way on loopback) are all that sits between it and the reader.
        assert blob_server.sent < received + relay.buffer_limit + 32_000_000
        await _until(lambda: relay.stats.connections_active == 0)
    assert relay.stats.buffered_bytes == 0


async def test_half_close_propagates_in_both_directions(echo_server: Peer) -> None:
    async with LinkRelay("127.0.0.1", 0, "127.0.0.1", echo_server.port, LinkProfile(rtt_ms=10)) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        sent = pattern(0, 500_000)
        writer.write(sent)
        writer.write_eof()  # we are done sending but still listen
        echoed = await asyncio.wait_for(reader.read(), 5)  # read() returns at the server's EOF
        writer.close()
        await _until(lambda: relay.stats.connections_active == 0)
        stats = relay.stats.snapshot()
    assert echoed == sent
    assert (stats.bytes_up, stats.bytes_down) == (len(sent), len(sent))


async def test_stop_aborts_open_connections_and_frees_the_port(echo_server: Peer) -> None:
    relay = LinkRelay("127.0.0.1", 0, "127.0.0.1", echo_server.port, LinkProfile(rtt_ms=10))
    await relay.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    await relay.stop()
    with pytest.raises(ConnectionError):
        if not await reader.read(1):
            raise ConnectionResetError("clean EOF")  # a vanished link is not a clean end either
    writer.close()
    assert relay.stats.connections_active == 0
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", relay.port)
