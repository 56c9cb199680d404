"""The load shape of ``run.py`` (imports ``locust``): ``-f loadtests/locustfile.py,loadtests/shapes.py``.

Kept out of ``locustfile.py`` because Locust uses any shape class it finds, and a plain
``-u/-r/-t`` run must stay possible. Peak users, spawn rate and duration come from the usual
``-u``, ``-r`` and ``-t`` options (``use_common_options``), the profile from ``--load-profile``.
"""

from __future__ import annotations

from locust import LoadTestShape
from profiles import DEFAULT_DURATION_S, stage

__all__ = ["ProfileShape"]


class ProfileShape(LoadTestShape):
    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options if self.runner else None
        profile = str(getattr(options, "load_profile", "steady"))
        users = int(getattr(options, "num_users", None) or 1)
        rate = float(getattr(options, "spawn_rate", None) or users)
        duration = float(getattr(options, "run_time", None) or DEFAULT_DURATION_S[profile])
        elapsed = float(self.get_run_time())  # type: ignore[no-untyped-call]
        return stage(profile, elapsed, users, rate, duration)
