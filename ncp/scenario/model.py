"""What a scenario is and what running it produced (steps with their requests, checks, outcome)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ncp.scenario.context import ScenarioContext

__all__ = [
    "Check",
    "Exchange",
    "Outcome",
    "Result",
    "Scenario",
    "ScenarioFailed",
    "ScenarioSkipped",
    "Step",
    "scenario",
]

Outcome = Literal["passed", "failed", "error", "skipped"]
ScenarioFn = Callable[["ScenarioContext"], None]


class ScenarioFailed(AssertionError):
    """A precondition of the next step failed: the scenario stops, as failed."""


class ScenarioSkipped(Exception):
    """The catalogue holds nothing the scenario can exercise (e.g. no study with two PACS)."""


@dataclass(frozen=True)
class Exchange:
    """One HTTP request made during a step, as the wire saw it."""

    method: str
    url: str
    status: int
    seconds: float
    bytes: int
    detail: str = ""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    step: str
    mcwg: tuple[str, ...] = ()


@dataclass
class Step:
    name: str
    exchanges: list[Exchange] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and all(c.ok for c in self.checks)

    @property
    def status(self) -> int | None:
        """The status of the step's last request (the one the step is about)."""
        return self.exchanges[-1].status if self.exchanges else None


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    tags: tuple[str, ...]
    mcwg: tuple[str, ...]  # checklist items the scenario gives evidence for
    transactions: tuple[str, ...]  # IHE transactions exercised (ITI-67, RAD-160, ...)
    run: ScenarioFn
    topology: str | None = None  # None: the topology of the run
    encoding: Literal["MADO", "MCWG"] | None = None  # manifest encoding to seed with; None: topology's
    group: str = ""  # the scenario module (JUnit classname)

    @property
    def description(self) -> str:
        return (self.run.__doc__ or "").strip()


@dataclass
class Result:
    scenario: Scenario
    outcome: Outcome
    steps: list[Step]
    seconds: float
    message: str = ""
    topology: str = ""

    @property
    def checks(self) -> list[Check]:
        return [c for s in self.steps for c in s.checks]


def scenario(
    id: str,
    title: str,
    *,
    tags: tuple[str, ...] = (),
    mcwg: tuple[str, ...] = (),
    transactions: tuple[str, ...] = (),
    topology: str | None = None,
    encoding: Literal["MADO", "MCWG"] | None = None,
) -> Callable[[ScenarioFn], Scenario]:
    """Decorator: the function becomes a :class:`Scenario` (collected by the loader, no registry)."""

    def wrap(fn: ScenarioFn) -> Scenario:
        group = fn.__module__.rsplit(".", 1)[-1]
        return Scenario(id, title, tags, mcwg, transactions, fn, topology, encoding, group)

    return wrap
