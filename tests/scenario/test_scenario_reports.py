"""Reports of every outcome, from hand-made results (no federation): JUnit, JSON, HTML, MCWG verdicts."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from ncp.scenario.context import ScenarioContext
from ncp.scenario.mcwg import assess
from ncp.scenario.model import Check, Exchange, Outcome, Result, Scenario, Step
from ncp.scenario.reports import render_html, write_json, write_junit


def _noop(ctx: ScenarioContext) -> None:
    """Does nothing."""


def result(sid: str, outcome: Outcome, *checks: tuple[str, bool, tuple[str, ...]]) -> Result:
    step = Step(
        "a step",
        [Exchange("GET", "http://127.0.0.1:1/x?a=<b>", 403, 0.01, 12, '299 ncp-at "refused"')],
        0.02,
        None,
        [Check(name, ok, "detail", "a step", mcwg) for name, ok, mcwg in checks],
    )
    sc = Scenario(sid, f"title {sid}", ("t",), (), ("RAD-160",), _noop, group="grp")
    return Result(
        sc, outcome, [step], 0.5, "" if outcome == "passed" else f"{outcome}: why", "builtin:default"
    )


RESULTS = [
    result("AA-001", "passed", ("kin", True, ("3.11",)), ("region", True, ("2.1",))),
    result("AA-002", "failed", ("region again", False, ("2.1",))),
    result("AA-003", "error"),
    result("AA-004", "skipped"),
]


def test_junit_reports_failures_errors_and_skips(tmp_path: Path) -> None:
    write_junit(RESULTS, tmp_path / "j.xml")
    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == (
        "4",
        "1",
        "1",
        "1",
    )
    cases = {c.get("name", "").split()[0]: c for c in suite.findall("testcase")}
    assert cases["AA-002"].find("failure") is not None
    assert cases["AA-003"].find("error") is not None
    assert cases["AA-004"].find("skipped") is not None
    assert cases["AA-001"].get("classname") == "scenarios.grp"
    assert "403" in (cases["AA-001"].findtext("system-out") or "")


def test_a_failing_check_makes_its_mcwg_item_not_supported() -> None:
    verdicts = {a.item: a for a in assess(RESULTS)}
    assert verdicts["3.11"].verdict == "supported"
    assert verdicts["2.1"].verdict == "not supported"
    assert {e.scenario for e in verdicts["2.1"].evidence} == {"AA-001", "AA-002"}
    assert verdicts["1.2.3"].verdict == "not tested" and not verdicts["1.2.3"].evidence


def test_json_keeps_requests_checks_and_outcomes(tmp_path: Path) -> None:
    write_json(RESULTS, tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert [s["id"] for s in data["scenarios"]] == ["AA-001", "AA-002", "AA-003", "AA-004"]
    assert data["summary"] == {"passed": 1, "failed": 1, "error": 1, "skipped": 1}
    request = data["scenarios"][0]["steps"][0]["requests"][0]
    assert request["status"] == 403 and request["detail"].startswith("299")


def test_html_escapes_what_it_shows() -> None:
    page = render_html(RESULTS)
    assert "a=<b>" not in page and "a=&lt;b&gt;" in page
    assert page.count("<h3 id=") == 4
