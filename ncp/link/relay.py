"""A user-space WAN link: an asyncio TCP relay that delays, paces and breaks bytes.

This kernel has no netem (docs/architecture.md), so a cross-border link is a relay between NCP-B and NCP-A.
Per connection and direction a *pump* reads chunks from one socket, has them serialised by the link's
shared pacer (one pacer per direction per link: a link is one pipe, its connections share it) and queues
them with their arrival time (serialisation end + rtt/2 + jitter) in a byte-bounded pipe; a *deliverer*
writes each chunk to the other socket at its arrival time, in order. The pipe's bound is about twice the
bandwidth-delay product: a reader slower than the link fills it and the pump stops reading, so TCP
back-pressure reaches the sender instead of the relay's memory growing.

Failures keep their meaning across the link: an RST from one side becomes an RST on the other (a relay
that turned it into a clean FIN would make truncation silent: RFC 9112 §8), an EOF becomes a
half-close.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import random
import signal
import socket
import struct
import sys
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from ncp.link.profile import LinkProfile, parse_fault

__all__ = ["LinkRelay", "LinkStats", "RelayThread", "main", "run_relay_in_thread"]

_MIN_CHUNK = 16 * 1024
_MAX_CHUNK = 64 * 1024
_MIN_WINDOW = 256 * 1024
_MAX_WINDOW = 16 * 1024 * 1024
_UNPACED_WINDOW = 8 * 1024 * 1024  # delayed but unlimited rate: what Linux TCP autotuning would allow
_CLOSE_TIMEOUT_S = 5.0
# Loopback's 64 KiB MTU makes a paced chunk one or two segments: the receiver then delays its ACK (40 ms)
# and Linux, having shrunk the congestion window of the app-limited (paced) connection, waits for it.
# Several segments per chunk keep ACKs immediate; real WAN segments (~1.4 KB) are smaller still.
_MSS = 4096
_RST_LINGER = struct.pack("ii", 1, 0)


@dataclass
class LinkStats:
    """Counters of one relay (all its connections); ``buffered_bytes`` is what the relay holds right now."""

    bytes_up: int = 0  # client -> target, delivered
    bytes_down: int = 0  # target -> client, delivered
    connections_total: int = 0
    connections_active: int = 0
    connections_failed: int = 0  # the target could not be reached
    faults_injected: int = 0
    buffered_bytes: int = 0
    peak_buffered_bytes: int = 0

    def snapshot(self) -> LinkStats:
        return dataclasses.replace(self)

    def _buffer(self, delta: int) -> None:
        self.buffered_bytes += delta
        self.peak_buffered_bytes = max(self.peak_buffered_bytes, self.buffered_bytes)


def _link_sizing(profile: LinkProfile) -> tuple[int, int]:
    """(read chunk, per-direction window) for a profile: ~4 ms of link time per chunk, window ≈ 2 × the
    one-way bandwidth-delay product (= rate × RTT, also what the handshake's first RTT may queue)."""
    rate = profile.bytes_per_s
    chunk = int(min(max(rate * 0.004, _MIN_CHUNK), _MAX_CHUNK)) if rate else _MAX_CHUNK
    delay = profile.one_way_s + profile.jitter_s
    if not delay:
        return chunk, 4 * chunk
    if not rate:
        return chunk, _UNPACED_WINDOW
    return chunk, int(min(max(2 * rate * delay + 4 * chunk, _MIN_WINDOW), _MAX_WINDOW))


class _Pacer:
    """Serialisation of one link direction: chunks leave back to back at the link rate, whoever sends them."""

    def __init__(self, bytes_per_s: float) -> None:
        self.rate = bytes_per_s
        self._free_at = 0.0

    def reserve(self, nbytes: int, now: float) -> tuple[float, float]:
        """(start, end) of this chunk's serialisation; the caller waits for start, so the next chunk
        can be reserved while this one is "on the wire" and the rate has no per-chunk gaps."""
        if not self.rate:
            return now, now
        start = max(now, self._free_at)
        self._free_at = start + nbytes / self.rate
        return start, self._free_at


@dataclass(slots=True)
class _Item:
    kind: Literal["data", "eof", "reset", "close"]
    at: float  # loop time at which it may be written
    data: bytes = b""


class _Pipe:
    """One direction of one connection: chunks in flight, bounded in bytes (back-pressure)."""

    def __init__(self, window: int, stats: LinkStats) -> None:
        self._items: deque[_Item] = deque()
        self._used = 0
        self._window = window
        self._stats = stats
        self._cond = asyncio.Condition()
        self.last_at = 0.0

    async def wait_space(self, nbytes: int) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self._used == 0 or self._used + nbytes <= self._window)

    async def put(self, item: _Item) -> None:
        async with self._cond:
            self._items.append(item)
            self._used += len(item.data)
            self._stats._buffer(len(item.data))
            self._cond.notify_all()

    async def get(self) -> _Item:
        async with self._cond:
            await self._cond.wait_for(lambda: bool(self._items))
            return self._items.popleft()

    async def release(self, nbytes: int) -> None:
        """The deliverer wrote ``nbytes`` out: they stop counting against the window."""
        async with self._cond:
            self._used -= nbytes
            self._stats._buffer(-nbytes)
            self._cond.notify_all()

    def discard(self) -> None:
        self._items.clear()
        self._stats._buffer(-self._used)
        self._used = 0


