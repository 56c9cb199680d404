"""The topology file fails early and by name; the command line validates real-world manifests."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from ncp.cli import main
from ncp.dicom.kos import read_manifest
from ncp.dicom.multipart import encode_multipart_bytes, multipart_content_type, new_boundary
from ncp.errors import InvalidTopology
from ncp.pacs.app import PacsSettings, create_pacs_app
from ncp.synth import instances_for_manifest, to_part10
from ncp.topology import builtin_names, builtin_topology, load_topology, parse_topology

IHE_SAMPLE = Path(__file__).resolve().parent / "data" / "ihe" / "MADO_KOS_A.dcm"  # IHE's, CC BY 4.0
DEFAULT = (Path(__file__).resolve().parents[1] / "ncp" / "topologies" / "default.toml").read_text()


def test_shipped_topologies_load() -> None:
    assert set(builtin_topology("default").countries) == {"FR", "AT"}
    three = builtin_topology("three-country")
    assert three.countries["NO"].architecture == "B" and len(three.countries["NO"].registries) == 2


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (
            ('home_community_id = "2.999.250.1"', 'home_community_id = "urn:oid:2.999.250.1"'),
            "home_community_id",
        ),
        (('architecture = "A"', 'architecture = "D"'), "architecture"),
        (("2.25.249112837101579105183278066551769719101", "2.999.1.2"), "retrieve_location_uid"),
        (('patient_id_issuer = "2.999.40.2"', 'patient_id_issuer = "2.999.250.2"'), "patient_id_issuer"),
        (("instance_kb = 16", 'instance_kb = "big"'), "instance_kb"),
        (("[countries.AT]", "[countries.austria]"), "country code"),
    ],
)
def test_invalid_topologies_fail_naming_the_field(tmp_path: Path, edit: tuple[str, str], field: str) -> None:
    assert edit[0] in DEFAULT
    path = tmp_path / "t.toml"
    path.write_text(DEFAULT.replace(edit[0], edit[1], 1))
    with pytest.raises(InvalidTopology, match=field):
        load_topology(path)


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (('name = "default"', 'name = "default"\nsecurity_level = 2'), "security_level"),
        (("seed = 20261128", "seed = 20261128\nseeds = 1"), "synth.seeds"),
        (('architecture = "A"', 'architecture = "A"\nbroder = "https://a.example"'), "countries.FR.broder"),
        (('[{ id = "national" }]', '[{ idd = "national" }]'), "countries.FR.registries[0].idd"),
        (('{ id = "pacs-1",', '{ id = "pacs-1", backnd = "orthanc",'), "countries.FR.pacs[0].backnd"),
        (("[countries.AT]", "[countries.FR.faults]\nok = true\n[countries.AT]"), "countries.FR.faults.ok"),
        (("rtt_ms = 0", "rtt_msec = 30"), "links[0].rtt_msec"),
    ],
)  # fmt: skip
def test_unknown_keys_are_refused_at_every_level_naming_the_path_and_the_allowed_keys(
    tmp_path: Path, edit: tuple[str, str], key: str
) -> None:
    """A misspelt key used to be ignored: ``rtt_msec = 30`` gave an unshaped link, ``broder`` a local NCP."""
    assert edit[0] in DEFAULT
    path = tmp_path / "t.toml"
    path.write_text(DEFAULT.replace(edit[0], edit[1], 1))
    with pytest.raises(InvalidTopology) as caught:
        load_topology(path)
    message = caught.value.message
    assert f"unknown key '{key}'" in message and "allowed here: " in message and "\n" not in message
    allowed = message.split("allowed here: ")[1].split(", ")
    assert key.rsplit(".", 1)[-1] not in allowed and len(allowed) >= 1


def test_a_close_match_is_suggested() -> None:
    raw = {"countries": {}, "linkz": []}
    with pytest.raises(InvalidTopology, match=r"unknown key 'linkz' \(did you mean 'links'\?\)"):
        parse_topology(raw)


def test_shipped_topologies_use_only_known_keys() -> None:
    for name in builtin_names():
        assert builtin_topology(name).countries


def test_validate_command_accepts_the_ihe_sample(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(IHE_SAMPLE)]) == 0
    assert "3.9.2" in capsys.readouterr().out


def test_validate_command_refuses_a_file_that_is_not_dicom(tmp_path: Path) -> None:
    bogus = tmp_path / "x.dcm"
    bogus.write_bytes(b"\0" * 200)
    assert main(["validate", str(bogus)]) == 2  # a usage error; a DICOM non-manifest fails with 1


def test_ihe_sample_study_can_be_synthesised_stored_and_every_reference_retrieved(
    tmp_path: Path, serve: Callable[..., str]
) -> None:
    manifest = read_manifest(IHE_SAMPLE.read_bytes())
    pacs = serve(create_pacs_app(PacsSettings(storage_dir=tmp_path / "pacs")))
    bodies = [to_part10(ds) for ds in instances_for_manifest(manifest, instance_kb=2)]
    boundary = new_boundary()
    stow = httpx.post(
        f"{pacs}/dicom-web/studies",
        content=encode_multipart_bytes(bodies, "application/dicom", boundary),
        headers={"Content-Type": multipart_content_type("application/dicom", boundary)},
        timeout=60,
    )
    assert stow.status_code == 200
    assert main(["validate", str(IHE_SAMPLE), "--pacs", f"{pacs}/dicom-web/"]) == 0
    stored = {hashlib.sha256(b).hexdigest() for b in bodies}
    from ncp.dicom.multipart import MultipartDecoder

    got: set[str] = set()
    for series in manifest.series:
        r = httpx.get(
            f"{pacs}/dicom-web/studies/{manifest.study_instance_uid}/series/{series.series_instance_uid}",
            headers={"Accept": 'multipart/related; type="application/dicom"'},
            timeout=60,
        )
        decoder = MultipartDecoder(r.headers["content-type"])
        got |= {hashlib.sha256(p.body).hexdigest() for p in decoder.feed(r.content)}
        decoder.close()
    assert got == stored
    assert len(got) == manifest.instance_count() == 86
