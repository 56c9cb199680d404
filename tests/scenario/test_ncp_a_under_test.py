"""An NCP-A under test with our NCP-B in front: the topology declares the country as external.

The "NCP under test" here is a federation started by the test (it holds FR's synthetic catalogue and
credentials from the testbed's PKI, as an outside team's NCP would); the scenario run starts only
AT and calls FR's border over mutual TLS.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from ncp.errors import InvalidTopology
from ncp.federation import Federation
from ncp.publish import seed_federation
from ncp.scenario.runner import load_scenarios, run_scenarios
from ncp.security.audit import AuditStore
from ncp.topology import load_topology

DEFAULT_TOML = Path(__file__).parents[2] / "ncp/topologies/default.toml"


@pytest.fixture(scope="module")
def ncp_a(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """France, running on its own with its own data: the system under test."""
    run_dir = tmp_path_factory.mktemp("ncp-a") / "run"
    with Federation("builtin:default", run_dir, mode="thread", secure=True) as fed:
        asyncio.run(seed_federation(fed.topology, fed.plan.endpoints))
        yield fed


def external_topology(fed: Federation, path: Path, *, border: str | None = None) -> Path:
    """The default topology with FR declared external: its border, its PACS bases, the shared PKI."""
    fr = fed.plan.endpoints["FR"]
    text = DEFAULT_TOML.read_text().replace(
        "security = true", f'security = true\npki_dir = "{fed.plan.pki_dir}"'
    )
    text = text.replace('architecture = "A"', f'architecture = "A"\nborder = "{border or fr.border}"', 1)
    for rluid, base in fr.pacs.items():
        text = re.sub(rf'(retrieve_location_uid = "{rluid}")', rf'\1, backend = "{base}"', text)
    path.write_text(text)
    return path


def test_the_catalogue_runs_through_our_ncp_b_against_an_external_ncp_a(
    ncp_a: Federation, tmp_path: Path
) -> None:
    topology = external_topology(ncp_a, tmp_path / "fr-under-test.toml")
    border_audit = AuditStore(ncp_a.plan.run_dir / "FR" / "audit.sqlite")
    before = border_audit.count()
    status = run_scenarios(
        None, None, str(topology), junit=None, json_path=tmp_path / "r.json", html=None, console=None
    )
    report = json.loads((tmp_path / "r.json").read_text())
    outcomes = {s["id"]: (s["outcome"], s["message"]) for s in report["scenarios"]}
    not_passed = {i: v for i, v in outcomes.items() if v[0] != "passed"}
    # MCWG manifests: FR holds MADO; RT-007 damages a PACS file and NG-012 stops one, impossible from
    # outside; a consumer at FR (architecture C seen from abroad) would need FR's own gateway, not declared
    mcwg = {s.id for s in load_scenarios() if s.encoding == "MCWG"}
    assert set(not_passed) == mcwg | {"RT-007", "NG-012", "XB-006"}, not_passed
    assert all(o == "skipped" for o, _ in not_passed.values())
    assert status == 0
    assert border_audit.count() > before + 50  # FR's own border answered the run's requests


def test_the_federation_starts_nothing_for_an_external_country(ncp_a: Federation, tmp_path: Path) -> None:
    topology = external_topology(ncp_a, tmp_path / "fr-under-test.toml")
    with Federation(str(topology), tmp_path / "run", mode="thread") as ours:
        assert all(not role.id.startswith("FR/") for role in ours.plan.roles)
        assert ours.plan.endpoints["FR"].border == ncp_a.plan.endpoints["FR"].border
        assert ours.plan.pki_dir == ncp_a.plan.pki_dir


def test_an_external_country_must_declare_its_pacs_by_url(ncp_a: Federation, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        DEFAULT_TOML.read_text().replace(
            'architecture = "A"', 'architecture = "A"\nborder = "https://ncp-fr.example"'
        )
    )
    with pytest.raises(InvalidTopology, match=r"countries\.FR\.pacs\[0\]\.backend"):
        load_topology(path)