class _Abort(Exception):
    """Tear the connection down with RST on both sides."""


class _Close(Exception):
    """Close the connection cleanly (FIN) on both sides."""


def _limit_segments(sock: socket.socket) -> None:
    with contextlib.suppress(OSError, AttributeError):  # not every platform lets us choose
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, _MSS)


async def _connect(host: str, port: int, limit: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection`` with the relay's segment size set before the handshake."""
    loop = asyncio.get_running_loop()
    error: OSError = OSError(f"cannot resolve {host}")
    for family, _, _, _, addr in await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            _limit_segments(sock)
            await loop.sock_connect(sock, addr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock, limit=limit)
    raise error


async def _sleep_until(when: float) -> None:
    loop = asyncio.get_running_loop()
    while (delay := when - loop.time()) > 0:
        await asyncio.sleep(delay)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), not a FIN: the peer must see an error, not an end."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST_LINGER)
    writer.transport.abort()


async def _close_all(writers: Sequence[asyncio.StreamWriter]) -> None:
    """Close with FIN after flushing; a peer that does not take the rest in time gets an RST."""
    for writer in writers:
        writer.close()
    try:
        waits = asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)
        await asyncio.wait_for(waits, _CLOSE_TIMEOUT_S)
    except BaseException as exc:
        for writer in writers:
            writer.transport.abort()
        if not isinstance(exc, TimeoutError):
            raise


