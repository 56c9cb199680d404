"""The soak runner (``make soak``), briefly: a secured federation as processes, mixed traffic, RSS per role.

10 s at a 5 s sampling interval: enough to see every role sampled and every request succeed; whether RSS
stays flat needs the full run (docs/soak.md).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from ncp.app import Plan
from ncp.soak import SoakConfig, run_soak


def test_a_short_soak_samples_every_role_and_has_no_errors(tmp_path: Path) -> None:
    config = SoakConfig(tmp_path, minutes=10 / 60, clients=4, interval_s=5.0)
    report = run_soak(config)

    roles = {role.id for role in Plan.from_json(json.loads((tmp_path / "plan.json").read_text())).roles}
    assert set(report.roles) == roles
    assert [s.elapsed_s for s in report.samples] == [0.0, 5.0, 10.0]
    for s in report.samples:
        assert set(s.rss_mb) == roles and all(math.isfinite(mb) and mb > 0 for mb in s.rss_mb.values())
    assert not report.errors, (tmp_path / "errors.log").read_text()
    kinds = {k for s in report.samples for k in s.kinds}
    assert {"idp-treatment", "fhir-DocumentReference", "fhir-Binary", "rad160-series"} <= kinds
    assert "rad160-instance" in kinds and report.requests > 0

    with open(tmp_path / "soak.csv") as f:
        assert len(list(csv.DictReader(f))) == len(report.samples)
    assert json.loads((tmp_path / "soak.json").read_text())["errors"] == {}
