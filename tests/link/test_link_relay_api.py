"""The relay's surfaces: profiles from the topology, the thread-hosted relay (real HTTP), the CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from linkpeers import Peer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ncp.link import FaultSpec, LinkProfile, RelayThread, parse_fault, run_relay_in_thread
from ncp.topology import Link, builtin_topology

ROOT = Path(__file__).resolve().parents[2]


def test_a_profile_comes_from_a_topology_link() -> None:
    link = Link("BE", "LU", rtt_ms=30, bandwidth_mbit=100, jitter_ms=2)
    assert LinkProfile.from_topology(link) == LinkProfile(rtt_ms=30, bandwidth_mbit=100, jitter_ms=2)
    assert LinkProfile.from_topology(link, FaultSpec("reset", 5)).fault == FaultSpec("reset", 5)
    for lk in builtin_topology().links:
        assert LinkProfile.from_topology(lk).rtt_ms == lk.rtt_ms


def test_the_floor_is_serialisation_plus_round_trips() -> None:
    profile = LinkProfile(rtt_ms=20, bandwidth_mbit=100)
    assert profile.floor_s(10_000_000, round_trips=2) == pytest.approx(0.8 + 0.04)
    assert LinkProfile(rtt_ms=20).floor_s(10**9) == pytest.approx(0.02)


@pytest.mark.parametrize(
    "kwargs",
    [{"rtt_ms": -1}, {"bandwidth_mbit": float("nan")}, {"jitter_ms": float("inf")}, {"rtt_ms": "30"}],
)
def test_a_profile_refuses_impossible_numbers(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        LinkProfile(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("reset:1000", FaultSpec("reset", 1000)),
        ("stall:0", FaultSpec("stall", 0)),
        ("truncate:4096", FaultSpec("truncate", 4096)),
        ("refuse", FaultSpec("refuse")),
        ("stall", FaultSpec("stall", 0)),
    ],
)
def test_fault_spelling(text: str, spec: FaultSpec) -> None:
    assert parse_fault(text) == spec
    assert parse_fault(str(spec)) == spec


@pytest.mark.parametrize("text", ["explode:1", "reset:-1", "reset:1e3", "reset:", ""])
def test_unknown_or_malformed_faults_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="fault"):
        parse_fault(text)


def test_fault_spec_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="after_bytes"):
        FaultSpec("reset", -5)
    with pytest.raises(ValueError, match="mode"):
        FaultSpec("drop")  # type: ignore[arg-type]


def _blob_app() -> Starlette:
    async def blob(request: Request) -> Response:
        return Response(b"x" * int(request.path_params["n"]), media_type="application/octet-stream")

    return Starlette(routes=[Route("/blob/{n:int}", blob)])


def test_real_http_through_a_relay_in_a_thread(serve: Callable[..., str]) -> None:
    base = serve(_blob_app())
    host, port = base.removeprefix("http://").split(":")
    profile = LinkProfile(rtt_ms=40, bandwidth_mbit=200)
    with RelayThread("127.0.0.1", 0, host, int(port), profile) as relay, httpx.Client() as client:
        url = f"http://{relay.address}/blob/2500000"
        start = time.perf_counter()
        first = client.get(url)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        second = client.get(url)  # same pooled connection: no handshake
        warm = time.perf_counter() - start
        # the relay counts a chunk once its write has drained, which may be just after the client read it
        deadline = time.monotonic() + 2
        while (stats := relay.stats).bytes_down <= 5_000_000 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert first.content == second.content == b"x" * 2_500_000
    assert profile.floor_s(2_500_000, 2) <= cold < profile.floor_s(2_500_000, 2) + 0.3
    assert profile.floor_s(2_500_000, 1) <= warm < cold
    assert (stats.connections_total, stats.bytes_down > 5_000_000) == (1, True)


def test_run_relay_in_thread_yields_host_port_and_cleans_up(serve: Callable[..., str]) -> None:
    base = serve(_blob_app())
    host, port = base.removeprefix("http://").split(":")
    with run_relay_in_thread("127.0.0.1", 0, host, int(port), LinkProfile(rtt_ms=10)) as address:
        assert httpx.get(f"http://{address}/blob/10").content == b"x" * 10
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{address}/blob/10")


def test_a_relay_thread_that_cannot_bind_raises_in_the_caller() -> None:
    with RelayThread("127.0.0.1", 0, "127.0.0.1", 9) as first:
        taken = first.relay.port
        with pytest.raises(OSError), RelayThread("127.0.0.1", taken, "127.0.0.1", 9):
            pass


def test_a_relay_thread_can_switch_faults() -> None:
    with RelayThread("127.0.0.1", 0, "127.0.0.1", 9) as relay:
        relay.set_profile(LinkProfile(fault=FaultSpec("refuse")))
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://{relay.address}/")


async def test_the_cli_prints_its_port_and_relays_until_sigterm(echo_server: Peer) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ncp.link.relay",
        "--listen",
        "127.0.0.1:0",
        "--target",
        f"127.0.0.1:{echo_server.port}",
        "--rtt-ms",
        "30",
        "--bandwidth-mbit",
        "100",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        port = int(await asyncio.wait_for(proc.stdout.readline(), 20))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        start = time.perf_counter()
        writer.write(b"hello")
        assert await reader.readexactly(5) == b"hello"
        assert time.perf_counter() - start >= 0.030
        writer.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 10)
    stderr = (await proc.stderr.read()).decode()
    assert code == 0
    assert "bytes_up=5" in stderr and "Warning" not in stderr


async def test_the_cli_rejects_a_bad_profile() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ncp.link.relay", "--target", "127.0.0.1:1", "--rtt-ms", "-5",
        stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert proc.stderr is not None
    _, stderr = await proc.communicate()
    assert proc.returncode == 2 and b"rtt_ms must not be negative" in stderr
