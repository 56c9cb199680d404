"""``make bench`` behind the gateways' nginx front (``--front-only`` here; a whole run measures both): the
same paths and goals as the gateways alone, each against the PACS direct of its own rounds, with the CPU of
the gateways' processes and their fronts' (docs/benchmarks.md, "Round 4")."""

from __future__ import annotations

import re

import pytest

from ncp.bench import main
from ncp.nginx import NGINX_ABSENT, nginx_binary

RATIO = r"\| \d+\.\d\d \(\d+\.\d\d-\d+\.\d\d\) \|"


@pytest.mark.slow
@pytest.mark.skipif(nginx_binary() is None, reason=NGINX_ABSENT)
def test_the_front_runs_measure_every_path_and_state_every_goal(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--quick", "--no-link", "--no-orthanc", "--front-only", "--clients", "h1"]) == 0

    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    table = [r for r in rows if not r.startswith("| path")]
    assert table and all("[nginx front" in r for r in table), table  # nothing but the front's runs
    goals = [r for r in table if ">= 0." in r]
    assert len(goals) == 3  # two gateways: study and per instance in plain HTTP, per instance with mTLS
    for row in goals:
        assert re.search(rf"{RATIO} >= 0\.\d\dx \| (yes|NO) \|$", row), row
    # the CPU column counts the gateways and their nginx: a number per request, never "-"
    per_instance = [r for r in table if "two gateways" in r and "| instance x16 |" in r]
    assert len(per_instance) == 2
    for row in per_instance:
        assert re.search(r"\| \d+\.\d\d \(\d+\.\d\d-\d+\.\d\d\) \| PACS direct \[nginx front", row), row
