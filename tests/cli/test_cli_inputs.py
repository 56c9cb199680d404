"""Every input is checked before anything starts: one line naming what to fix, exit status 2, no traceback,
and nothing started or written (issue 15, "Safe and clear to use")."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cli_support import DEFAULT_TOML, closed_port, refused, xcwado

from ncp.synth import synthesize, to_part10
from ncp.topology import builtin_topology


def _topology_with(tmp_path: Path, old: str, new: str) -> Path:
    assert old in DEFAULT_TOML
    path = tmp_path / "typo.toml"
    path.write_text(DEFAULT_TOML.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("rtt_ms = 0", "rtt_msec = 30", "links[0].rtt_msec"),  # silently an unshaped link, before
        ('architecture = "A"', 'architecture = "A"\nbroder = "https://x.example"', "countries.FR.broder"),
    ],
)
def test_up_refuses_an_unknown_topology_key_before_starting(
    tmp_path: Path, old: str, new: str, key: str
) -> None:
    topology = _topology_with(tmp_path, old, new)
    run_dir = tmp_path / "run"
    done = xcwado(
        "up", "--topology", str(topology), "--state", str(tmp_path / "s.json"), "--run-dir", str(run_dir)
    )
    line = refused(done, f"unknown key '{key}'", "allowed here:")
    assert "did you mean" in line
    assert not run_dir.exists() and not (tmp_path / "s.json").exists()


def test_an_unknown_builtin_topology_lists_the_builtin_names(tmp_path: Path) -> None:
    done = xcwado(
        "up", "--topology", "defualt", "--run-dir", str(tmp_path / "run"), "--state", str(tmp_path / "s")
    )
    refused(done, "'defualt'", "default, three-country, wan")
    assert not (tmp_path / "run").exists()


def test_demo_refuses_a_treatment_country_not_in_the_topology_at_once(tmp_path: Path) -> None:
    started = time.monotonic()
    done = xcwado("demo", "--treatment", "XX", "--run-dir", str(tmp_path / "run"))
    refused(done, "--treatment XX", "FR, AT")
    assert time.monotonic() - started < 30  # no federation was started first
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("where", ["under-a-file", "a-folder"])
def test_up_refuses_a_state_path_it_cannot_write_before_starting(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "blocker"
    if where == "under-a-file":
        blocker.write_text("a file, not a folder")
        state = blocker / "state.json"
    else:
        state = tmp_path / "folder.json"
        state.mkdir()
    done = xcwado("up", "--state", str(state), "--run-dir", str(tmp_path / "run"))
    refused(done, "--state", str(state))
    assert not (tmp_path / "run" / "plan.json").exists()


def test_validate_refuses_a_missing_file(tmp_path: Path) -> None:
    refused(xcwado("validate", str(tmp_path / "nowhere.dcm")), "no file", "nowhere.dcm")


@pytest.mark.parametrize("content", [b"hello, this is a text file\n" * 20, b"\0" * 200])
def test_validate_says_not_dicom_for_a_file_that_is_not(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    refused(xcwado("validate", str(path)), "is not DICOM", str(path))


def test_validate_fails_a_dicom_file_that_is_not_a_manifest(tmp_path: Path) -> None:
    """DICOM, but an image: the checks run and fail (exit status 1), which is not a usage error."""
    topology = builtin_topology()
    rluids = {p.retrieve_location_uid: "http://pacs.example/" for p in topology.country("FR").pacs}
    data = synthesize(topology, "FR", retrieve_urls=rluids)
    image = next(data.instances(data.studies[0]))
    path = tmp_path / "image.dcm"
    path.write_bytes(to_part10(image))
    done = xcwado("validate", str(path))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "KOS" in done.stdout


def _stopped_state(tmp_path: Path) -> Path:
    """The state file of a federation that has stopped: every URL names a port nobody listens on."""
    topology = builtin_topology()
    countries = {}
    for code, country in topology.countries.items():
        port = closed_port()
        countries[code] = {
            "home_community_id": country.home_community_id,
            "patient_id_issuer": country.patient_id_issuer,
            "gateway": f"http://127.0.0.1:{port}",
            "border": f"https://127.0.0.1:{closed_port()}",
            "registries": [f"http://127.0.0.1:{closed_port()}/fhir"],
            "pacs": {
                p.retrieve_location_uid: f"http://127.0.0.1:{closed_port()}/dicom-web/" for p in country.pacs
            },
        }
    rluid = topology.country("FR").pacs[0].retrieve_location_uid
    patient = {
        "country": "FR",
        "id": "P1",
        "issuer": topology.country("FR").patient_id_issuer,
        "studies": [
            {
                "study_instance_uid": "2.25.1",
                "series": [
                    {
                        "series_instance_uid": "2.25.2",
                        "retrieve_location_uid": rluid,
                        "sop_instance_uids": ["2.25.3"],
                    }
                ],
            }
        ],
    }
    state = {
        "topology": "builtin:default",
        "countries": countries,
        "catalogue": {"patients": [patient]},
        "security": {"enabled": False},
    }
    path = tmp_path / "stopped-state.json"
    path.write_text(json.dumps(state))
    return path


def test_scenario_run_against_a_stopped_federation_fails_at_once_naming_it(tmp_path: Path) -> None:
    state = _stopped_state(tmp_path)
    started = time.monotonic()
    done = xcwado("scenario", "run", "--target", str(state), "NG-012")  # the ID after the options
    refused(done, str(state), "nothing listens at http://127.0.0.1:", "xcwado up")
    assert time.monotonic() - started < 30  # was 30 s of refused connections, then exit 3


def test_load_against_a_stopped_federation_fails_at_once_naming_it(tmp_path: Path) -> None:
    state = _stopped_state(tmp_path)
    started = time.monotonic()
    done = xcwado("load", "--state", str(state), "--duration", "5", "--out", str(tmp_path / "out"))
    line = refused(done, "xcwado load:", str(state), "nothing listens at http://127.0.0.1:")
    assert "gateway" in line
    assert time.monotonic() - started < 30
    assert not (tmp_path / "out").exists()  # Locust never started


def _written_plan(tmp_path: Path) -> Path:
    from ncp.app import make_plan

    plan = make_plan("builtin:default", tmp_path / "run")  # ports chosen, nothing started
    path = tmp_path / "plan.json"
    plan.write(path)
    return path


@pytest.mark.parametrize("command", ["serve-role --role FR/gateway", "seed --state s.json", "pki"])
def test_deployment_commands_refuse_a_missing_plan(tmp_path: Path, command: str) -> None:
    done = xcwado(*command.split(), "--plan", str(tmp_path / "nope.json"), cwd=tmp_path)
    refused(done, f"--plan {tmp_path / 'nope.json'}", "No such file")


@pytest.mark.parametrize("content", ['{"roles": 3}', "not json at all"])
def test_deployment_commands_refuse_a_file_that_is_not_a_plan(tmp_path: Path, content: str) -> None:
    path = tmp_path / "other.json"
    path.write_text(content)
    refused(xcwado("pki", "--plan", str(path)), "not a plan as `xcwado compose` writes it")


def test_serve_role_refuses_a_role_the_plan_does_not_have(tmp_path: Path) -> None:
    plan = _written_plan(tmp_path)
    line = refused(xcwado("serve-role", "--plan", str(plan), "--role", "XX/gateway"), "--role XX/gateway")
    assert "FR/gateway" in line  # the roles it does have


def test_seed_refuses_a_federation_that_is_not_running(tmp_path: Path) -> None:
    plan = _written_plan(tmp_path)
    started = time.monotonic()
    done = xcwado("seed", "--plan", str(plan), "--state", str(tmp_path / "state.json"))
    refused(done, "is not running", "FR gateway")
    assert time.monotonic() - started < 30
    assert not (tmp_path / "state.json").exists()
