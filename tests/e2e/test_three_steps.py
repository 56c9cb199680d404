"""The three cross-border steps, end to end through NCP-AT and NCP-FR, for both manifest encodings."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from e2e_federations import Seeded

from ncp.consumer.client import ImagingConsumer
from ncp.dicom.kos import to_part10
from ncp.model import StudyRecord


def consumer_in(seeded: Seeded, code: str, **kw: object) -> ImagingConsumer:
    return ImagingConsumer(seeded.gateway(code), **kw)  # type: ignore[arg-type]


def stored_hashes(seeded: Seeded, country: str, study: StudyRecord) -> dict[str, str]:
    """SHA-256 of each instance as the source PACS holds it (fetched directly, intra-community)."""
    data = seeded.published[country].data
    return {str(ds.SOPInstanceUID): hashlib.sha256(to_part10(ds)).hexdigest() for ds in data.instances(study)}


@pytest.mark.parametrize("fixture", ["default_mado", "default_mcwg"])
def test_every_study_of_fr_retrieved_from_at_byte_identical(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    seeded: Seeded = request.getfixturevalue(fixture)
    pub = seeded.published["FR"]
    consumer = consumer_in(seeded, "AT")
    for study in pub.data.studies:
        patient = study.patient
        found = consumer.find(patient.issuer, patient.id, study_uid=study.study_instance_uid, kind="manifest")
        assert [e.study_instance_uid for e in found] == [study.study_instance_uid]
        assert found[0].home_community_id == seeded.hcid("FR")
        manifest = consumer.retrieve_manifest(found[0])
        assert manifest.encoding == pub.encoding
        retrieval = consumer.retrieve_images(seeded.hcid("FR"), manifest)
        assert retrieval.complete, [s.error or s.missing for s in retrieval.series]
        expected = stored_hashes(seeded, "FR", study)
        got = retrieval.hashes()
        assert {k: got[k] for k in expected} == expected


def test_level_one_keys_then_level_two_selection(default_mado: Seeded) -> None:
    pub = default_mado.published["FR"]
    study = pub.data.studies[0]
    consumer = consumer_in(default_mado, "AT")
    level1 = consumer.find(
        study.patient.issuer,
        study.patient.id,
        region=study.anatomical_region.token(),
        modality=study.modalities[0],
    )
    assert study.study_instance_uid in {e.study_instance_uid for e in level1}
    for entry in level1:
        assert study.anatomical_region.code in entry.regions
        assert study.modalities[0] in entry.modalities
    chosen = ImagingConsumer.select(level1, procedure=study.procedure.display)
    assert chosen and all(
        e.study_instance_uid == study.study_instance_uid for e in chosen if e.kind == "manifest"
    )


def test_targeted_query_by_accession_number(default_mado: Seeded) -> None:
    study = next(s for s in default_mado.published["FR"].data.studies if s.accession_number)
    consumer = consumer_in(default_mado, "AT")
    found = consumer.find(
        study.patient.issuer, study.patient.id, accession=study.accession_number, kind="manifest"
    )
    assert study.study_instance_uid in {e.study_instance_uid for e in found}
    assert all(study.accession_number in e.accession_numbers for e in found)


def test_publication_variants_a_with_report_b_manifest_only(default_mado: Seeded) -> None:
    pub = default_mado.published["FR"]
    consumer = consumer_in(default_mado, "AT")
    variants = {s.publication for s in pub.data.studies}
    assert variants == {"A", "B"}
    for study in pub.data.studies:
        docs = consumer.find(study.patient.issuer, study.patient.id, study_uid=study.study_instance_uid)
        kinds = sorted(e.kind for e in docs)
        assert kinds == (["manifest", "report"] if study.publication == "A" else ["manifest"])
        if study.publication == "A":
            report = next(e for e in docs if e.kind == "report")
            assert consumer.retrieve_document(report, "application/pdf").startswith(b"%PDF")


def test_study_spread_over_two_pacs_is_retrieved_from_both(default_mado: Seeded) -> None:
    pub = default_mado.published["FR"]
    study = next(s for s in pub.data.studies if len({x.retrieve_location_uid for x in s.series}) == 2)
    consumer = consumer_in(default_mado, "AT")
    entry = consumer.find(
        study.patient.issuer, study.patient.id, study_uid=study.study_instance_uid, kind="manifest"
    )[0]
    manifest = consumer.retrieve_manifest(entry)
    assert len({s.retrieve_location_uid for s in manifest.series}) == 2
    assert consumer.retrieve_images(default_mado.hcid("FR"), manifest).complete


@pytest.mark.parametrize("fixture", ["default_mado", "default_mcwg"])
def test_kin_only_retrieval_gets_exactly_the_key_images(fixture: str, request: pytest.FixtureRequest) -> None:
    seeded: Seeded = request.getfixturevalue(fixture)
    study = next(s for s in seeded.published["FR"].data.studies if s.key_images)
    consumer = consumer_in(seeded, "AT")
    entry = consumer.find(
        study.patient.issuer, study.patient.id, study_uid=study.study_instance_uid, kind="manifest"
    )[0]
    keys = consumer.retrieve_key_images(seeded.hcid("FR"), consumer.retrieve_manifest(entry))
    assert keys.complete
    assert set(keys.hashes()) == {i.sop_instance_uid for i in study.key_images}


def test_retrieve_url_mode_reaches_the_same_pacs(default_mado: Seeded) -> None:
    study = default_mado.published["FR"].data.studies[0]
    consumer = consumer_in(default_mado, "AT", use_retrieve_url=True)
    entry = consumer.find(
        study.patient.issuer, study.patient.id, study_uid=study.study_instance_uid, kind="manifest"
    )[0]
    assert consumer.retrieve_images(default_mado.hcid("FR"), consumer.retrieve_manifest(entry)).complete


def test_patient_identification_routes_by_issuer(default_mado: Seeded) -> None:
    patient = default_mado.published["FR"].data.patients[0]
    res = consumer_in(default_mado, "AT").identify(patient.issuer, patient.id)
    assert any(i.get("value") == patient.id for i in res["identifier"])


def test_unknown_patient_gives_an_empty_searchset(default_mado: Seeded) -> None:
    issuer = default_mado.fed.topology.country("FR").patient_id_issuer
    assert consumer_in(default_mado, "AT").find(issuer, "NO-SUCH-PATIENT") == []


def test_unknown_issuer_is_refused_with_an_operation_outcome(default_mado: Seeded) -> None:
    r = httpx.get(
        f"{default_mado.gateway('AT')}/fhir/DocumentReference",
        params={"patient.identifier": "urn:oid:2.999.9.9|X", "status": "current"},
    )
    assert r.status_code == 404
    assert r.json()["resourceType"] == "OperationOutcome"


def test_every_country_reaches_every_other(three: Seeded) -> None:
    for a in three.fed.topology.countries:
        study = three.published[a].data.studies[0]
        for b in three.fed.topology.countries:
            if a == b:
                continue
            consumer = consumer_in(three, b)
            entry = consumer.find(
                study.patient.issuer, study.patient.id, study_uid=study.study_instance_uid, kind="manifest"
            )[0]
            assert consumer.retrieve_images(three.hcid(a), consumer.retrieve_manifest(entry)).complete, (a, b)
