"""The whole scenario catalogue passes against the default federation, and every scenario that runs on the
topology it is given passes against the three-country, XDS and XCA federations too."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from ncp.scenario.runner import list_scenarios, load_scenarios, run_scenarios

# Scenarios that bring a topology of their own (FD-*, the WAN ones) run on it whatever the run's topology:
# run once, with the default. On the others only what meets the topology given can tell anything new.
ON_THE_TOPOLOGY_GIVEN = [sc.id for sc in load_scenarios() if sc.topology is None]


def run_catalogue(ids: list[str] | None, topology: str, tmp_path: Path) -> dict[str, Any]:
    status = run_scenarios(
        ids,
        None,
        topology,
        junit=tmp_path / "junit.xml",
        json_path=tmp_path / "report.json",
        html=tmp_path / "report.html",
        console=None,
    )
    report: dict[str, Any] = json.loads((tmp_path / "report.json").read_text())
    not_passed = {
        r["id"]: (r["outcome"], r["message"]) for r in report["scenarios"] if r["outcome"] != "passed"
    }
    assert not_passed == {}  # a skipped scenario is not a pass: every topology here can run every one
    assert status == 0
    refuted = [a["item"] for a in report["mcwg"] if a["verdict"] == "not supported"]
    assert refuted == []
    assert "MCWG" in (tmp_path / "report.html").read_text()
    return report


def verdicts(report: dict[str, Any]) -> dict[str, str]:
    return {a["item"]: a["verdict"] for a in report["mcwg"]}


def test_every_scenario_passes_on_the_default_federation(tmp_path: Path) -> None:
    run_catalogue(None, "builtin:default", tmp_path)
    cases = ET.parse(tmp_path / "junit.xml").getroot().iter("testcase")
    assert len(list(cases)) == len(list_scenarios())


@pytest.mark.parametrize(
    ("topology", "item"),
    [("builtin:three-country", None), ("builtin:xds", "1.2.3"), ("builtin:xca", "1.2.5")],
)
def test_every_scenario_on_the_topology_given_passes(topology: str, item: str | None, tmp_path: Path) -> None:
    report = run_catalogue(ON_THE_TOPOLOGY_GIVEN, topology, tmp_path)
    assert {r["topology"] for r in report["scenarios"]} == {topology}
    assert sorted(r["id"] for r in report["scenarios"]) == sorted(ON_THE_TOPOLOGY_GIVEN)
    if item:  # country A's documents were found through its XDS registry / XCA Initiating Gateway
        assert verdicts(report)[item] == "supported"
