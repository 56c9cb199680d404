"""Patient search (PDQm style), CapabilityStatement and health of the registry."""

from __future__ import annotations

import pytest
from registry_catalogue import ALICE, BOB, HCID, PATIENT_ISSUER, Published, assert_r4, entries

from ncp.mhd import patient_reference_id


def test_patient_search_by_national_identifier(published: Published) -> None:
    response = published.get("/Patient", params={"identifier": f"urn:oid:{PATIENT_ISSUER}|{ALICE.id}"})
    assert response.status_code == 200
    bundle = response.json()
    assert_r4(bundle)
    (patient,) = entries(bundle)
    assert patient["id"] == patient_reference_id(ALICE)
    assert patient["identifier"][0] == {**patient["identifier"][0], "value": ALICE.id}


def test_patient_search_without_match_is_empty(published: Published) -> None:
    bundle = published.get("/Patient", params={"identifier": f"urn:oid:2.999.1|{ALICE.id}"}).json()
    assert bundle["total"] == 0


def test_patient_search_by_name_gender_and_birthdate(published: Published) -> None:
    def ids(**params: str) -> set[str]:
        return {p["id"] for p in entries(published.get("/Patient", params=params).json())}

    assert ids(family="mar") == {patient_reference_id(ALICE)}  # case-insensitive starts-with
    assert ids(given="BOB", gender="male") == {patient_reference_id(BOB)}
    assert ids(birthdate="lt1980") == {patient_reference_id(ALICE)}
    assert ids(family="mar,ber") == {patient_reference_id(ALICE), patient_reference_id(BOB)}


@pytest.mark.parametrize(
    ("params", "named"),
    [({"name": "x"}, "name"), ({"gender": "robot"}, "gender"), ({"birthdate": "1970-99"}, "birthdate")],
)
def test_patient_search_rejects_bad_parameters(
    published: Published, params: dict[str, str], named: str
) -> None:
    response = published.get("/Patient", params=params)
    assert response.status_code == 400
    assert named in response.json()["issue"][0]["diagnostics"]


def test_patient_read(published: Published) -> None:
    response = published.get(f"/Patient/{patient_reference_id(BOB)}")
    assert response.status_code == 200
    assert_r4(response.json())
    assert published.get("/Patient/pat-unknown").status_code == 404


def test_capability_statement_lists_the_search_parameters(published: Published) -> None:
    statement = published.get("/metadata").json()
    assert_r4(statement)
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    names = {p["name"] for p in resources["DocumentReference"]["searchParam"]}
    assert {"patient", "patient.identifier", "status", "modality", "anatomical-region", "bodysite"} <= names
    assert {"study-instance-uid", "accession-number", "related", "period", "creation"} <= names
    assert "identifier" in {p["name"] for p in resources["Patient"]["searchParam"]}


def test_health_reports_counts(published: Published) -> None:
    health = published.health()
    assert health == {"status": "ok", "home_community_id": HCID, "documents": 6, "patients": 2}


def test_request_id_is_echoed_on_errors(published: Published) -> None:
    response = published.get("/DocumentReference", headers={"X-Request-Id": "abc-123"})
    assert response.status_code == 400
    assert response.headers["x-request-id"] == "abc-123"
