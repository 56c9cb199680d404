"""MCWG 1.2.5 (architecture B, XCA-I in the MCWG text) is decided by what a run on XCA regions found."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ncp.scenario.context import ScenarioContext
from ncp.scenario.mcwg import assess
from ncp.scenario.model import Check, Result, Scenario, Step


def _noop(ctx: ScenarioContext) -> None:
    """Does nothing."""


def found_through_the_registry(topology: str, ok: bool = True) -> Result:
    """A scenario whose check of the registry with the architecture (1.2.4) ran on ``topology``."""
    step = Step("find", [], 0.01, None, [Check("manifests found", ok, "2 found", "find", ("1.2.4",))])
    scenario = Scenario("XB-001", "three steps", ("t",), ("1.2.4",), ("ITI-67",), _noop, group="xb")
    return Result(scenario, "passed" if ok else "failed", [step], 0.1, "", topology)


@pytest.mark.parametrize(
    ("topology", "item", "others"),
    [
        ("builtin:xca", "1.2.5", ("1.2.3", "1.2.4")),
        ("builtin:xds", "1.2.3", ("1.2.4", "1.2.5")),
        ("builtin:default", "1.2.4", ("1.2.3", "1.2.5")),
    ],
)
def test_a_registry_check_counts_for_the_item_of_country_a_registries(
    topology: str, item: str, others: tuple[str, ...]
) -> None:
    verdicts = {a.item: a for a in assess([found_through_the_registry(topology)])}
    assert verdicts[item].verdict == "supported"
    assert [e.scenario for e in verdicts[item].evidence] == ["XB-001"]
    assert all(verdicts[o].verdict == "not tested" for o in others)


def test_a_failed_search_on_xca_regions_refutes_1_2_5() -> None:
    result = found_through_the_registry("builtin:xca", ok=False)
    verdicts = {a.item: a.verdict for a in assess([result, replace(result, topology="builtin:default")])}
    assert verdicts["1.2.5"] == "not supported" and verdicts["1.2.4"] == "not supported"