class _Connection:
    """One relayed TCP connection: two pumps, two deliverers."""

    def __init__(self, relay: LinkRelay, profile: LinkProfile, accepted_at: float) -> None:
        self._relay = relay
        self._profile = profile
        self._stats = relay.stats
        self._chunk, self._window = _link_sizing(profile)
        handshake = profile.rtt_ms / 1000.0 if profile.emulate_handshake else 0.0
        # TCP handshake: the client may send from +1 RTT, the server from +0.5 RTT after connect.
        self._floor_up = accepted_at + handshake
        self._floor_down = accepted_at + handshake / 2
        self._stalled = False

    @property
    def chunk(self) -> int:
        return self._chunk

    async def run(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        up, down = _Pipe(self._window, self._stats), _Pipe(self._window, self._stats)
        tasks = [
            asyncio.create_task(self._pump(client[0], up, self._relay._pacers[0], self._floor_up, False)),
            asyncio.create_task(self._deliver(up, server[1], "up")),
            asyncio.create_task(self._pump(server[0], down, self._relay._pacers[1], self._floor_down, True)),
            asyncio.create_task(self._deliver(down, client[1], "down")),
        ]
        graceful = False
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            errors = [t.exception() for t in done if t.exception() is not None]
            graceful = all(isinstance(e, _Close) for e in errors) and (bool(errors) or not pending)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            up.discard()
            down.discard()
            if graceful:
                await _close_all((client[1], server[1]))
            else:
                _reset(client[1])
                _reset(server[1])

    def _arrival(self, pipe: _Pipe, sent_at: float, floor: float) -> float:
        """When a chunk whose serialisation ended at ``sent_at`` arrives: + rtt/2 + jitter, never before
        the previous one (no reordering)."""
        at = max(sent_at, floor) + self._profile.one_way_s
        if self._profile.jitter_s:
            at += self._relay._rng.uniform(0.0, self._profile.jitter_s)
        pipe.last_at = max(at, pipe.last_at)
        return pipe.last_at

    async def _pump(
        self, src: asyncio.StreamReader, pipe: _Pipe, pacer: _Pacer, floor: float, downstream: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        fault = self._profile.fault if downstream else None
        forwarded = 0
        while True:
            if self._stalled and not downstream:
                await self._black_hole(src)
            await pipe.wait_space(self._chunk)
            try:
                data = await src.read(self._chunk)
            except OSError:
                await pipe.put(_Item("reset", self._arrival(pipe, loop.time(), floor)))
                return
            if self._stalled and not downstream:
                continue  # swallowed; the next turn sees the black hole
            if not data:
                await pipe.put(_Item("eof", self._arrival(pipe, loop.time(), floor)))
                return
            tripped = fault is not None and forwarded + len(data) >= fault.after_bytes
            if tripped and fault is not None:
                data = data[: fault.after_bytes - forwarded]
            forwarded += len(data)
            if data:
                await _sleep_until(floor)  # nothing leaves before the handshake; the link is free meanwhile
                start, end = pacer.reserve(len(data), loop.time())
                await _sleep_until(start)
                await pipe.put(_Item("data", self._arrival(pipe, end, floor), data))
            if tripped and fault is not None:
                await self._inject(fault.mode, pipe, self._arrival(pipe, loop.time(), floor))
                return

    async def _inject(self, mode: str, pipe: _Pipe, at: float) -> None:
        self._stats.faults_injected += 1
        if mode == "reset":
            await pipe.put(_Item("reset", at))
        elif mode == "truncate":
            await pipe.put(_Item("close", at))
        else:  # stall: stop reading the server; the client side becomes a black hole
            self._stalled = True

    async def _black_hole(self, src: asyncio.StreamReader) -> None:
        """A stalled link swallows the client's bytes until the client gives up and closes."""
        while await src.read(self._chunk):
            pass
        raise _Close

    async def _deliver(
        self, pipe: _Pipe, dst: asyncio.StreamWriter, direction: Literal["up", "down"]
    ) -> None:
        while True:
            item = await pipe.get()
            await _sleep_until(item.at)
            if item.kind == "data":
                dst.write(item.data)
                await dst.drain()
                if direction == "up":
                    self._stats.bytes_up += len(item.data)
                else:
                    self._stats.bytes_down += len(item.data)
                await pipe.release(len(item.data))
            elif item.kind == "eof":
                if dst.can_write_eof():
                    dst.write_eof()
                return
            elif item.kind == "close":
                raise _Close
            else:
                raise _Abort


class LinkRelay:
    """A TCP relay ``listen -> target`` shaped by a :class:`LinkProfile`; an async context manager.

    ``set_profile`` reshapes the link for new connections (the pacers, shared by all, change at once).
    ``stop`` aborts the connections still open (RST): the link is gone.
    """

    def __init__(
        self,
        listen_host: str,
        listen_port: int,
        target_host: str,
        target_port: int,
        profile: LinkProfile | None = None,
        *,
        seed: int | None = None,
    ) -> None:
        self.listen_host = listen_host
        self.target_host = target_host
        self.target_port = target_port
        self.stats = LinkStats()
        self._requested_port = listen_port
        self._profile = profile or LinkProfile()
        self._pacers = (_Pacer(self._profile.bytes_per_s), _Pacer(self._profile.bytes_per_s))
        self._rng = random.Random(seed)
        self._bind_addr: tuple[object, ...] | None = None
        self._family = socket.AF_INET
        self._server: asyncio.Server | None = None
        self._idle: socket.socket | None = None  # bound, not listening: connections are refused
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def profile(self) -> LinkProfile:
        return self._profile

    @property
    def port(self) -> int:
        if self._bind_addr is None:
            raise RuntimeError("the relay is not started")
        return int(str(self._bind_addr[1]))

    @property
    def address(self) -> str:
        """``host:port`` where clients connect (IPv6 hosts in brackets)."""
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.port}"

    @property
    def buffer_limit(self) -> int:
        """Bytes one connection may hold in one direction under the current profile (the memory bound)."""
        return _link_sizing(self._profile)[1]

    async def start(self) -> None:
        if self._bind_addr is not None:
            raise RuntimeError("the relay is already started")
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            self.listen_host, self._requested_port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        self._family, addr = infos[0][0], infos[0][4]
        sock = self._bind(addr)
        self._bind_addr = tuple(sock.getsockname())
        await self._listen_or_refuse(sock)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._idle is not None:
            self._idle.close()
            self._idle = None
        await self.drop_connections()

    async def set_profile(self, profile: LinkProfile) -> None:
        """Reshape the link; connections opened from now on use ``profile`` (and its fault)."""
        self._profile = profile
        for pacer in self._pacers:
            pacer.rate = profile.bytes_per_s
        if self._bind_addr is None:
            return
        refusing = profile.fault is not None and profile.fault.mode == "refuse"
        if refusing and self._server is not None:
            self._server.close()
            self._server = None
            self._idle = self._bind(self._bind_addr)
        elif not refusing and self._idle is not None:
            self._idle.close()
            self._idle = None
            await self._listen_or_refuse(self._bind(self._bind_addr))

    async def drop_connections(self) -> None:
        """Reset every relayed connection, as a link that goes down does; pooled clients reconnect."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> LinkRelay:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _bind(self, addr: tuple[object, ...]) -> socket.socket:
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            _limit_segments(sock)  # inherited by the accepted sockets
            sock.bind(addr)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    async def _listen_or_refuse(self, sock: socket.socket) -> None:
        fault = self._profile.fault
        if fault is not None and fault.mode == "refuse":
            self._idle = sock  # bound but not listening: connect() gets ECONNREFUSED
            return
        self._server = await asyncio.start_server(self._on_accept, sock=sock, limit=_MAX_CHUNK)

    def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Our own task, not asyncio's client_connected_cb task, so stop() can cancel it quietly.
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            task.get_loop().call_exception_handler(
                {"message": "link relay connection failed", "exception": exc, "task": task}
            )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted_at = asyncio.get_running_loop().time()
        profile = self._profile
        self.stats.connections_total += 1
        self.stats.connections_active += 1
        try:
            if profile.fault is not None and profile.fault.mode == "refuse":  # accepted before the switch
                self.stats.faults_injected += 1
                _reset(writer)
                return
            conn = _Connection(self, profile, accepted_at)
            try:
                upstream = await _connect(self.target_host, self.target_port, conn.chunk)
            except OSError:
                # The refusal travels back over the link: the client learns of it one RTT after connecting.
                self.stats.connections_failed += 1
                await _sleep_until(accepted_at + profile.rtt_ms / 1000.0)
                _reset(writer)
                return
            await conn.run((reader, writer), upstream)
        except BaseException:
            _reset(writer)
            raise
        finally:
            self.stats.connections_active -= 1


class RelayThread:
    """A :class:`LinkRelay` on its own event loop in a daemon thread, for synchronous tests and tools."""

    def __init__(
        self,
        listen_host: str,
        listen_port: int,
        target_host: str,
        target_port: int,
        profile: LinkProfile | None = None,
        *,
        seed: int | None = None,
    ) -> None:
        self.relay = LinkRelay(listen_host, listen_port, target_host, target_port, profile, seed=seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return self.relay.address

    @property
    def stats(self) -> LinkStats:
        return self.relay.stats.snapshot()

    def start(self) -> str:
        """Start the relay; returns its ``host:port`` (or raises what the relay's start raised)."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []
        thread = threading.Thread(
            target=self._run, args=(loop, ready, failure), name="link-relay", daemon=True
        )
        thread.start()
        if not ready.wait(timeout=10):
            raise RuntimeError("the link relay thread did not start")
        if failure:
            thread.join(timeout=10)
            raise failure[0]
        self._loop, self._thread = loop, thread
        return self.relay.address

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        try:
            asyncio.run_coroutine_threadsafe(self.relay.stop(), loop).result(timeout=10)
        except (RuntimeError, TimeoutError):
            pass  # the loop is gone or wedged: stopping it is all that is left
        finally:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)

    def set_profile(self, profile: LinkProfile, *, drop: bool = False) -> None:
        """Reshape the link; with ``drop``, open connections are reset so that every later one has it."""
        if self._loop is None:
            raise RuntimeError("the relay thread is not running")
        asyncio.run_coroutine_threadsafe(self.relay.set_profile(profile), self._loop).result(timeout=10)
        if drop:
            asyncio.run_coroutine_threadsafe(self.relay.drop_connections(), self._loop).result(timeout=10)

    def __enter__(self) -> RelayThread:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(
        self, loop: asyncio.AbstractEventLoop, ready: threading.Event, failure: list[BaseException]
    ) -> None:
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self.relay.start())
            except BaseException as exc:  # reported to start() in the caller's thread
                failure.append(exc)
                return
            finally:
                ready.set()
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


