"""The container deployment without an engine: host-network compose files, the base image's mirror, and the
one-line errors of bad input (issue 17). The engine's side is tests/deploy/test_docker.py."""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import zipfile
from pathlib import Path

import pytest

from ncp.app import Plan
from ncp.containers import ContainerError, apt_mirror, engine, wheel_digest
from ncp.deploy import (
    host_compose_document,
    host_plan,
    ports_taken,
    role_containers,
    to_yaml,
    write_host_compose,
)

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = ROOT / "docker" / "topology.toml"


@pytest.fixture
def plan(tmp_path: Path) -> Plan:
    return host_plan(str(TOPOLOGY), tmp_path / "run")


def test_host_plan_paths_are_the_hosts_and_every_listener_is_on_loopback(plan: Plan, tmp_path: Path) -> None:
    assert plan.source == str(TOPOLOGY) and plan.run_dir == (tmp_path / "run").resolve()
    assert plan.host == "127.0.0.1"
    urls = [u for ep in plan.endpoints.countries.values() for u in [ep.gateway, ep.border, *ep.pacs.values()]]
    assert urls and all(u.split("://")[1].startswith("127.0.0.1:") for u in urls)


def test_host_compose_file_has_no_network_no_published_port_and_no_root(plan: Plan) -> None:
    shim = plan.run_dir / ".shim" / "loopback-bind.so"
    doc = host_compose_document(plan, user="1000:1000", shim=shim)
    services = doc["services"]
    roles = {r.id for r in plan.roles}
    assert set(doc) == {"services"}  # no networks:, no volumes:
    assert {s["labels"]["org.xcwado.role"] for s in services.values()} == roles | {"pki", "seed"}
    for name, service in services.items():
        assert service["network_mode"] == "host" and "ports" not in service, name
        assert service["user"] == "1000:1000" and service["init"] is True, name
        assert f"{plan.run_dir}:{plan.run_dir}:rw" in service["volumes"], name
    orthanc = services["fr-orthanc-pacs-2"]
    assert orthanc["image"] == "xcwado-orthanc:latest"
    assert orthanc["environment"]["LD_PRELOAD"] == str(shim)  # Orthanc 1.10 would bind every address
    assert f"{shim}:{shim}:ro" in orthanc["volumes"]
    assert services["seed"]["depends_on"]["pki"] == {"condition": "service_completed_successfully"}
    assert services["seed"]["depends_on"]["fr-gateway"] == {"condition": "service_healthy"}
    gateway = services["fr-gateway"]
    port = plan.role("FR/gateway").ports[0]
    assert gateway["environment"]["XCWADO_HEALTH_URL"] == f"http://127.0.0.1:{port}/health"


def test_orthanc_on_the_hosts_network_needs_the_loopback_shim(plan: Plan) -> None:
    with pytest.raises(Exception, match="loopback shim"):
        role_containers(plan)


def test_relays_of_shaped_links_are_containers_too(tmp_path: Path) -> None:
    plan = host_plan("builtin:wan", tmp_path)
    relays = [s for s in role_containers(plan) if s.role.startswith("link/")]
    assert len(relays) == 2
    assert relays[0].entrypoint == ["python3", "-m", "ncp.link.relay"]
    assert "--rtt-ms" in relays[0].command


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is installed by make test")
def test_docker_compose_accepts_the_host_network_file(plan: Plan) -> None:
    compose = write_host_compose(plan, user="1000:1000", shim=plan.run_dir / "shim.so")
    assert json.loads((plan.run_dir / "plan.json").read_text())["host"] == "127.0.0.1"
    out = subprocess.run(
        ["docker-compose", "-f", str(compose), "config", "--services"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert {"pki", "seed", "fr-gateway", "fr-orthanc-pacs-2", "no-pacs-south"} <= set(out.stdout.split())


def test_a_taken_port_is_named_with_its_role(plan: Plan) -> None:
    role = plan.role("AT/registry/national")
    with socket.socket() as s:
        s.bind(("127.0.0.1", role.ports[0]))
        s.listen()
        assert ports_taken(plan) == [("AT/registry/national", role.ports[0])]
    assert ports_taken(plan) == []


def test_the_base_image_mirror_is_the_one_apt_uses(tmp_path: Path) -> None:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.invalid/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    assert apt_mirror("bookworm", apt) == "http://mirror.invalid/debian"
    (apt / "sources.list").write_text("deb [signed-by=/k.gpg] http://other.invalid/debian bookworm main\n")
    assert apt_mirror("bookworm", apt) == "http://other.invalid/debian"  # sources.list is read first
    with pytest.raises(ContainerError, match=r"no source for Debian trixie .*--mirror URL"):
        apt_mirror("trixie", apt)


def test_a_build_without_the_wheelhouse_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(ContainerError, match=r"no wheelhouse at .*: run `make docker`"):
        wheel_digest(tmp_path)


def test_the_wheel_digest_is_of_contents_not_zip_bytes(tmp_path: Path) -> None:
    def wheel(folder: Path, stamp: tuple[int, ...]) -> Path:
        folder.mkdir()
        path = folder / "xcwado_testbed-0.1.0-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in (
                ("ncp/x.py", b"x = 1\n"),
                ("xcwado_testbed-0.1.0.dist-info/RECORD", b"ncp/x.py,h,6\n"),
            ):
                zf.writestr(zipfile.ZipInfo(name, stamp), data)
        return path

    a = wheel(tmp_path / "a", (2026, 1, 1, 0, 0, 0))
    b = wheel(tmp_path / "b", (2026, 2, 2, 0, 0, 0))
    assert a.read_bytes() != b.read_bytes()
    assert wheel_digest(a.parent) == wheel_digest(b.parent)


def test_an_engine_that_does_not_answer_is_one_line_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(ContainerError) as caught:
        engine()
    message = caught.value.message
    assert "\n" not in message
    if importlib.util.find_spec("docker") is None:
        assert message == "the Python package `docker` is missing: pip install 'xcwado-testbed[docker]'"
        return
    assert message.startswith("no Docker engine answers at unix:///nonexistent/docker.sock")
    assert message.endswith("start one with `sudo .ci/docker-setup`")


def test_yaml_of_a_host_document_is_what_compose_reads(plan: Plan) -> None:
    text = to_yaml(host_compose_document(plan, user="0:0", shim=Path("/s.so")))
    assert '    network_mode: "host"' in text and "ports:" not in text
