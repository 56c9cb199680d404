"""ncp.mhd builds MADO/MHD resources that are valid FHIR R4 and carry every level-1/level-2 key."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from registry_catalogue import (
    ACCESSION_ISSUER,
    ALICE,
    CT,
    CT_REPORT,
    HCID,
    MR,
    PATIENT_ISSUER,
    PLACER_ISSUER,
    XR,
    assert_r4,
    codings,
    manifest_doc,
    post_bundle,
    report_doc,
)

from ncp.codes import DCM, SCT
from ncp.dicom.uids import deterministic_uid
from ncp.errors import InvalidRequest
from ncp.mhd import (
    BODYSITE_EXTENSION,
    DICOM_UID_SYSTEM,
    HCID_EXTENSION,
    MHD_LIST_TYPES,
    MODALITY_EXTENSION,
    RFC3986,
    fhir_datetime,
    patient_reference_id,
    patient_resource,
    provide_document_bundle,
    validate_resource,
)
from ncp.registry.index import document_tokens

IHE = Path(__file__).resolve().parents[1] / "data" / "ihe"  # IHE's own MADO samples (CC BY 4.0)


def _related(doc: dict, type_code: str) -> list[dict]:
    return [
        r["identifier"]
        for r in doc["context"]["related"]
        if type_code in {c["code"] for c in r["identifier"]["type"]["coding"]}
    ]


def test_manifest_document_reference_is_valid_r4_and_follows_the_mado_envelope() -> None:
    doc, _ = manifest_doc(CT)
    assert_r4(doc)
    assert len(doc["content"]) == 1  # MHD Minimal: content 1..1
    assert doc["status"] == "current"
    assert ("http://loinc.org", "18748-4") in codings([doc["type"]])
    content = doc["content"][0]
    assert content["attachment"]["contentType"] == "application/dicom"
    assert {"language", "creation", "size", "hash"} <= content["attachment"].keys()
    assert (content["format"]["system"], content["format"]["code"]) == (
        "http://dicom.nema.org/resources/ontology/DCMUID",
        "1.2.840.10008.5.1.4.1.1.88.59",
    )
    assert doc["context"]["period"]["start"] == "2024-01-15T10:15:00Z"
    assert doc["context"]["facilityType"] and doc["context"]["practiceSetting"]


@pytest.mark.parametrize(
    ("doc", "uid"),
    [
        (manifest_doc(CT)[0], CT.manifest_sop_instance_uid),  # MADO: the KOS SOP Instance UID
        (report_doc(CT_REPORT)[0], deterministic_uid("imaging-report", CT_REPORT.id)),
    ],
    ids=["manifest", "report"],
)
def test_unique_id_is_an_mhd_unique_id_repeated_in_identifier(doc: dict, uid: str) -> None:
    """MHD IHE.MHD.UniqueIdIdentifier: use usual, system urn:ietf:rfc:3986, value urn:oid:...; MADO's
    invariant mado-docref-1 repeats it in ``identifier``, where ``official`` is MHD's entryUUID slice."""
    master = doc["masterIdentifier"]
    assert (master["use"], master["system"]) == ("usual", RFC3986)
    assert master["value"] == f"urn:oid:{uid}"
    assert master in doc["identifier"]
    assert all(i.get("use") != "official" for i in doc["identifier"])


def test_manifest_carries_study_accession_and_placer_identifiers_with_issuers() -> None:
    doc, _ = manifest_doc(MR)  # one order, two accessions
    (study,) = _related(doc, "110180")
    assert study == {**study, "system": DICOM_UID_SYSTEM, "value": f"urn:oid:{MR.study_instance_uid}"}
    accessions = _related(doc, "121022")
    assert {(a["system"], a["value"]) for a in accessions} == {
        (f"urn:oid:{ACCESSION_ISSUER}", "ACC-MR-1"),
        (f"urn:oid:{ACCESSION_ISSUER}", "ACC-MR-2"),
    }
    assert all("ACSN" in {c["code"] for c in a["type"]["coding"]} for a in accessions)
    (order,) = _related(doc, "urn:ihe:iti:xds:2013:order")
    assert (order["system"], order["value"]) == (f"urn:oid:{PLACER_ISSUER}", "ORD-2")


def test_manifest_events_hold_modality_region_procedure_and_laterality() -> None:
    doc, _ = manifest_doc(XR)
    events = codings(doc["context"]["event"])
    assert (DCM, "CR") in events
    assert (SCT, "61685007") in events  # lower limb
    assert (SCT, "7771000") in events  # left (MCWG 2.6)
    displays = [c["display"] for ev in doc["context"]["event"] for c in ev["coding"]]
    assert "XR Knee" in displays  # level-2 key: procedure display name