@contextlib.contextmanager
def run_relay_in_thread(
    listen_host: str,
    listen_port: int,
    target_host: str,
    target_port: int,
    profile: LinkProfile | None = None,
    *,
    seed: int | None = None,
) -> Iterator[str]:
    """Run a relay in a daemon thread for the ``with`` block; yields its ``host:port``."""
    with RelayThread(listen_host, listen_port, target_host, target_port, profile, seed=seed) as relay:
        yield relay.address


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _profile_args(args: argparse.Namespace) -> LinkProfile:
    return LinkProfile(
        rtt_ms=args.rtt_ms,
        bandwidth_mbit=args.bandwidth_mbit,
        jitter_ms=args.jitter_ms,
        fault=parse_fault(args.fault) if args.fault else None,
        emulate_handshake=not args.no_handshake,
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ncp.link.relay", description="User-space WAN link: a TCP relay that delays and paces."
    )
    p.add_argument("--listen", type=_host_port, default=("127.0.0.1", 0), help="HOST:PORT (port 0 = pick)")
    p.add_argument("--target", type=_host_port, required=True, help="HOST:PORT to relay to")
    p.add_argument("--rtt-ms", type=float, default=0.0)
    p.add_argument("--bandwidth-mbit", type=float, default=0.0, help="0 = unlimited")
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--fault", help="stall:N, reset:N, truncate:N (after N bytes server->client) or refuse")
    p.add_argument("--no-handshake", action="store_true", help="do not charge the TCP handshake's RTT")
    p.add_argument("--seed", type=int, help="jitter random seed")
    return p


async def _run_cli(relay: LinkRelay) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    async with relay:
        print(relay.port, flush=True)
        await done.wait()
    print(f"link relay {relay.address}: {relay.stats}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a relay until SIGINT/SIGTERM; prints the port it listens on, then its counters on exit."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        profile = _profile_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    (listen_host, listen_port), (target_host, target_port) = args.listen, args.target
    relay = LinkRelay(listen_host, listen_port, target_host, target_port, profile, seed=args.seed)
    try:
        asyncio.run(_run_cli(relay))
    except OSError as exc:
        print(f"link relay: cannot listen on {args.listen[0]}:{args.listen[1]}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
