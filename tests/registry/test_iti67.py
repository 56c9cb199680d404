"""ITI-67 Find Document References: every parameter finds exactly what it should (MHD 2:3.67, MADO)."""

from __future__ import annotations

from typing import Any

import pytest
from registry_catalogue import (
    ACCESSION_ISSUER,
    ALICE,
    CT,
    MG,
    MR,
    PLACER_ISSUER,
    XR,
    Published,
    alice,
    assert_r4,
    bob,
    codings,
    entries,
)

from ncp.mhd import patient_reference_id

MANIFEST = ("type", "http://loinc.org|18748-4")
REPORT = ("type", "http://loinc.org|85430-7")


def _manifests(published: Published, *studies: Any) -> set[str]:
    return {published.manifests[s.study_instance_uid] for s in studies}


def _reports(published: Published, *studies: Any) -> set[str]:
    return {published.reports[s.study_instance_uid] for s in studies}


def _all_alice(published: Published) -> set[str]:
    return _manifests(published, CT, MR, XR) | _reports(published, CT, MR)


# -- required parameters and strict handling --------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "named"),
    [
        ([("status", "current")], "patient"),
        ([alice()], "status"),
        ([alice(), ("status", "current"), ("colour", "blue")], "colour"),
        ([alice(), ("status", "current"), ("type:text", "imaging")], "type:text"),
        ([alice(), ("status", "current"), ("period", "gt2024-13-01")], "period"),
        ([alice(), ("status", "current"), ("period", "yesterday")], "period"),
        ([alice(), ("status", "current"), ("creation", "ge")], "creation"),
        ([alice(), ("status", "current"), ("_count", "-1")], "_count"),
        ([alice(), ("status", "current"), ("_offset", "x")], "_offset"),
        ([alice(), ("status", "current"), ("_count", "2"), ("_count", "3")], "_count"),
        ([alice(), ("status", "approved")], "status"),
        ([alice(), ("status", "current"), ("modality", "")], "modality"),
        ([alice(), ("status", "current"), ("modality", "|")], "modality"),
        ([("patient", "Practitioner/1"), ("status", "current")], "patient"),
        ([("patient", "Patient/bad id!"), ("status", "current")], "patient"),
        ([alice(), ("status", "current"), ("_sort", "date")], "_sort"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(
    published: Published, query: list[tuple[str, str]], named: str
) -> None:
    response = published.get("/DocumentReference", params=query)
    assert response.status_code == 400
    outcome = response.json()
    assert_r4(outcome)
    assert outcome["issue"][0]["code"] == "invalid"
    assert named in outcome["issue"][0]["diagnostics"]


def test_format_other_than_json_is_not_acceptable(published: Published) -> None:
    response = published.get(
        "/DocumentReference", params=[alice(), ("status", "current"), ("_format", "xml")]
    )
    assert response.status_code == 406
    ok = published.get("/DocumentReference", params=[alice(), ("status", "current"), ("_format", "json")])
    assert ok.status_code == 200


def test_zero_matches_is_an_empty_valid_searchset(published: Published) -> None:
    response = published.search(("patient.identifier", "urn:oid:2.999.9|nobody"))
    assert response.status_code == 200
    bundle = response.json()
    assert_r4(bundle)
    assert (bundle["type"], bundle["total"], bundle.get("entry", [])) == ("searchset", 0, [])


# -- patient and status ------------------------------------------------------------------------------
def test_patient_identifier_and_patient_reference_find_the_same_documents(published: Published) -> None:
    by_identifier = published.ids(alice())
    assert by_identifier == _all_alice(published)
    pid = patient_reference_id(ALICE)
    assert published.ids(("patient", f"Patient/{pid}")) == by_identifier
    assert published.ids(("patient", pid)) == by_identifier
    assert published.ids(("patient", f"{published.base}/Patient/{pid}")) == by_identifier
    assert published.ids(("patient.identifier", ALICE.id)) == by_identifier  # any system
    assert published.ids(bob()) == _manifests(published, MG)


def test_status_filters_and_accepts_alternatives(published: Published) -> None:
    assert published.ids(alice(), status="superseded") == set()
    assert published.ids(alice(), status="current,superseded") == _all_alice(published)


# -- level 1 -----------------------------------------------------------------------------------------
def test_type_tells_manifests_from_reports(published: Published) -> None:
    assert published.ids(alice(), MANIFEST) == _manifests(published, CT, MR, XR)
    assert published.ids(alice(), REPORT) == _reports(published, CT, MR)
    assert published.ids(alice(), ("type", "18748-4")) == _manifests(published, CT, MR, XR)
    assert published.ids(alice(), ("type", "http://snomed.info/sct|18748-4")) == set()
    assert published.ids(alice(), ("type", "|18748-4")) == set()  # explicit "no system"


def test_category_format_and_contenttype(published: Published) -> None:
    category = (
        "category",
        "http://hl7.eu/fhir/eu-health-data-api/CodeSystem/eehrxf-document-priority-category-cs|",
    )
    assert published.ids(alice(), category) == _all_alice(published)  # system|: any code of the system
    kos = ("format", "http://dicom.nema.org/resources/ontology/DCMUID|1.2.840.10008.5.1.4.1.1.88.59")
    assert published.ids(alice(), kos) == _manifests(published, CT, MR, XR)
    assert published.ids(alice(), ("contenttype", "application/pdf")) == _reports(published, CT, MR)


def test_modality_level_one(published: Published) -> None:
    assert published.ids(alice(), ("modality", "CT")) == _manifests(published, CT) | _reports(published, CT)
    assert published.ids(alice(), ("modality", "http://dicom.nema.org/resources/ontology/DCM|MR")) == (
        _manifests(published, MR) | _reports(published, MR)
    )
    assert published.ids(alice(), ("modality", "CR,MR"), MANIFEST) == _manifests(published, MR, XR)  # OR
    assert published.ids(alice(), ("modality", "MG")) == set()  # Bob's


def test_anatomical_region_level_one_and_bodysite_alias(published: Published) -> None:
    head = _manifests(published, MR) | _reports(published, MR)
    assert published.ids(alice(), ("anatomical-region", "774007")) == head
    assert published.ids(alice(), ("anatomical-region", "http://snomed.info/sct|774007")) == head
    assert published.ids(alice(), ("bodysite", "774007")) == head
    assert published.ids(alice(), ("anatomical-region", "61685007")) == _manifests(published, XR)


def test_parameters_combine_with_and(published: Published) -> None:
    assert published.ids(alice(), ("modality", "CT"), ("anatomical-region", "67734004"), MANIFEST) == (
        _manifests(published, CT)
    )
    assert published.ids(alice(), ("modality", "CT"), ("anatomical-region", "774007")) == set()


def test_event_finds_by_procedure_code(published: Published) -> None:
    assert published.ids(alice(), ("event", "http://loinc.org|24627-2")) == (
        _manifests(published, CT) | _reports(published, CT)
    )


# -- level 2: the keys are in the results ------------------------------------------------------------
def test_results_carry_procedure_display_and_laterality(published: Published) -> None:
    bundle = published.search(alice(), MANIFEST, ("modality", "CR")).json()
    (doc,) = entries(bundle)
    displays = [c.get("display") for ev in doc["context"]["event"] for c in ev["coding"]]
    assert "XR Knee" in displays
    assert ("http://snomed.info/sct", "7771000") in codings(doc["context"]["event"])  # left


# -- targeted queries --------------------------------------------------------------------------------
def test_accession_number_with_and_without_issuer(published: Published) -> None:
    mr = _manifests(published, MR) | _reports(published, MR)
    assert published.ids(alice(), ("accession-number", "ACC-MR-2")) == mr
    assert published.ids(alice(), ("accession-number", f"urn:oid:{ACCESSION_ISSUER}|ACC-MR-1")) == mr
    assert published.ids(alice(), ("accession-number", "urn:oid:2.999.1|ACC-MR-1")) == set()
    assert published.ids(alice(), ("accession-number", "ORD-2")) == set()  # a placer number is no accession


@pytest.mark.parametrize(
    "form", ["{uid}", "urn:oid:{uid}", "urn:dicom:uid|{uid}", "urn:dicom:uid|urn:oid:{uid}"]
)
def test_study_instance_uid_in_every_form(published: Published, form: str) -> None:
    value = form.format(uid=CT.study_instance_uid)
    assert published.ids(alice(), ("study-instance-uid", value)) == (
        _manifests(published, CT) | _reports(published, CT)
    )


def test_related_finds_by_placer_order_and_study(published: Published) -> None:
    mr = _manifests(published, MR) | _reports(published, MR)
    assert published.ids(alice(), ("related", f"urn:oid:{PLACER_ISSUER}|ORD-2")) == mr
    assert published.ids(alice(), ("related:identifier", "ORD-2")) == mr
    assert published.ids(alice(), ("related:identifier", f"urn:oid:{MR.study_instance_uid}")) == mr


@pytest.mark.parametrize(
    "form", ["{uid}", "urn:oid:{uid}", "urn:dicom:uid|{uid}", "urn:ietf:rfc:3986|urn:oid:{uid}"]
)
def test_identifier_finds_the_manifest_by_kos_uid(published: Published, form: str) -> None:
    value = form.format(uid=XR.manifest_sop_instance_uid)
    assert published.ids(alice(), ("identifier", value)) == _manifests(published, XR)


def test_id_parameter(published: Published) -> None:
    (doc_id,) = _manifests(published, CT)
    assert published.ids(alice(), ("_id", doc_id)) == {doc_id}


# -- dates -------------------------------------------------------------------------------------------
def test_period_prefixes(published: Published) -> None:
    ct, mr, xr = (_manifests(published, s) for s in (CT, MR, XR))
    assert published.ids(alice(), MANIFEST, ("period", "ge2024-01-01")) == ct | mr
    assert published.ids(alice(), MANIFEST, ("period", "lt2024-01-01")) == xr
    assert published.ids(alice(), MANIFEST, ("period", "2024-06")) == mr
    assert published.ids(alice(), MANIFEST, ("period", "ge2024-01-01"), ("period", "le2024-03-31")) == ct
    assert published.ids(alice(), MANIFEST, ("period", "eq2024-01-15T10:15:00Z")) == ct
    assert published.ids(alice(), MANIFEST, ("period", "2024-01-15T11:15:00+01:00")) == ct  # same instant
    assert published.ids(alice(), MANIFEST, ("period", "2023,2024-06")) == xr | mr
    assert published.ids(alice(), MANIFEST, ("period", "gt2024-06-10")) == set()
    assert published.ids(alice(), MANIFEST, ("period", "sa2024-01-15")) == mr


def test_creation_and_date(published: Published) -> None:
    assert published.ids(alice(), MANIFEST, ("creation", "2024-01-15")) == _manifests(published, CT)
    assert published.ids(alice(), REPORT, ("date", "ge2024-06-11")) == _reports(published, MR)


# -- paging ------------------------------------------------------------------------------------------
def test_count_pages_walk_every_result_once_through_next(published: Published) -> None:
    url: str | None = f"{published.base}/DocumentReference"
    params: list[tuple[str, str]] | None = [alice(), ("status", "current"), ("_count", "2")]
    seen: list[str] = []
    pages = 0
    while url:
        bundle = published.client.get(url, params=params).json()
        assert_r4(bundle)
        assert bundle["total"] == 5
        assert len(bundle.get("entry", [])) <= 2
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        url = next((lk["url"] for lk in bundle["link"] if lk["relation"] == "next"), None)
        params = None
        pages += 1
    assert pages == 3
    assert sorted(seen) == sorted(_all_alice(published))


def test_count_zero_returns_only_the_total(published: Published) -> None:
    bundle = published.search(alice(), ("_count", "0")).json()
    assert bundle["total"] == 5 and "entry" not in bundle


def test_post_search_equals_get(published: Published) -> None:
    form = {"patient.identifier": alice()[1], "status": "current", "modality": "CT"}
    response = published.client.post(f"{published.base}/DocumentReference/_search", data=form)
    assert response.status_code == 200
    assert {e["resource"]["id"] for e in response.json()["entry"]} == published.ids(
        alice(), ("modality", "CT")
    )
    wrong = published.client.post(f"{published.base}/DocumentReference/_search", json=form)
    assert wrong.status_code == 415


def test_every_searchset_validates_as_r4(published: Published) -> None:
    bundle = published.search(alice()).json()
    assert_r4(bundle)
    assert all(e["search"]["mode"] == "match" for e in bundle["entry"])
    assert all(
        e["fullUrl"] == f"{published.base}/DocumentReference/{e['resource']['id']}" for e in bundle["entry"]
    )


def test_read_returns_the_document_and_unknown_is_404(published: Published) -> None:
    (doc_id,) = _manifests(published, MG)
    response = published.get(f"/DocumentReference/{doc_id}")
    assert response.status_code == 200
    assert_r4(response.json())
    assert published.get("/DocumentReference/unknown").status_code == 404
