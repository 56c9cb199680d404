"""What a cross-border link does to bytes: delay, rate and injected faults.

The fault modes follow Toxiproxy's toxics (github.com/Shopify/toxiproxy), counted on the
server->client direction because that is where a retrieve's body travels:

- ``stall``: forward the first ``after_bytes`` then nothing more, holding the connection open (a hung
  upstream, Toxiproxy ``timeout`` 0);
- ``reset``: forward the first ``after_bytes`` then abort both sides with a TCP RST (``reset_peer``);
- ``truncate``: forward the first ``after_bytes`` then close both sides cleanly with FIN (``limit_data``: the
  partial body that must never pass for a complete one, RFC 9112 §8);
- ``refuse``: new connections are refused (the port stays bound but does not listen: ECONNREFUSED).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, cast, get_args

from ncp.topology import Link

__all__ = ["FaultMode", "FaultSpec", "LinkProfile", "parse_fault"]

FaultMode = Literal["stall", "reset", "truncate", "refuse"]
_MODES: tuple[str, ...] = get_args(FaultMode)


@dataclass(frozen=True)
class FaultSpec:
    """A fault injected into every connection opened while it is set (``after_bytes`` server->client)."""

    mode: FaultMode
    after_bytes: int = 0

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"fault mode must be one of {', '.join(_MODES)}, not {self.mode!r}")
        if (
            isinstance(self.after_bytes, bool)
            or not isinstance(self.after_bytes, int)
            or self.after_bytes < 0
        ):
            raise ValueError(f"fault after_bytes must be a non-negative integer, not {self.after_bytes!r}")

    def __str__(self) -> str:
        return self.mode if self.mode == "refuse" else f"{self.mode}:{self.after_bytes}"


@dataclass(frozen=True)
class LinkProfile:
    """A link's shape; zero means unshaped (no delay, unlimited rate).

    One-way delay is ``rtt_ms / 2`` in each direction plus, per chunk, a uniform ``[0, jitter_ms]`` extra
    (so the delay never falls below rtt/2 and bytes are never reordered). ``emulate_handshake`` makes a new
    connection pay the TCP three-way handshake too: the client's first byte reaches the server no earlier
    than 1.5 RTT after connect, the server's first byte reaches the client no earlier than 1 RTT after.
    """

    rtt_ms: float = 0.0
    bandwidth_mbit: float = 0.0
    jitter_ms: float = 0.0
    fault: FaultSpec | None = None
    emulate_handshake: bool = True

    def __post_init__(self) -> None:
        for name in ("rtt_ms", "bandwidth_mbit", "jitter_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, not {value!r}")
            if value < 0:
                raise ValueError(f"{name} must not be negative, not {value!r}")

    @classmethod
    def from_topology(cls, link: Link, fault: FaultSpec | None = None) -> LinkProfile:
        return cls(
            rtt_ms=link.rtt_ms, bandwidth_mbit=link.bandwidth_mbit, jitter_ms=link.jitter_ms, fault=fault
        )

    @property
    def one_way_s(self) -> float:
        return self.rtt_ms / 2000.0

    @property
    def jitter_s(self) -> float:
        return self.jitter_ms / 1000.0

    @property
    def bytes_per_s(self) -> float:
        """Link rate in bytes per second; 0 = unlimited."""
        return self.bandwidth_mbit * 1e6 / 8.0

    @property
    def shaped(self) -> bool:
        return bool(self.rtt_ms or self.bandwidth_mbit or self.jitter_ms)

    def floor_s(self, nbytes: int, round_trips: float = 1.0) -> float:
        """The least time ``nbytes`` can take over this link, plus ``round_trips`` RTTs of protocol."""
        serialise = nbytes / self.bytes_per_s if self.bytes_per_s else 0.0
        return serialise + round_trips * self.rtt_ms / 1000.0


def parse_fault(text: str) -> FaultSpec:
    """``reset:1000``, ``stall:0``, ``truncate:4096`` or ``refuse`` (the CLI's and scenarios' spelling)."""
    mode, sep, count = text.strip().partition(":")
    if mode not in _MODES:
        raise ValueError(f"fault {text!r}: mode must be one of {', '.join(_MODES)}")
    if not sep:
        return FaultSpec(cast(FaultMode, mode))
    if not count.isdigit():
        raise ValueError(f"fault {text!r}: the byte count after ':' must be a non-negative integer")
    return FaultSpec(cast(FaultMode, mode), int(count))
