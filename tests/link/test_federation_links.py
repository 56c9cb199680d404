"""A topology's shaped link places a relay between the gateways: retrievals really cross it (real HTTP,
real federation), pay its RTT, arrive byte-identical, and a broken link is a failure, never a short study."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import httpx
import pytest

from ncp.app import Plan, build_relay, make_plan
from ncp.consumer.client import ImagingConsumer, Retrieval
from ncp.dicom.kos import to_part10
from ncp.federation import Federation
from ncp.link import FaultSpec, LinkProfile
from ncp.model import StudyRecord
from ncp.publish import Published, seed_federation
from ncp.security.pki import FederationPki

RTT_MS = 40
RESET_AFTER = 32_000  # more than a TLS handshake and a manifest, less than a series of the study used


def shaped_topology(tmp: Path, rtt_ms: float = RTT_MS) -> Path:
    """The default topology with its FR-AT link set to ``rtt_ms``."""
    text = resources.files("ncp.topologies").joinpath("default.toml").read_text()
    assert "rtt_ms = 0" in text
    path = tmp / "shaped.toml"
    path.write_text(text.replace("rtt_ms = 0", f"rtt_ms = {rtt_ms}"))
    return path


def seeded(fed: Federation) -> dict[str, Published]:
    return asyncio.run(seed_federation(fed.topology, fed.plan.endpoints))


@pytest.fixture(scope="module")
def shaped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Federation, dict[str, Published]]]:
    tmp = tmp_path_factory.mktemp("shaped")
    with Federation(str(shaped_topology(tmp)), tmp / "run", mode="thread") as fed:
        yield fed, seeded(fed)


def treating(fed: Federation, study: StudyRecord) -> ImagingConsumer:
    """A consumer at AT's gateway with a treatment context for the study's patient."""
    consumer = ImagingConsumer(fed.plan.endpoints["AT"].gateway)
    consumer.authenticate()
    consumer.identify(study.patient.issuer, study.patient.id)
    consumer.open_treatment_context(study.patient.issuer, study.patient.id)
    return consumer


def retrieve(fed: Federation, study: StudyRecord) -> Retrieval:
    consumer = treating(fed, study)
    patient = study.patient
    entry = consumer.find(patient.issuer, patient.id, study_uid=study.study_instance_uid, kind="manifest")[0]
    hcid = fed.topology.country("FR").home_community_id
    return consumer.retrieve_images(hcid, consumer.retrieve_manifest(entry))


def test_unshaped_links_get_no_relay(tmp_path: Path) -> None:
    plan = make_plan("builtin:default", tmp_path)
    assert [r.id for r in plan.roles if r.kind == "link"] == []
    assert plan.endpoints_seen_from("AT") == plan.endpoints


def test_a_fault_puts_a_relay_on_an_unshaped_link_and_survives_the_plan_file(tmp_path: Path) -> None:
    plan = make_plan("builtin:default", tmp_path, link_faults={"link/FR-AT": FaultSpec("refuse")})
    assert [r.id for r in plan.roles if r.kind == "link"] == ["link/FR-AT"]  # AT -> FR only
    again = Plan.from_json(plan.to_json())
    assert again == plan
    spec = build_relay(again, "link/FR-AT")
    assert spec.profile == LinkProfile(fault=FaultSpec("refuse"))
    assert f"127.0.0.1:{spec.target[1]}" in plan.endpoints["FR"].border
    assert spec.argv()[-2:] == ["--fault", "refuse"]


@pytest.mark.parametrize("role_id", ["link/FR-FR", "link/FR-XX", "FR/link/AT", "link/FRAT"])
def test_a_fault_on_a_link_the_topology_cannot_have_is_refused(tmp_path: Path, role_id: str) -> None:
    with pytest.raises(ValueError, match="not a link between two countries"):
        make_plan("builtin:default", tmp_path, link_faults={role_id: FaultSpec("reset", 1)})


def test_each_calling_gateway_reaches_the_peer_border_through_its_relay(
    shaped: tuple[Federation, dict[str, Published]],
) -> None:
    fed, _ = shaped
    plan = fed.plan
    ports = {r.id: r.ports[0] for r in plan.roles if r.kind == "link"}
    assert sorted(ports) == ["link/AT-FR", "link/FR-AT"]
    at_view, fr_view = plan.endpoints_seen_from("AT"), plan.endpoints_seen_from("FR")
    assert at_view["FR"].border == f"https://127.0.0.1:{ports['link/FR-AT']}"
    assert fr_view["AT"].border == f"https://127.0.0.1:{ports['link/AT-FR']}"
    assert at_view["AT"] == plan.endpoints["AT"] and fr_view["FR"] == plan.endpoints["FR"]
    links = fed.state()["links"]
    assert links["link/FR-AT"]["target"] == plan.endpoints["FR"].border.removeprefix("https://")
    assert links["link/FR-AT"]["rtt_ms"] == RTT_MS


def test_a_retrieval_crosses_the_link_and_arrives_byte_identical(
    shaped: tuple[Federation, dict[str, Published]],
) -> None:
    fed, published = shaped
    pub = published["FR"]
    study = next(s for s in pub.data.studies if len({x.retrieve_location_uid for x in s.series}) == 2)
    before = fed.relays["link/FR-AT"].stats
    reverse = fed.relays["link/AT-FR"].stats
    retrieval = retrieve(fed, study)
    after = fed.relays["link/FR-AT"].stats
    assert retrieval.complete, [s.error or s.missing for s in retrieval.series]
    expected = {
        str(ds.SOPInstanceUID): hashlib.sha256(to_part10(ds)).hexdigest() for ds in pub.data.instances(study)
    }
    got = retrieval.hashes()  # the images and the study's key-image note: exactly what the manifest lists
    assert {uid: got[uid] for uid in expected} == expected
    assert after.bytes_down - before.bytes_down > retrieval.bytes  # the images, in TLS records
    assert after.bytes_up > before.bytes_up
    assert fed.relays["link/AT-FR"].stats.bytes_down == reverse.bytes_down  # nothing went FR -> AT's border
    assert all(s.seconds >= RTT_MS / 1000 for s in retrieval.series)


def test_the_calling_gateway_waits_one_rtt_for_the_peer(
    shaped: tuple[Federation, dict[str, Published]],
) -> None:
    """AT's Server-Timing (time to the upstream's headers) holds the link's round trip; FR's does not."""
    fed, published = shaped
    study = published["FR"].data.studies[0]
    consumer = treating(fed, study)
    series = study.series[0]
    url = (
        f"{fed.plan.endpoints['AT'].gateway}/wado/homeCommunityId/{fed.topology.country('FR').home_community_id}"
        f"/RetrieveLocationUID/{series.retrieve_location_uid}/studies/{study.study_instance_uid}"
        f"/series/{series.series_instance_uid}/instances/{series.instances[0].sop_instance_uid}"
    )
    headers = {**consumer.headers, "Accept": 'multipart/related; type="application/dicom"'}
    for _ in range(3):  # warm: the gateways' connections are pooled, so only the request's RTT remains
        started = time.perf_counter()
        r = httpx.get(url, headers=headers)
        elapsed = time.perf_counter() - started
        assert r.status_code == 200
        timings = dict(
            re.findall(r'([\w-]+);desc="upstream headers";dur=([\d.]+)', r.headers["server-timing"])
        )
        assert float(timings["ncp-at-gateway"]) >= RTT_MS and elapsed >= RTT_MS / 1000
        assert float(timings["ncp-at-gateway"]) - float(timings["ncp-fr-border"]) >= RTT_MS


def test_tls_runs_end_to_end_through_the_relay(shaped: tuple[Federation, dict[str, Published]]) -> None:
    """The relay is TCP only: AT sees FR's own certificate, pinned by name, and FR still demands AT's."""
    fed, _ = shaped
    assert fed.plan.pki_dir is not None
    pki = FederationPki.load(fed.plan.pki_dir)
    via = fed.plan.endpoints_seen_from("AT")["FR"].border
    with httpx.Client(verify=pki.client_ssl_context("AT", peer="FR")) as client:
        assert client.get(f"{via}/health").status_code == 200
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{via}/health", verify=pki.client_ssl_context("FR", peer="AT"))  # FR's border is not AT's
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{via}/health", verify=pki.ssl_context_with(None, peer="FR"))  # no client certificate


def test_a_link_reset_mid_study_is_a_failure_never_a_short_study(tmp_path: Path) -> None:
    fault = FaultSpec("reset", RESET_AFTER)
    with Federation(
        str(shaped_topology(tmp_path)), tmp_path / "run", mode="thread", link_faults={"link/FR-AT": fault}
    ) as fed:
        study = next(s for s in seeded(fed)["FR"].data.studies if "CT" in s.modalities)
        retrieval = retrieve(fed, study)
        stats = fed.relays["link/FR-AT"].stats
    cut = [s for s in retrieval.series if s.missing]
    assert cut and not retrieval.complete
    assert all(s.error for s in cut), [(s.status, s.error, len(s.received)) for s in cut]  # said so
    assert all(s.complete for s in retrieval.series if not s.missing)  # a series under N bytes arrives whole
    assert stats.faults_injected >= len(cut)


def test_relays_run_as_processes_and_stop_cleanly(tmp_path: Path) -> None:
    with Federation(str(shaped_topology(tmp_path)), tmp_path / "run", secure=False) as fed:
        assert {"link/FR-AT", "link/AT-FR"} <= set(fed.pids)
        fr = fed.topology.country("FR")
        r = httpx.get(
            f"{fed.plan.endpoints['AT'].gateway}/fhir/Patient",
            params={"identifier": f"urn:oid:{fr.patient_id_issuer}|nobody"},
        )
        assert r.status_code == 200, r.text
    log = (tmp_path / "run" / "logs" / "link-FR-AT.log").read_text()
    counters = re.search(r"LinkStats\(bytes_up=(\d+), bytes_down=(\d+)", log)
    assert counters and int(counters[1]) > 0 and int(counters[2]) > 0, log
