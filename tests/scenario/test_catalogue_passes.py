"""The whole scenario catalogue passes against the default, three-country and XDS federations."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ncp.scenario.runner import list_scenarios, run_scenarios


@pytest.mark.parametrize("topology", ["builtin:default", "builtin:three-country", "builtin:xds"])
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
    assert not_passed == {}  # a skipped scenario is not a pass: every topology here can run every one
    assert status == 0
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    cases = suite.iter("testcase")
    assert len(list(cases)) == len(list_scenarios())
    refuted = [a["item"] for a in report["mcwg"] if a["verdict"] == "not supported"]
    assert refuted == []
    verdicts = {a["item"]: a["verdict"] for a in report["mcwg"]}
    if topology == "builtin:xds":  # country A's documents were found through its XDS registry
        assert verdicts["1.2.3"] == "supported"
    assert "MCWG" in (tmp_path / "report.html").read_text()
