"""Locust against a live federation, in subprocesses (``import locust`` must stay out of pytest).

The smoke test runs the clinician flow with 2 users for 8 s and reads Locust's CSV; the
distributed test runs ``loadtests/run.py`` with a master and 2 workers and checks that the
master's totals are exactly what the workers say they sent (each keeps its own ledger).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import summary

LOADTESTS = Path(__file__).resolve().parents[2] / "loadtests"
LOCUST = Path(sys.executable).parent / "locust"
FLOW = [
    "0 /fhir/Patient?identifier=[patient]",
    "1 /fhir/DocumentReference?patient.identifier=[patient]&anatomical-region&modality",
    "2 /fhir/Binary/[manifest]",
    "3 /wado/.../studies/[study]/series/[series]",
]
TOKENS = ["idp /idp/token", "idp /idp/treatment"]


def stats(prefix: Path) -> dict[str, dict[str, str]]:
    with open(f"{prefix}_stats.csv", newline="") as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


def run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=LOADTESTS.parent, env={**os.environ}
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def smoke(state_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CSV prefix of a bounded headless run: 2 clinicians for 8 s."""
    prefix = tmp_path_factory.mktemp("smoke") / "smoke"
    # fmt: off
    run([str(LOCUST), "-f", str(LOADTESTS / "locustfile.py"), "--headless", "-u", "2", "-r", "2", "-t", "8s",
         "--csv", str(prefix), "--only-summary", "--state", str(state_file), "ClinicianUser"], timeout=45)
    # fmt: on
    return prefix


def test_the_clinician_flow_under_load_retrieves_exactly_the_manifest_instances(
    smoke: Path, state_file: Path
) -> None:
    prefix = smoke
    rows = stats(prefix)
    secure = json.loads(state_file.read_text())["security"]["enabled"]
    for name in FLOW + (TOKENS if secure else []):
        assert int(rows[name]["Request Count"]) > 0, name
        assert rows[name]["Failure Count"] == "0", name
    assert rows["Aggregated"]["Failure Count"] == "0"

    custom = json.loads(Path(f"{prefix}_xcwado.json").read_text())["metrics"]
    images = custom["names"][FLOW[3]]
    assert images["retrievals"] == int(rows[FLOW[3]]["Request Count"])  # every one verified
    assert images["instances"] >= images["retrievals"] and images["bytes"] > 0
    assert "origin" in images["hops"]
    assert any(h.endswith("-gateway") for h in images["hops"]) and any(
        h.endswith("-border") for h in images["hops"]
    )
    assert custom["flows_failed"] == 0 and sum(custom["flows"].values()) > 0
    assert custom["processes"]["local"]["cpu_s"] > 0


def test_distributed_totals_are_exactly_what_the_workers_sent(state_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "distributed"
    # fmt: off
    done = run([sys.executable, str(LOADTESTS / "run.py"), "--state", str(state_file), "--processes", "2",
                "--users", "4", "--duration", "8", "--out", str(out),
                "--user-classes", "ClinicianUser", "InstanceRetriever"], timeout=75)
    # fmt: on
    assert "Load test summary: PASS" in done.stdout

    ledgers = [json.loads(p.read_text()) for p in sorted((out / "ledger").glob("*.json"))]
    assert sorted(x["label"] for x in ledgers) == ["worker-0", "worker-1"]
    assert all(sum(x["requests"].values()) > 0 for x in ledgers)  # both workers generated load
    sent: Counter[str] = Counter()
    for x in ledgers:
        sent.update(x["requests"])
    rows = stats(out / "locust")
    reported = {
        f"{r['Type']} {name}": int(r["Request Count"]) for name, r in rows.items() if name != "Aggregated"
    }
    assert reported == dict(sent)
    assert int(rows["Aggregated"]["Request Count"]) == sum(sent.values())

    result = json.loads((out / "summary.json").read_text())
    assert result["ok"] and {c["name"] for c in result["checks"]} >= {"fail ratio", "stats complete"}
    assert {p["label"] for p in result["generator"]["processes"]} == {"master", "worker-0", "worker-1"}
    assert result["generator"]["bottleneck"] in (True, False)
    for produced in ("throughput.png", "latency.png", "hops.png", "generator_cpu.png", "report.html"):
        assert (out / produced).stat().st_size > 0, produced


def test_a_breached_threshold_gives_a_non_zero_exit(smoke: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The summary of Locust's CSV turns a p95 over the limit into exit status 3 (the CI gate)."""
    assert summary.main([str(smoke), "--max-p95-ms", "0.001", "--no-plots"]) == 3
    assert "| p95 | FAILED |" in capsys.readouterr().out
    assert summary.main([str(smoke), "--max-p95-ms", "60000", "--max-fail-ratio", "0", "--no-plots"]) == 0
