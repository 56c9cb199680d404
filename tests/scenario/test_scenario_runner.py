"""The scenario runner, end to end: a handful of scenarios against a real seeded federation, then reports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rich.console import Console

from ncp.scenario.mcwg import ITEMS
from ncp.scenario.runner import list_scenarios, load_scenarios, run_scenarios, select

CHOSEN = ["XB-001", "XB-003", "XB-004", "NG-001", "NG-004"]


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    out = tmp_path_factory.mktemp("reports")
    with (out / "console.txt").open("w") as text:
        status = run_scenarios(
            CHOSEN,
            None,
            "builtin:default",
            junit=out / "junit.xml",
            json_path=out / "report.json",
            html=out / "report.html",
            console=Console(file=text, width=160),
        )
    assert "XB-001" in (out / "console.txt").read_text()
    return status, out


def test_the_catalogue_has_at_least_25_scenarios_with_unique_stable_ids() -> None:
    listed = list_scenarios()
    ids = [i for i, _, _ in listed]
    assert len(ids) >= 25
    assert len(set(ids)) == len(ids)
    assert all(title and tags for _, title, tags in listed)


def test_every_scenario_names_its_mcwg_items_from_the_checklist() -> None:
    known = {item for item, _ in ITEMS}
    for sc in load_scenarios():
        assert set(sc.mcwg) <= known, sc.id
        assert sc.transactions, sc.id


def test_selection_by_prefix_and_tag() -> None:
    all_ = load_scenarios()
    assert {s.id for s in select(all_, ["NG-"], None)} == {s.id for s in all_ if s.id.startswith("NG-")}
    assert all("negative" in s.tags for s in select(all_, None, ["negative"]))
    with pytest.raises(ValueError, match="ZZ-999"):
        select(all_, ["ZZ-999"], None)


def test_unknown_id_is_a_usage_error() -> None:
    status = run_scenarios(
        ["ZZ-999"], None, "builtin:default", junit=None, json_path=None, html=None, console=Console(file=None)
    )
    assert status == 2


def test_the_chosen_scenarios_pass_against_the_default_topology(reports: tuple[int, Path]) -> None:
    status, out = reports
    data = json.loads((out / "report.json").read_text())
    outcomes = {s["id"]: s["outcome"] for s in data["scenarios"]}
    assert outcomes == dict.fromkeys(CHOSEN, "passed")
    assert status == 0


def test_each_step_records_its_requests_with_status_and_timing(reports: tuple[int, Path]) -> None:
    data = json.loads((reports[1] / "report.json").read_text())
    xb = next(s for s in data["scenarios"] if s["id"] == "XB-001")
    requests = [r for step in xb["steps"] for r in step["requests"]]
    assert any("/wado/homeCommunityId/" in r["url"] and r["status"] == 200 for r in requests)
    assert all(r["seconds"] >= 0 and r["method"] in ("GET", "POST") for r in requests)
    refused = next(s for s in data["scenarios"] if s["id"] == "NG-004")
    assert any(r["status"] == 403 for step in refused["steps"] for r in step["requests"])


def test_junit_xml_parses_with_one_testcase_per_scenario(reports: tuple[int, Path]) -> None:
    root = ET.parse(reports[1] / "junit.xml").getroot()
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == len(CHOSEN)
    assert {c.get("name", "").split()[0] for c in cases} == set(CHOSEN)
    assert not root.findall(".//failure") and not root.findall(".//error")


def test_html_is_one_self_contained_file_with_the_mcwg_dashboard(reports: tuple[int, Path]) -> None:
    page = (reports[1] / "report.html").read_text()
    assert "id='mcwg-dashboard'" in page
    for item in ("1.1", "2.17", "3.2.1", "3.2.2", "3.11"):
        assert f"<td>{item}</td>" in page
    assert "<script src" not in page and "<link " not in page
    dashboard = json.loads((reports[1] / "report.json").read_text())["mcwg"]
    verdicts = {a["item"]: a["verdict"] for a in dashboard}
    assert verdicts["3.2.1"] == "supported" and verdicts["3.2.2"] == "supported"
    assert verdicts["1.2.3"] == "not tested"


BROKEN = """
from ncp.scenario.model import scenario


@scenario("ZZ-001", "raises", tags=("t",), transactions=("ITI-67",))
def raises(ctx):
    with ctx.step("a step that crashes"):
        raise RuntimeError("boom")


@scenario("ZZ-002", "cannot be exercised", tags=("t",), transactions=("ITI-67",))
def skipped(ctx):
    ctx.study(ctx.source, lambda s: False, "that does not exist")


@scenario("ZZ-003", "a check fails", tags=("t",), transactions=("ITI-67",))
def fails(ctx):
    with ctx.step("compare"):
        ctx.check("one is two", 1 == 2, "1 != 2", mcwg=("2.1",))


@scenario("ZZ-004", "checks nothing", tags=("t",), transactions=("ITI-67",))
def empty(ctx):
    pass
"""


def test_crashes_skips_and_failures_are_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "broken.py").write_text(BROKEN)
    with (tmp_path / "out.txt").open("w") as text:
        status = run_scenarios(
            None,
            None,
            "builtin:default",
            junit=tmp_path / "j.xml",
            json_path=tmp_path / "r.json",
            html=None,
            console=Console(file=text),
            directory=tmp_path / "cat",
        )
    assert status == 1
    got = {
        s["id"]: (s["outcome"], s["message"])
        for s in json.loads((tmp_path / "r.json").read_text())["scenarios"]
    }
    assert got["ZZ-001"][0] == "error" and "boom" in got["ZZ-001"][1]
    assert got["ZZ-002"][0] == "skipped" and "does not exist" in got["ZZ-002"][1]
    assert got["ZZ-003"] == ("failed", "one is two: 1 != 2")
    assert got["ZZ-004"] == ("failed", "no check made")
    mcwg = {a["item"]: a["verdict"] for a in json.loads((tmp_path / "r.json").read_text())["mcwg"]}
    assert mcwg["2.1"] == "not supported"
    suite = ET.parse(tmp_path / "j.xml").getroot()
    assert len(suite.findall(".//testcase")) == 4 and len(suite.findall(".//error")) == 1


def test_the_command_takes_a_catalogue_from_another_folder(tmp_path: Path) -> None:
    """An installed xcwado has no checkout beside it: --scenarios (or $XCWADO_SCENARIOS) names the folder."""
    shutil.copy(Path(__file__).parents[2] / "scenarios" / "flows.py", tmp_path / "flows.py")
    xcwado = [sys.executable, "-m", "ncp.cli", "scenario", "list"]
    listed = subprocess.run(
        [*xcwado, "--scenarios", str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert (
        {line.split()[0] for line in listed.stdout.splitlines()}
        == {s.id for s in load_scenarios(tmp_path)}
        == {s.id for s in load_scenarios() if s.id.startswith("XB-")}
    )
    env = {**os.environ, "XCWADO_SCENARIOS": str(tmp_path)}
    assert subprocess.run(xcwado, capture_output=True, text=True, env=env).stdout == listed.stdout
    missing = subprocess.run([*xcwado, "--scenarios", str(tmp_path / "none")], capture_output=True, text=True)
    assert missing.returncode == 2 and "no scenario folder" in missing.stderr
