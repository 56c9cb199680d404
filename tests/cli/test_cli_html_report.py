"""The HTML report reads at a glance: totals and target first, repeated evidence once with a count, and a
dashboard of one compact row per MCWG item whose passing evidence is folded away."""

from __future__ import annotations

import re

from ncp.scenario.context import ScenarioContext
from ncp.scenario.mcwg import ITEMS
from ncp.scenario.model import Check, Exchange, Outcome, Result, Scenario, Step
from ncp.scenario.reports import render_html


def _noop(ctx: ScenarioContext) -> None:
    """Does nothing."""


def _result(sid: str, outcome: Outcome, checks: list[Check]) -> Result:
    step = Step("retrieve every series", [Exchange("GET", "http://127.0.0.1:1/x", 200, 0.01, 12)], 0.02)
    step.checks = checks
    return Result(Scenario(sid, f"title {sid}", ("t",), (), ("RAD-160",), _noop), outcome, [step], 0.5)


# one scenario repeats the same check for 12 series, as XB-007 does for every study
SAME = Check("every instance arrived", True, "16 of 16", "retrieve every series", ("3.9.2",))
RESULTS = [
    _result("AA-001", "passed", [SAME] * 12),
    _result("AA-002", "failed", [Check("region", False, "got Abdomen", "retrieve every series", ("2.1",))]),
    _result("AA-003", "skipped", []),
]


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)).replace(" ,", ",")


def test_the_header_gives_the_target_and_the_verdict_totals() -> None:
    page = render_html(RESULTS, target="systems of the state file /srv/state.json")
    header = _text(page.split("id='mcwg-dashboard'")[0])
    assert "target systems of the state file /srv/state.json" in header
    assert "scenarios 3: 1 passed, 1 failed, 0 error, 1 skipped" in header
    items = len(ITEMS)
    assert f"MCWG items {items}: 1 supported, 1 not supported, {items - 2} not tested" in header


def test_identical_evidence_lines_are_shown_once_with_their_count() -> None:
    page = render_html(RESULTS)
    dashboard = page.split("id='mcwg-dashboard'")[1].split("</table>")[0]
    assert dashboard.count("every instance arrived") == 1 and "×12" in dashboard
    steps = page.split("Scenarios, step by step")[1]
    assert steps.count("every instance arrived") == 1 and "×12" in steps  # the step's check list too


def test_the_dashboard_is_one_row_per_item_with_passing_evidence_folded() -> None:
    page = render_html(RESULTS)
    dashboard = page.split("id='mcwg-dashboard'")[1].split("</table>")[0]
    rows = re.findall(r"<tr>.*?</tr>", dashboard, re.S)
    assert len(rows) == 1 + len(ITEMS)  # the header and one row per item, nothing else
    row = next(r for r in rows if "<td>3.9.2</td>" in r)
    folded = re.search(r"<details>(.*?)</details>", row, re.S)
    assert folded and "every instance arrived" in folded.group(1)
    assert "12 ✔ 0 ✘" in row
    failing = next(r for r in rows if "<td>2.1</td>" in r)
    assert "✘ <a href='#AA-002'>AA-002</a>" in failing and "<details>" not in failing  # never folded
    assert "class='not-supported'>not supported<" in failing
