"""ITI-65 Provide Document Bundle: validated whole, stored atomically, replacements supersede."""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from registry_catalogue import (
    ALICE,
    BOB,
    CT,
    HCID,
    MR,
    PATIENT_ISSUER,
    Published,
    alice,
    assert_r4,
    bundle_for,
    entries,
    manifest_doc,
    post_bundle,
)

from ncp.mhd import HCID_EXTENSION, patient_reference_id, provide_document_bundle


def _entries_of(bundle: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [e for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type]


def test_transaction_response_has_one_entry_per_request_entry(
    start_registry: Callable[[], str], http: httpx.Client
) -> None:
    base = start_registry()
    bundle = bundle_for(ALICE)
    response = post_bundle(http, base, bundle)
    assert response.status_code == 200
    answer = response.json()
    assert_r4(answer)
    assert answer["type"] == "transaction-response"
    assert len(answer["entry"]) == len(bundle["entry"])
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    for kind, entry in zip(kinds, answer["entry"], strict=True):
        assert entry["response"]["status"] == "201 Created"
        assert f"/{kind}/" in entry["response"]["location"]
    assert Published(base, http).health()["documents"] == 5  # Alice: 3 manifests + 2 reports


def test_patient_is_created_once_then_updated(start_registry: Callable[[], str], http: httpx.Client) -> None:
    pub = Published(start_registry(), http)
    pub.post(bundle_for(ALICE))
    again = pub.post(provide_document_bundle(ALICE, [manifest_doc(CT, b"other bytes")], source_oid=HCID))
    patient_entry = next(e for e in again.json()["entry"] if "/Patient/" in e["response"]["location"])
    assert patient_entry["response"]["status"] == "200 OK"
    assert pub.health()["patients"] == 1


def test_stored_documents_point_at_this_registry_and_its_community(published: Published) -> None:
    doc_id = published.manifests[CT.study_instance_uid]
    doc = published.get(f"/DocumentReference/{doc_id}").json()
    assert doc["content"][0]["attachment"]["url"] == f"{published.base}/Binary/{doc_id}"
    assert {"url": HCID_EXTENSION, "valueOid": f"urn:oid:{HCID}"} in doc["extension"]
    assert doc["subject"]["reference"] == f"Patient/{patient_reference_id(ALICE)}"
    assert doc["meta"]["versionId"] == "1"


def test_resubmitted_master_identifier_supersedes_the_old_document(published: Published) -> None:
    old_id = published.manifests[CT.study_instance_uid]
    new_kos = b"DICM-KOS: a corrected manifest"
    response = published.post(provide_document_bundle(ALICE, [manifest_doc(CT, new_kos)], source_oid=HCID))
    assert response.status_code == 200, response.text
    study = ("study-instance-uid", CT.study_instance_uid)
    type_manifest = ("type", "http://loinc.org|18748-4")
    (new_id,) = published.ids(alice(), study, type_manifest)
    assert new_id != old_id
    assert published.ids(alice(), study, type_manifest, status="superseded") == {old_id}
    new = published.get(f"/DocumentReference/{new_id}").json()
    assert {"code": "replaces", "target": {"reference": f"DocumentReference/{old_id}"}} in new["relatesTo"]
    assert published.get(f"/Binary/{new_id}").content == new_kos
    old = published.get(f"/Binary/{old_id}")
    assert old.status_code == 410  # MHD Table 3.68.4.2.2-1: deprecated -> 410
    assert new_id in old.json()["issue"][0]["diagnostics"]


def test_explicit_replacement_with_put_superseded_entry(published: Published) -> None:
    """The UpdateDocumentRefs slice (MHD 2:3.65.4.1.2.3): relatesTo replaces + PUT status superseded."""
    old_id = published.manifests[MR.study_instance_uid]
    old = published.get(f"/DocumentReference/{old_id}").json()
    doc, reps = manifest_doc(MR, b"DICM-KOS: MR v2")
    doc["masterIdentifier"] = {"system": "urn:ietf:rfc:3986", "value": "urn:oid:2.25.42"}
    doc["identifier"] = [doc["masterIdentifier"]]
    doc["relatesTo"] = [{"code": "replaces", "target": {"reference": f"DocumentReference/{old_id}"}}]
    bundle = provide_document_bundle(ALICE, [(doc, reps)], source_oid=HCID)
    old["status"] = "superseded"
    bundle["entry"].append(
        {"resource": old, "request": {"method": "PUT", "url": f"DocumentReference/{old_id}"}}
    )
    response = published.post(bundle)
    assert response.status_code == 200, response.text
    assert response.json()["entry"][-1]["response"]["status"] == "200 OK"
    stored = published.get(f"/DocumentReference/{old_id}").json()
    assert stored["status"] == "superseded"


def test_posted_patient_is_matched_on_its_identifier(published: Published) -> None:
    bundle = provide_document_bundle(ALICE, [manifest_doc(CT, b"v3")], source_oid=HCID)
    patient = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    patient["request"] = {"method": "POST", "url": "Patient"}
    del patient["resource"]["id"]
    for doc in _entries_of(bundle, "DocumentReference"):
        doc["resource"]["subject"] = {"reference": patient["fullUrl"]}
    response = published.post(bundle)
    assert response.status_code == 200, response.text
    assert published.health()["patients"] == 2
    location = next(e for e in response.json()["entry"] if "/Patient/" in e["response"]["location"])
    assert location["response"]["location"].endswith(patient_reference_id(ALICE))


def test_subject_by_business_identifier_resolves_to_the_known_patient(published: Published) -> None:
    bundle = provide_document_bundle(ALICE, [manifest_doc(CT, b"v4")], source_oid=HCID)
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Patient"]
    for doc in _entries_of(bundle, "DocumentReference"):
        doc["resource"]["subject"] = {
            "identifier": {"system": f"urn:oid:{PATIENT_ISSUER}", "value": ALICE.id}
        }
    assert published.post(bundle).status_code == 200


# -- bad bundles: a clear 4xx naming the problem, and nothing stored --------------------------------
def _drop_binaries(b: dict[str, Any]) -> None:
    b["entry"] = [e for e in b["entry"] if e["resource"]["resourceType"] != "Binary"]


def _break_second_document(b: dict[str, Any]) -> None:
    _entries_of(b, "DocumentReference")[1]["resource"]["content"][0]["attachment"]["url"] = "urn:uuid:nowhere"


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(b: dict[str, Any]) -> None:
        target: Any = b
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _on_doc(mutate: Callable[[dict[str, Any]], None], index: int = 0) -> Callable[[dict[str, Any]], None]:
    return lambda b: mutate(_entries_of(b, "DocumentReference")[index]["resource"])


def _on_binary(mutate: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    return lambda b: mutate(_entries_of(b, "Binary")[0]["resource"])


def _duplicate_full_url(b: dict[str, Any]) -> None:
    first, second = _entries_of(b, "DocumentReference")[:2]
    second["fullUrl"] = first["fullUrl"]


BAD_BUNDLES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "duplicate fullUrl": (_duplicate_full_url, "fullUrl"),
    "batch, not transaction": (_set(("type",), "batch"), "transaction"),
    "not FHIR R4": (_on_doc(_set(("date",), "yesterday")), "date"),
    "unknown element": (_on_doc(_set(("colour",), "red")), "colour"),
    "no SubmissionSet": (lambda b: b["entry"].pop(0), "SubmissionSet"),
    "attachment without Binary": (_drop_binaries, "not a Binary of the Bundle"),
    "second document broken": (_break_second_document, "entry["),
    "content type differs from Binary": (_on_binary(_set(("contentType",), "image/png")), "contentType"),
    "wrong hash": (
        _on_doc(_set(("content", 0, "attachment", "hash"), "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")),
        "hash",
    ),
    "wrong size": (_on_doc(_set(("content", 0, "attachment", "size"), 1)), "size"),
    "status not current": (_on_doc(_set(("status",), "superseded")), "status must be current"),
    "no masterIdentifier": (_on_doc(lambda d: d.pop("masterIdentifier")), "masterIdentifier"),
    "unknown subject": (_on_doc(_set(("subject",), {"reference": "Patient/nobody"})), "Patient/nobody"),
    "orphan Binary": (
        lambda b: b["entry"].append(
            {
                "fullUrl": "urn:uuid:0b7c3a7e-0000-4000-8000-000000000001",
                "resource": {"resourceType": "Binary", "contentType": "text/plain", "data": "eA=="},
                "request": {"method": "POST", "url": "Binary"},
            }
        ),
        "not the content of any DocumentReference",
    ),
    "replaces an unknown document": (
        _on_doc(
            _set(("relatesTo",), [{"code": "replaces", "target": {"reference": "DocumentReference/nope"}}])
        ),
        "DocumentReference/nope",
    ),
    "foreign resource": (
        lambda b: b["entry"].append(
            {
                "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
                "request": {"method": "POST", "url": "Observation"},
            }
        ),
        "Observation",
    ),
    "Folder": (
        lambda b: b["entry"].append(
            {
                "resource": {
                    **b["entry"][0]["resource"],
                    "code": {
                        "coding": [
                            {
                                "system": "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes",
                                "code": "folder",
                            }
                        ]
                    },
                },
                "request": {"method": "POST", "url": "List"},
            }
        ),
        "Folders",
    ),
}


@pytest.mark.parametrize("case", list(BAD_BUNDLES))
def test_bad_bundle_is_refused_and_changes_nothing(published: Published, case: str) -> None:
    mutate, expected = BAD_BUNDLES[case]
    before = published.health()
    before_search = published.search(alice()).json()["total"]
    # Alice's documents again: accepted by mistake, they would supersede the stored ones
    bundle = copy.deepcopy(bundle_for(ALICE))
    mutate(bundle)
    response = published.post(bundle)
    assert 400 <= response.status_code < 500, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert_r4(outcome)
    assert expected in outcome["issue"][0]["diagnostics"]
    assert published.health() == before
    assert published.search(alice()).json()["total"] == before_search
    assert published.search(alice(), status="superseded").json()["total"] == 0


def test_bodies_that_are_not_fhir_json_are_refused(published: Published) -> None:
    xml = published.client.post(
        published.base, content=b"<Bundle/>", headers={"Content-Type": "application/fhir+xml"}
    )
    assert xml.status_code == 415
    garbage = published.client.post(
        published.base, content=b"{not json", headers={"Content-Type": "application/fhir+json"}
    )
    assert garbage.status_code == 400
    array = published.client.post(
        published.base, content=b"[]", headers={"Content-Type": "application/fhir+json"}
    )
    assert array.status_code == 400
    patient = published.client.post(published.base, json={"resourceType": "Patient"})
    assert patient.status_code == 400 and "transaction" in patient.json()["issue"][0]["diagnostics"]


def test_invalid_base64_binary_is_refused(published: Published) -> None:
    bundle = bundle_for(BOB)
    _entries_of(bundle, "Binary")[0]["resource"]["data"] = base64.b64encode(b"ok").decode() + "!!"
    response = published.post(bundle)
    assert response.status_code == 400


def test_two_documents_with_one_master_identifier_are_refused(published: Published) -> None:
    doc, reps = manifest_doc(CT, b"a")
    twin, twin_reps = manifest_doc(CT, b"b")
    response = published.post(
        provide_document_bundle(ALICE, [(doc, reps), (twin, twin_reps)], source_oid=HCID)
    )
    assert response.status_code == 400
    assert "masterIdentifier" in response.json()["issue"][0]["diagnostics"]


def test_unchanged_store_after_refusal_keeps_answering_retrievals(published: Published) -> None:
    doc_id = published.manifests[CT.study_instance_uid]
    published.post({"resourceType": "Bundle", "type": "transaction", "entry": []})
    assert published.get(f"/Binary/{doc_id}").status_code == 200
    assert entries(published.search(alice(), ("_id", doc_id)).json())[0]["status"] == "current"
