"""The Locust viewer users, in a subprocess against the package's federation (``import locust`` stays out).

A viewer opens a series through RAD-160 the way OHIF does: its metadata, then every image 16 requests
at a time; each request is verified (the metadata lists exactly the series' instances, each answer holds
exactly one frame or the one instance) and the whole series is a ``VIEW`` row of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_locust_smoke import LOADTESTS, LOCUST, run, stats

METADATA = "v1 /wado/.../studies/[study]/series/[series]/metadata"
SERIES = "view series: metadata + every image"


@pytest.mark.parametrize(
    ("user", "image"),
    [
        ("ViewerUser", "v2 /wado/.../series/[series]/instances/[instance]/frames/1"),
        ("ViewerInstancesUser", "v2 /wado/.../series/[series]/instances/[instance]"),
    ],
)
def test_a_viewer_loads_series_metadata_first_then_every_image_verified(
    user: str, image: str, state_file: Path, tmp_path: Path
) -> None:
    prefix = tmp_path / user
    # fmt: off
    run([str(LOCUST), "-f", str(LOADTESTS / "locustfile.py"), "--headless", "-u", "2", "-r", "2", "-t", "8s",
         "--csv", str(prefix), "--only-summary", "--state", str(state_file), user], timeout=45)
    # fmt: on

    rows = stats(prefix)
    for name in (METADATA, image, SERIES):
        assert int(rows[name]["Request Count"]) > 0, name
        assert rows[name]["Failure Count"] == "0", name
    assert rows["Aggregated"]["Failure Count"] == "0"
    # at least as many images as series opened: every series of the catalogue has one instance or more
    assert int(rows[image]["Request Count"]) >= int(rows[SERIES]["Request Count"])
    custom = json.loads(Path(f"{prefix}_xcwado.json").read_text())["metrics"]["names"][image]
    assert custom["retrievals"] == int(rows[image]["Request Count"]) and custom["bytes"] > 0
    assert any(h.endswith("-border") for h in custom["hops"])
