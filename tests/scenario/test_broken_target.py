"""A deliberately broken responding country fails exactly the scenarios that exercise the fault.

The default topology gets a ``[countries.FR.faults]`` table; the whole catalogue runs against it. Which
scenarios must fail is derived from the run's own evidence (the requests each scenario made), so the
expectation follows the catalogue instead of a list kept by hand.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from test_catalogue_passes import ON_THE_TOPOLOGY_GIVEN  # those that bring their own never meet the fault

from ncp.app import load_source
from ncp.errors import InvalidTopology
from ncp.scenario.runner import run_scenarios
from ncp.topology import load_topology

DEFAULT = load_source("builtin:default")
FR = DEFAULT.country("FR")
_RLUID = re.compile(r"/wado/homeCommunityId/([\d.]+)/RetrieveLocationUID/([\d.]+)/")


def broken_topology(tmp_path: Path, fault: str) -> Path:
    text = (Path(__file__).parents[2] / "ncp/topologies/default.toml").read_text()
    text = text.replace('name = "default"', f'name = "broken-{fault}"')
    text = text.replace("[countries.AT]", f"[countries.FR.faults]\n{fault} = true\n\n[countries.AT]")
    path = tmp_path / f"broken-{fault}.toml"
    path.write_text(text)
    return path




def run_catalogue(topology: Path, tmp_path: Path) -> tuple[int, dict[str, Any], str]:
    report, html = tmp_path / "report.json", tmp_path / "report.html"
    status = run_scenarios(
        ON_THE_TOPOLOGY_GIVEN, None, str(topology), junit=None, json_path=report, html=html, console=None
    )
    return status, json.loads(report.read_text()), html.read_text()


def on_broken(report: dict[str, Any], topology: Path) -> list[dict[str, Any]]:
    """Scenarios that ran on the broken federation: all that were chosen."""
    ran = [s for s in report["scenarios"] if s["topology"] == str(topology)]
    assert len(ran) == len(report["scenarios"]) == len(ON_THE_TOPOLOGY_GIVEN)
    return ran


def failed(scenarios: list[dict[str, Any]]) -> set[str]:
    return {s["id"] for s in scenarios if s["outcome"] != "passed"}


def routes_by_rluid_off_the_first_pacs(sc: dict[str, Any]) -> bool:
    """A RAD-160 request to FR that names a Retrieve Location UID other than FR's first PACS, without
    a retrieveURL (which the gateway routes by), and that some PACS answered: not refused before
    routing (401/403) nor unanswered (5xx, a PACS down), where the route made no difference."""
    for step in sc["steps"]:
        for x in step["requests"]:
            m = _RLUID.search(x["url"])
            if not m or m.group(1) != FR.home_community_id or x["status"] in (401, 403) or x["status"] >= 500:
                continue
            if "retrieveurl=" not in x["url"].lower() and m.group(2) != FR.pacs[0].retrieve_location_uid:
                return True
    return False


def test_a_gateway_that_ignores_the_retrieve_location_uid_fails_every_scenario_reaching_another_pacs(
    tmp_path: Path,
) -> None:
    topology = broken_topology(tmp_path, "ignore_retrieve_location_uid")
    status, report, html = run_catalogue(topology, tmp_path)
    ran = on_broken(report, topology)
    expected = {s["id"] for s in ran if routes_by_rluid_off_the_first_pacs(s)}
    assert {"NG-003", "XB-005"} <= expected  # the two scenarios written for this behaviour
    assert failed(ran) == expected
    assert status == 1
    ng003 = next(s for s in ran if s["id"] == "NG-003")
    evidence = [c for st in ng003["steps"] for c in st["checks"] if not c["ok"]]
    assert any(c["detail"] == "got 200" for c in evidence), evidence
    assert "got 200" in html and "NG-003" in html


def test_a_pacs_that_answers_200_for_a_partial_study_fails_exactly_the_partial_scenarios(
    tmp_path: Path,
) -> None:
    topology = broken_topology(tmp_path, "partial_as_ok")
    status, report, html = run_catalogue(topology, tmp_path)
    ran = on_broken(report, topology)
    expected = {s["id"] for s in ran if "partial" in s["tags"]}
    assert expected == {"RT-007"}
    assert failed(ran) == expected
    assert status == 1
    rt007 = next(s for s in ran if s["id"] == "RT-007")
    evidence = {c["name"]: c["detail"] for st in rt007["steps"] for c in st["checks"] if not c["ok"]}
    assert evidence.get("206 Partial Content for the damaged series") == "got 200", evidence
    assert "206 Partial Content for the damaged series" in html


def test_a_mistyped_fault_is_refused_at_start_naming_the_field(tmp_path: Path) -> None:
    path = broken_topology(tmp_path, "ignore_retrieve_location_uids")
    with pytest.raises(InvalidTopology, match=r"countries\.FR\.faults\.ignore_retrieve_location_uids"):
        load_topology(path)
