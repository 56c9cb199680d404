"""The scenario catalogue against a federation that runs elsewhere (``xcwado scenario run --target``), as a
user runs it: processes behind their nginx fronts, containers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

# Why a scenario may be skipped against running systems: it needs its own topology or manifest encoding, or
# an outage that only the test's own federation can cause.
TARGET_SKIPS = (
    "needs the topology",
    "manifests; the systems under test hold",
    "can only be caused in the simulated federation",
)


def run_scenarios(state: Path, out: Path, *select: str) -> list[dict[str, Any]]:
    """The scenarios ``select`` names against the federation of ``state``: every one passes, or is skipped
    for one of ``TARGET_SKIPS``."""
    argv = [sys.executable, "-m", "ncp.cli", "scenario", "run", *select]
    argv += ["--target", str(state), "--json", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert out.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    results: list[dict[str, Any]] = json.loads(out.read_text())["scenarios"]
    wrong = [
        f"{r['id']} {r['outcome']}: {r['message']}"
        for r in results
        if r["outcome"] != "passed"
        and not (r["outcome"] == "skipped" and any(s in r["message"] for s in TARGET_SKIPS))
    ]
    assert not wrong, "\n".join(wrong)
    return results
