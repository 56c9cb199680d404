"""Delay and rate: what the benchmark's "link floor" relies on (docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import time

from linkpeers import Peer, fetch, pattern

from ncp.link import LinkProfile, LinkRelay

MB = 1_000_000


async def _ping_times(port: int, tries: int = 5) -> tuple[float, list[float]]:
    """(connect + first echo, then each echo of one byte on the same connection), in seconds."""
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    times: list[float] = []
    try:
        for i in range(tries + 1):
            start = time.perf_counter()
            writer.write(bytes([i]))
            assert await reader.readexactly(1) == bytes([i])
            times.append(time.perf_counter() - start)
    finally:
        writer.close()
    return times[0] + (time.perf_counter() - t0) - sum(times), times[1:]


async def test_a_round_trip_over_the_link_costs_the_rtt(echo_server: Peer) -> None:
    _, direct = await _ping_times(echo_server.port)
    async with LinkRelay("127.0.0.1", 0, "127.0.0.1", echo_server.port, LinkProfile(rtt_ms=60)) as relay:
        _, shaped = await _ping_times(relay.port)
    extra = min(shaped) - min(direct)
    assert 0.060 <= extra < 0.060 + 0.150


async def test_a_new_connection_also_pays_the_tcp_handshake(echo_server: Peer) -> None:
    async with LinkRelay("127.0.0.1", 0, "127.0.0.1", echo_server.port, LinkProfile(rtt_ms=60)) as relay:
        first, _ = await _ping_times(relay.port, tries=0)
    assert 0.120 <= first < 0.120 + 0.150  # SYN/SYN-ACK, then the request and its answer


async def test_the_handshake_emulation_can_be_switched_off(echo_server: Peer) -> None:
    profile = LinkProfile(rtt_ms=60, emulate_handshake=False)
    async with LinkRelay("127.0.0.1", 0, "127.0.0.1", echo_server.port, profile) as relay:
        first, _ = await _ping_times(relay.port, tries=0)
    assert 0.060 <= first < 0.110


async def test_jitter_adds_delay_but_never_reorders_bytes(echo_server: Peer) -> None:
    profile = LinkProfile(rtt_ms=20, jitter_ms=15, emulate_handshake=False)
    async with LinkRelay("127.0.0.1", 0, "127.0.0.1", echo_server.port, profile, seed=7) as relay:
        _, pings = await _ping_times(relay.port, tries=8)
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        sent = pattern(0, 300_000)
        for i in range(0, len(sent), 1000):  # many small writes, each its own jittered chunk
            writer.write(sent[i : i + 1000])
            await asyncio.sleep(0 if i % 20_000 else 0.001)
        writer.write_eof()
        echoed = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    assert min(pings) >= 0.020
    assert max(pings) < 0.020 + 0.030 + 0.100
    assert len(set(round(p, 3) for p in pings)) > 1  # it does vary
    assert echoed == sent


async def test_a_transfer_is_paced_to_the_link_rate(blob_server: Peer) -> None:
    profile = LinkProfile(rtt_ms=20, bandwidth_mbit=100)
    async with LinkRelay("127.0.0.1", 0, "127.0.0.1", blob_server.port, profile) as relay:
        start = time.perf_counter()
        body, end = await fetch(relay.port, 10 * MB)
        elapsed = time.perf_counter() - start
    assert (len(body), end) == (10 * MB, "eof")
    assert body == pattern(0, 10 * MB)
    floor = profile.floor_s(10 * MB, round_trips=2)  # handshake + request/response
    assert 0.8 <= floor <= elapsed <= 1.2 * floor


async def test_connections_share_one_pipe_fairly(blob_server: Peer) -> None:
    profile = LinkProfile(rtt_ms=10, bandwidth_mbit=100)
    async with LinkRelay("127.0.0.1", 0, "127.0.0.1", blob_server.port, profile) as relay:
        start = time.perf_counter()

        async def timed() -> float:
            body, _ = await fetch(relay.port, 5 * MB)
            assert len(body) == 5 * MB
            return time.perf_counter() - start

        finish = await asyncio.gather(timed(), timed())
    floor = profile.floor_s(10 * MB, round_trips=2)
    assert floor <= max(finish) <= 1.2 * floor  # together no faster than the link
    assert min(finish) >= 0.85 * max(finish)  # and neither starves the other


async def test_an_unshaped_relay_is_transparent_and_fast(blob_server: Peer) -> None:
    async with LinkRelay("127.0.0.1", 0, "127.0.0.1", blob_server.port) as relay:
        start = time.perf_counter()
        body, end = await fetch(relay.port, 20 * MB)
        elapsed = time.perf_counter() - start
        stats = relay.stats.snapshot()
    assert (body == pattern(0, 20 * MB), end) == (True, "eof")
    assert elapsed < 2.0  # > 10 MB/s even on a busy 2-core box
    assert (stats.bytes_down, stats.bytes_up, stats.connections_total) == (20 * MB, len(b"20000000\n"), 1)


async def test_back_to_back_responses_each_stay_near_the_floor(blob_server: Peer) -> None:
    """Per-instance retrieves on a kept-alive connection: no delayed-ACK stall (40 ms) after a paced burst."""
    profile = LinkProfile(rtt_ms=10, bandwidth_mbit=100)
    size = 400_000
    async with LinkRelay("127.0.0.1", 0, "127.0.0.1", blob_server.port, profile) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        times = []
        for _ in range(12):
            start = time.perf_counter()
            writer.write(f"{size} keep\n".encode())
            assert await reader.readexactly(size) == pattern(0, size)
            times.append(time.perf_counter() - start)
        writer.close()
    floor = profile.floor_s(size, round_trips=1)
    assert min(times[1:]) >= floor
    assert sorted(times[1:])[-2] < floor + 0.025  # one outlier allowed for a busy box


async def test_each_direction_has_its_own_pipe(echo_server: Peer) -> None:
    """Full duplex: an upload echoed back takes one serialisation time, not two."""
    profile = LinkProfile(rtt_ms=20, bandwidth_mbit=100)
    sent = pattern(0, 2_500_000)
    async with LinkRelay("127.0.0.1", 0, "127.0.0.1", echo_server.port, profile) as relay:
        start = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(sent)
        writer.write_eof()
        echoed = await asyncio.wait_for(reader.read(), 10)
        elapsed = time.perf_counter() - start
        writer.close()
    assert echoed == sent
    floor = profile.floor_s(len(sent), round_trips=2)  # handshake, then there and back again
    assert floor <= elapsed <= 1.2 * floor
