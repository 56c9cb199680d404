"""Custom load-test metrics beside Locust's request statistics: mergeable across worker processes.

Locust's own stats keep one number per request (for image retrievals: time to the *last* byte).
This module adds, per request name, what an imaging exchange is judged by: time to first byte,
bytes and instances moved, each gateway hop's share of the latency (``Server-Timing``), the whole
clinician flow's duration, and each generator process's own CPU use.

Everything is a plain JSON-able dict so that workers can ship deltas to the master inside
Locust's ``report_to_master`` message. Pure module (no ``locust`` import).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CpuMeter", "Histogram", "Metrics", "NameMetrics", "round_ms"]


def round_ms(ms: float) -> int:
    """Locust's own bucketing (``StatsEntry._log_time_of_request``): 2 significant digits above 100."""
    value = round(ms)
    if value < 100:
        return value
    if value < 1000:
        return round(value, -1)
    if value < 10000:
        return round(value, -2)
    return round(value, -3)


@dataclass
class Histogram:
    """Counts per rounded millisecond; merging is adding counts, so percentiles survive distribution."""

    counts: dict[int, int] = field(default_factory=dict)

    def add(self, ms: float) -> None:
        key = round_ms(ms)
        self.counts[key] = self.counts.get(key, 0) + 1

    def merge(self, other: Mapping[Any, int]) -> None:
        for key, n in other.items():
            k = int(key)
            self.counts[k] = self.counts.get(k, 0) + int(n)

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def percentile(self, q: float) -> float | None:
        """The smallest bucket with at least ``q`` of the samples at or below it (as Locust does)."""
        total = self.count
        if not total:
            return None
        rank = max(1, math.ceil(q * total))
        seen = 0
        for key in sorted(self.counts):
            seen += self.counts[key]
            if seen >= rank:
                return float(key)
        return float(max(self.counts))

    def mean(self) -> float | None:
        total = self.count
        return sum(k * n for k, n in self.counts.items()) / total if total else None

    def to_json(self) -> dict[str, int]:
        return {str(k): n for k, n in sorted(self.counts.items())}


@dataclass
class NameMetrics:
    """What one request name (one URL template) accumulated."""

    ttfb: Histogram = field(default_factory=Histogram)
    hops: dict[str, Histogram] = field(default_factory=dict)
    retrievals: int = 0
    bytes: int = 0
    instances: int = 0
    transfer_s: float = 0.0  # sum of time-to-last-byte, for per-retrieval rates

    def merge(self, raw: Mapping[str, Any]) -> None:
        self.ttfb.merge(raw.get("ttfb", {}))
        for hop, counts in raw.get("hops", {}).items():
            self.hops.setdefault(hop, Histogram()).merge(counts)
        self.retrievals += int(raw.get("retrievals", 0))
        self.bytes += int(raw.get("bytes", 0))
        self.instances += int(raw.get("instances", 0))
        self.transfer_s += float(raw.get("transfer_s", 0.0))

    def to_json(self) -> dict[str, Any]:
        return {
            "ttfb": self.ttfb.to_json(),
            "hops": {k: h.to_json() for k, h in self.hops.items()},
            "retrievals": self.retrievals,
            "bytes": self.bytes,
            "instances": self.instances,
            "transfer_s": self.transfer_s,
        }


@dataclass
class Metrics:
    """Per-process accumulator; :meth:`drain` hands a delta to the master, :meth:`merge` takes one."""

    names: dict[str, NameMetrics] = field(default_factory=dict)
    flows: Histogram = field(default_factory=Histogram)
    flows_failed: int = 0
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> CPU record

    def retrieval(
        self,
        name: str,
        *,
        ttfb_ms: float,
        total_ms: float,
        size: int,
        instances: int,
        hops: Iterable[tuple[str, float]] = (),
    ) -> None:
        m = self.names.setdefault(name, NameMetrics())
        m.ttfb.add(ttfb_ms)
        for hop, ms in hops:
            m.hops.setdefault(hop, Histogram()).add(ms)
        m.retrievals += 1
        m.bytes += size
        m.instances += instances
        m.transfer_s += total_ms / 1000.0

    def flow(self, total_ms: float, ok: bool) -> None:
        if ok:
            self.flows.add(total_ms)
        else:
            self.flows_failed += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "names": {k: v.to_json() for k, v in sorted(self.names.items())},
            "flows": self.flows.to_json(),
            "flows_failed": self.flows_failed,
            "processes": self.processes,
        }

    def merge(self, raw: Mapping[str, Any]) -> None:
        for name, m in raw.get("names", {}).items():
            self.names.setdefault(name, NameMetrics()).merge(m)
        self.flows.merge(raw.get("flows", {}))
        self.flows_failed += int(raw.get("flows_failed", 0))
        for label, record in raw.get("processes", {}).items():
            self.processes[label] = dict(record)  # CPU records are cumulative: latest wins

    def drain(self) -> dict[str, Any]:
        """The delta since the last drain (CPU records are cumulative and sent whole)."""
        out = self.to_json()
        self.names.clear()
        self.flows = Histogram()
        self.flows_failed = 0
        return out

    def reset(self) -> None:
        self.drain()
        self.processes.clear()


def _machine_jiffies() -> tuple[float, float] | None:
    """(total, idle) CPU time of the whole machine from /proc/stat (Linux), else None."""
    try:
        with open("/proc/stat") as f:
            values = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(values), values[3] + values[4]) if len(values) > 4 else None  # idle + iowait


@dataclass
class CpuMeter:
    """This process's CPU use (and the machine's), sampled about once a second by a gevent greenlet.

    A gevent Locust process runs on one core: near 100 % of it, the generator limits the load.
    The machine's share tells whether the federation and Locust were fighting for the same cores.
    """

    label: str
    role: str  # "local", "master" or "worker": only load-generating processes can be the bottleneck
    started_wall: float = field(default_factory=time.monotonic)
    started_cpu: float = field(default_factory=time.process_time)
    samples: list[tuple[float, float]] = field(default_factory=list)  # (unix time, % of one core)
    machine: list[tuple[float, float]] = field(default_factory=list)  # (unix time, % of all cores)
    _last: tuple[float, float] | None = None
    _last_machine: tuple[float, float] | None = None

    def sample(self) -> None:
        wall, cpu, now = time.monotonic(), time.process_time(), round(time.time(), 3)
        if self._last is not None and wall > self._last[0]:
            self.samples.append((now, round(100.0 * (cpu - self._last[1]) / (wall - self._last[0]), 1)))
        self._last = (wall, cpu)
        jiffies = _machine_jiffies()
        if jiffies is not None and self._last_machine is not None and jiffies[0] > self._last_machine[0]:
            busy = 1.0 - (jiffies[1] - self._last_machine[1]) / (jiffies[0] - self._last_machine[0])
            self.machine.append((now, round(100.0 * busy, 1)))
        self._last_machine = jiffies

    def record(self) -> dict[str, Any]:
        wall = time.monotonic() - self.started_wall
        cpu = time.process_time() - self.started_cpu
        return {
            "role": self.role,
            "pid": os.getpid(),
            "cpu_s": round(cpu, 3),
            "wall_s": round(wall, 3),
            "mean_pct": round(100.0 * cpu / wall, 1) if wall > 0 else 0.0,
            "samples": list(self.samples),
            "machine_samples": list(self.machine),
            "cores": os.cpu_count(),
        }
