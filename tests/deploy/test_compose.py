"""The Docker deployment: the committed compose file is what `xcwado compose` generates, and it is valid."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ncp.cli import main
from ncp.deploy import compose_plan
from ncp.errors import InvalidTopology

ROOT = Path(__file__).resolve().parents[2]


def test_committed_compose_files_are_up_to_date(tmp_path: Path) -> None:
    assert main(["compose", "--topology", str(ROOT / "docker/topology.toml"), "--out", str(tmp_path)]) == 0
    for name in ("compose.yaml", "plan.json"):
        assert (tmp_path / name).read_text() == (ROOT / "docker" / name).read_text(), (
            f"regenerate docker/{name}"
        )


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is installed by make test")
def test_docker_compose_accepts_the_file_with_the_load_profile() -> None:
    out = subprocess.run(
        ["docker-compose", "-f", "docker/compose.yaml", "--profile", "load", "config", "--services"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    services = set(out.stdout.split())
    assert {
        "fr-gateway",
        "no-registry-north",
        "fr-orthanc-pacs-2",
        "pki",
        "seed",
        "locust-master",
    } <= services


def test_a_shaped_link_is_refused_with_what_to_do_instead() -> None:
    """Compose has no link relays: a topology that shapes a link must not deploy silently unshaped."""
    with pytest.raises(InvalidTopology, match=r"links between FR and AT: .*xcwado up.*tc netem"):
        compose_plan("builtin:wan")


def test_an_xca_country_deploys_its_initiating_gateway_and_ncp_a_asks_only_it() -> None:
    plan = compose_plan("builtin:xca")
    fr = plan.endpoints["FR"]
    assert {r.id for r in plan.roles} >= {"FR/xca", "FR/registry/north", "FR/registry/south"}
    assert fr.registries == {"xca": "http://fr-xca:8081/fhir"}
    assert sorted(fr.communities.values()) == ["http://fr-registry-north:8081", "http://fr-registry-south:8081"]
