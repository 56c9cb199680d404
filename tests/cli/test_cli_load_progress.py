"""``xcwado load`` says where it is while Locust runs, instead of half a minute of silence."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import load_runner

HEADER = (
    "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,95%,Total Request Count,Total Failure Count"
)


def test_a_progress_line_reads_the_last_aggregated_row_of_locusts_history(tmp_path: Path) -> None:
    runner = load_runner()
    history = tmp_path / "locust_stats_history.csv"
    assert "Locust starting" in runner.progress_line(history, 2.0, 30.0)  # no file yet
    history.write_text(
        HEADER + "\n"
        "1700000001,2,GET,/fhir/Patient,3.0,0.0,10,20,6,0\n"
        "1700000001,2,,Aggregated,3.0,0.0,10,20,6,0\n"
        "1700000006,4,,Aggregated,12.5,0.5,10,30,70,1\n"
    )
    line = runner.progress_line(history, 10.4, 30.0)
    assert " ".join(line.split()) == "10 s of 30 s: 4 users, 70 requests (1 failed), 12.5 req/s"


def test_the_runner_prints_progress_while_locust_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = load_runner()
    monkeypatch.setattr(runner, "_PROGRESS_S", 0.3)
    busy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])  # stands for Locust
    assert runner._watch(busy, tmp_path, 1.0) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if " s of 1 s:" in line]
    assert len(lines) >= 2, lines
