"""User-space WAN link emulation and fault injection (this kernel has no netem: docs/architecture.md).

The relay module is imported on first use, so ``python -m ncp.link.relay`` runs without runpy's
"found in sys.modules" warning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ncp.link.profile import FaultMode, FaultSpec, LinkProfile, parse_fault

if TYPE_CHECKING:
    from ncp.link.relay import LinkRelay, LinkStats, RelayThread, run_relay_in_thread

__all__ = [
    "FaultMode",
    "FaultSpec",
    "LinkProfile",
    "LinkRelay",
    "LinkStats",
    "RelayThread",
    "parse_fault",
    "run_relay_in_thread",
]

_RELAY_NAMES = frozenset({"LinkRelay", "LinkStats", "RelayThread", "run_relay_in_thread"})


def __getattr__(name: str) -> Any:
    if name in _RELAY_NAMES:
        return getattr(importlib.import_module("ncp.link.relay"), name)
    raise AttributeError(f"module 'ncp.link' has no attribute {name!r}")
