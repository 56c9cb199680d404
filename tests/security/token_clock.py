"""A fixed instant, a patient and a clock the test moves, for token and assertion tests."""

from __future__ import annotations

from ncp.security.tokens import PatientRef

NOW = 1_900_000_000.0
PATIENT = PatientRef("2.999.250.2", "FR-0001")


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now