def test_manifest_has_mado_extensions_and_home_community() -> None:
    doc, _ = manifest_doc(CT)
    by_url = {e["url"]: e for e in doc["extension"]}
    assert by_url[MODALITY_EXTENSION]["valueCodeableConcept"]["coding"][0]["code"] == "CT"
    assert (
        by_url[BODYSITE_EXTENSION]["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] == "67734004"
    )
    assert by_url[HCID_EXTENSION]["valueOid"] == f"urn:oid:{HCID}"


def test_manifest_needs_the_kos_sop_instance_uid() -> None:
    with pytest.raises(ValueError, match="manifest_sop_instance_uid"):
        manifest_doc(dataclasses.replace(CT, manifest_sop_instance_uid=""))


def test_report_document_reference_carries_one_content_the_pdf() -> None:
    """MHD Minimal: content 1..1 and no docStatus (0..0); the FHIR rendering is not published."""
    doc, contents = report_doc(CT_REPORT)
    assert_r4(doc)
    assert ("http://loinc.org", "85430-7") in codings([doc["type"]])
    assert "docStatus" not in doc
    assert [c["attachment"]["contentType"] for c in doc["content"]] == ["application/pdf"]
    assert [ct for ct, _ in contents] == ["application/pdf"]
    assert _related(doc, "110180")[0]["value"] == f"urn:oid:{CT.study_instance_uid}"
    assert doc["context"]["period"] == manifest_doc(CT)[0]["context"]["period"]


def test_patient_resource_uses_urn_oid_identifier_system() -> None:
    patient = patient_resource(ALICE)
    assert_r4(patient)
    assert patient["id"] == patient_reference_id(ALICE)
    assert patient["identifier"][0]["system"] == f"urn:oid:{PATIENT_ISSUER}"
    assert patient["birthDate"] == "1970-01-02"


def test_provide_document_bundle_is_a_valid_iti65_transaction() -> None:
    docs = [manifest_doc(CT), report_doc(CT_REPORT)]
    bundle = provide_document_bundle(ALICE, docs, source_oid=HCID)
    assert_r4(bundle)
    assert bundle["type"] == "transaction"
    by_type: dict[str, list[dict]] = {}
    for entry in bundle["entry"]:
        assert entry["fullUrl"].startswith("urn:uuid:")
        by_type.setdefault(entry["resource"]["resourceType"], []).append(entry)
    (submission_set,) = by_type["List"]
    assert submission_set["resource"]["code"]["coding"][0] == {
        "system": MHD_LIST_TYPES,
        "code": "submissionset",
    }
    assert [i["item"]["reference"] for i in submission_set["resource"]["entry"]] == [
        e["fullUrl"] for e in by_type["DocumentReference"]
    ]
    assert by_type["Patient"][0]["request"] == {
        "method": "PUT",
        "url": f"Patient/{patient_reference_id(ALICE)}",
    }
    binaries = {e["fullUrl"]: e["resource"] for e in by_type["Binary"]}
    assert len(binaries) == 2  # the KOS and the report's PDF
    for entry in by_type["DocumentReference"]:
        for content in entry["resource"]["content"]:
            attachment = content["attachment"]
            binary = binaries[attachment["url"]]
            data = base64.b64decode(binary["data"])
            assert binary["contentType"] == attachment["contentType"]
            assert attachment["size"] == len(data)
            assert attachment["hash"] == base64.b64encode(hashlib.sha1(data).digest()).decode()


def test_provide_document_bundle_refuses_contents_without_bytes() -> None:
    doc, _ = manifest_doc(CT)
    with pytest.raises(ValueError, match="application/dicom"):
        provide_document_bundle(ALICE, [(doc, [("application/pdf", b"x")])], source_oid=HCID)


def test_validate_resource_reports_the_offending_element() -> None:
    doc, _ = manifest_doc(CT)
    with pytest.raises(InvalidRequest, match="date"):
        validate_resource({**doc, "date": "last tuesday"})
    with pytest.raises(InvalidRequest, match="colour"):
        validate_resource({**doc, "colour": "red"})
    with pytest.raises(InvalidRequest, match="unknown FHIR R4 resourceType"):
        validate_resource({"resourceType": "NoSuchThing"})
    with pytest.raises(InvalidRequest, match="resourceType is missing"):
        validate_resource({"id": "x"})


def test_fhir_datetime_from_dicom_date_and_time() -> None:
    assert fhir_datetime("20240115", "101500.123") == "2024-01-15T10:15:00Z"
    assert fhir_datetime("20240115", "") == "2024-01-15"
    assert fhir_datetime("20240115", "1015") == "2024-01-15T10:15:00Z"


def test_ihe_mado_sample_document_reference_validates_and_indexes() -> None:
    """IHE's MADO sample DocumentReference (tests/data/ihe) is R4-valid and its keys are search keys."""
    sample = json.loads((IHE / "mado-kos-1.2.250.1.59.40211.22756022.2.1.101-docref.json").read_text())
    validate_resource(sample)
    validate_resource(json.loads((IHE / "mado-pat-mrn--1097192655-patient.json").read_text()))
    tokens = document_tokens(sample)
    assert ("modality", DCM, "CT") in tokens
    assert ("study-instance-uid", "urn:ietf:rfc:3986", "1.2.250.1.59.40211.22756022.2.1.101") in tokens
    assert ("accession-number", "http://example.org/fhir/ris-ids", "1731954284869428") in tokens


def test_iti65_response_locates_each_binary_at_its_document(
    start_registry: Callable[[], str], http: httpx.Client
) -> None:
    """The transaction-response names a created Binary by the ITI-68 URL of its document, never
    ``Binary/`` with an empty id (MHD 2:3.65.4.2.2: one entry per request entry, each with a location)."""
    base = start_registry()
    bundle = provide_document_bundle(ALICE, [manifest_doc(CT), report_doc(CT_REPORT)], source_oid=HCID)
    answer = post_bundle(http, base, bundle).json()
    pairs = zip(bundle["entry"], answer["entry"], strict=True)
    located = {request["fullUrl"]: response["response"]["location"] for request, response in pairs}
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] != "DocumentReference":
            continue
        doc_id = located[entry["fullUrl"]].split("/DocumentReference/")[1].split("/")[0]
        (content,) = entry["resource"]["content"]
        assert located[content["attachment"]["url"]] == f"{base}/Binary/{doc_id}"
        retrieved = http.get(located[content["attachment"]["url"]], headers={"Accept": "*/*"})
        assert retrieved.status_code == 200 and len(retrieved.content) == content["attachment"]["size"]
