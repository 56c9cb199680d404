"""Load profiles as pure schedules: (elapsed seconds) -> (users, spawn rate) or None when done.

Pure module (no ``locust`` import), used by ``shapes.py`` and tested by ``tests/load``:

- ``steady``: ``users`` from the start (at ``rate``/s) until ``duration``;
- ``ramp``: five equal steps up to ``users``: throughput against concurrency, to find the knee;
- ``spike``: a quarter of ``users`` for 40 %, all of them at once for 20 %, back down for 40 %:
  does the federation recover (latency, errors) after a burst?
- ``soak``: a short warm-up, then ``users`` held for a long ``duration``: drift and leaks.
"""

from __future__ import annotations

import math

__all__ = ["DEFAULT_DURATION_S", "PROFILES", "stage"]

PROFILES = ("ramp", "steady", "spike", "soak")
DEFAULT_DURATION_S = {"ramp": 120.0, "steady": 60.0, "spike": 90.0, "soak": 1800.0}
_RAMP_STEPS = 5


def stage(profile: str, elapsed: float, users: int, rate: float, duration: float) -> tuple[int, float] | None:
    """Users and spawn rate wanted ``elapsed`` seconds into the run; None ends the run."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; one of {', '.join(PROFILES)}")
    if users < 1 or rate <= 0 or duration <= 0:
        raise ValueError("users, spawn rate and duration must be positive")
    if elapsed >= duration:
        return None
    share = elapsed / duration
    if profile == "ramp":
        step = min(_RAMP_STEPS, math.floor(share * _RAMP_STEPS) + 1)
        return max(1, round(users * step / _RAMP_STEPS)), rate
    if profile == "spike":
        base = max(1, users // 4)
        if 0.4 <= share < 0.6:
            return users, max(rate, float(users))  # the burst arrives at once
        return base, max(rate, float(users))  # and leaves at once
    if profile == "soak":
        warm = min(60.0, 0.1 * duration)
        if elapsed < warm:
            return max(1, math.ceil(users * (elapsed + 1) / (warm + 1))), rate
    return users, rate
