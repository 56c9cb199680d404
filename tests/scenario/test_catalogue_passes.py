"""The whole scenario catalogue passes against the default and the three-country federations."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ncp.scenario.runner import list_scenarios, run_scenarios


@pytest.mark.parametrize("topology", ["builtin:default", "builtin:three-country"])
def test_every_scenario_passes(topology: str, tmp_path: Path) -> None:
    status = run_scenarios(
        None,
        None,
        topology,
        junit=tmp_path / "junit.xml",
        json_path=tmp_path / "report.json",
        html=tmp_path / "report.html",
        console=None,
    )
    report = json.loads((tmp_path / "report.json").read_text())
    not_passed = {
        r["id"]: (r["outcome"], r["message"]) for r in report["scenarios"] if r["outcome"] != "passed"
    }
    assert not_passed == {}  # a skipped scenario is not a pass: both topologies can run every one
    assert status == 0
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    cases = suite.iter("testcase")
    assert len(list(cases)) == len(list_scenarios())
    refuted = [a["item"] for a in report["mcwg"] if a["verdict"] == "not supported"]
    assert refuted == []
    assert "MCWG" in (tmp_path / "report.html").read_text()
