"""A country on XDS-I.b behind NCP-A (builtin:xds): France keeps its documents in an XDS.b registry, seeded
with ITI-41; Austria's consumers reach them through both gateways unchanged (MHD across the border, the
facade of ncp.registry.xds.mhd in front of the registry), security on: tokens, mTLS, per-document checks."""

from __future__ import annotations

import asyncio
import hashlib
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import httpx
import pytest

from ncp.consumer.client import ImagingConsumer
from ncp.dicom.kos import to_part10
from ncp.errors import InvalidTopology
from ncp.federation import Federation
from ncp.model import StudyRecord
from ncp.publish import Published, seed_federation
from ncp.synth import render_pdf
from ncp.topology import parse_topology


@dataclass
class XdsFederation:
    fed: Federation
    fr: Published

    def consumer_for(self, study: StudyRecord) -> ImagingConsumer:
        """A health professional of Austria with a treatment context for the study's French patient."""
        consumer = ImagingConsumer(self.fed.plan.endpoints["AT"].gateway)
        consumer.authenticate()
        consumer.identify(study.patient.issuer, study.patient.id)
        consumer.open_treatment_context(study.patient.issuer, study.patient.id)
        return consumer


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XdsFederation]:
    run_dir: Path = tmp_path_factory.mktemp("xds-federation")
    with Federation("builtin:xds", run_dir, mode="thread", secure=True) as fed:
        published = asyncio.run(seed_federation(fed.topology, fed.plan.endpoints))
        yield XdsFederation(fed, published["FR"])


def test_a_registry_is_mhd_unless_it_says_xds_and_nothing_else_is_accepted() -> None:
    raw = tomllib.loads((resources.files("ncp.topologies") / "default.toml").read_text())
    assert {r.kind for c in parse_topology(raw).countries.values() for r in c.registries} == {"mhd"}
    raw["countries"]["FR"]["registries"] = [{"id": "national", "kind": "xdr"}]
    with pytest.raises(InvalidTopology, match=r"registries\[0\]\.kind' must be mhd, xds or xca"):
        parse_topology(raw)


def test_the_topology_puts_france_on_xds(federation: XdsFederation) -> None:
    fr, at = federation.fed.topology.country("FR"), federation.fed.topology.country("AT")
    assert [r.kind for r in fr.registries] == ["xds"] and [r.kind for r in at.registries] == ["mhd"]
    health = httpx.get(
        federation.fed.plan.endpoints["FR"].registries["national"].removesuffix("/fhir") + "/health"
    )
    assert health.json()["documents"] == len(federation.fr.data.studies) + len(federation.fr.reports)


def test_every_study_of_the_xds_country_is_retrieved_from_at_byte_identical(
    federation: XdsFederation,
) -> None:
    for study in federation.fr.data.studies:
        consumer = federation.consumer_for(study)
        patient = study.patient
        found = consumer.find(patient.issuer, patient.id, study_uid=study.study_instance_uid, kind="manifest")
        assert [e.study_instance_uid for e in found] == [study.study_instance_uid]
        assert found[0].home_community_id == federation.fed.topology.country("FR").home_community_id
        kos = consumer.retrieve_document(found[0], "application/dicom")
        assert kos == federation.fr.manifests[study.study_instance_uid]
        retrieval = consumer.retrieve_images(
            found[0].home_community_id or "", consumer.retrieve_manifest(found[0])
        )
        assert retrieval.complete, [s.error or s.missing for s in retrieval.series]
        expected = {
            str(ds.SOPInstanceUID): hashlib.sha256(to_part10(ds)).hexdigest()
            for ds in federation.fr.data.instances(study)
        }
        got = retrieval.hashes()
        assert {k: got[k] for k in expected} == expected


def test_level_one_then_level_two_and_the_report_as_published(federation: XdsFederation) -> None:
    study = next(s for s in federation.fr.data.studies if s.study_instance_uid in federation.fr.reports)
    consumer = federation.consumer_for(study)
    level1 = consumer.find(
        study.patient.issuer,
        study.patient.id,
        region=study.anatomical_region.token(),
        modality=study.modalities[0],
    )
    chosen = ImagingConsumer.select(level1, procedure=study.procedure.display)
    assert {e.study_instance_uid for e in chosen} == {study.study_instance_uid}
    assert sorted(e.kind for e in chosen) == ["manifest", "report"]
    report = next(e for e in chosen if e.kind == "report")
    expected = render_pdf(federation.fr.data.report(study))  # type: ignore[arg-type]
    assert consumer.retrieve_document(report, "application/pdf") == expected


def test_the_patient_is_identified_from_the_xds_registry(federation: XdsFederation) -> None:
    study = federation.fr.data.studies[0]
    consumer = ImagingConsumer(federation.fed.plan.endpoints["AT"].gateway)
    consumer.authenticate()
    patient = consumer.identify(study.patient.issuer, study.patient.id)
    assert patient["name"] == [{"family": study.patient.family, "given": [study.patient.given]}]


def test_the_xds_role_down_is_an_operation_outcome_through_the_gateways(federation: XdsFederation) -> None:
    study = federation.fr.data.studies[0]
    consumer = federation.consumer_for(study)
    gateway = federation.fed.plan.endpoints["AT"].gateway
    params = {"patient.identifier": f"urn:oid:{study.patient.issuer}|{study.patient.id}", "status": "current"}
    with federation.fed.role_down("FR/registry/national"):
        response = httpx.get(f"{gateway}/fhir/DocumentReference", params=params, headers=consumer.headers)
    assert response.status_code == 502
    assert response.json()["resourceType"] == "OperationOutcome"
    consumer = federation.consumer_for(study)  # the XDS role is back: the same search answers again
    assert consumer.find(study.patient.issuer, study.patient.id, study_uid=study.study_instance_uid)
