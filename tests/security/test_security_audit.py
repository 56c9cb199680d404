"""Audit: records round-trip through SQLite, render as BALP AuditEvents valid in FHIR R4, are searchable
over HTTP, and never hold a token (RFC 6750 §5.3)."""

from __future__ import annotations

import base64
import contextlib
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle
from starlette.applications import Starlette
from starlette.routing import Route

from ncp.errors import InvalidRequest
from ncp.security.audit import AuditRecord, AuditStore, audit_search_endpoint, redact, to_fhir, user_fields
from ncp.security.pki import FederationPki
from ncp.security.tokens import TokenVerifier, ncp_id
from ncp.server import free_port

JWT = (
    "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJkci1ob2ZlciIsImlzcyI6InVybjp4Y3dhZG86aWRwOkFUIn0"
    ".c2lnbmF0dXJlLWJ5dGVzLXRoYXQtbXVzdC1uZXZlci1iZS1zdG9yZWQ"
)
T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def query_at_b(**changes: Any) -> AuditRecord:
    """NCP-B's record of an ITI-67 query it forwarded (the client side)."""
    fields: dict[str, Any] = {
        "transaction": "ITI-67",
        "outcome": "0",
        "source": "NCP-B AT gateway",
        "user": "dr-hofer",
        "user_issuer": "urn:xcwado:idp:AT",
        "user_role": "221",
        "user_organisation": "AKH Wien",
        "purpose_of_use": "TREATMENT",
        "patient": "2.999.250.2|FR-0001",
        "home_community_id": "2.999.250.1",
        "request_id": "req-1",
        "query": "GET /fhir/DocumentReference?patient.identifier=urn:oid:2.999.250.2|FR-0001&status=current",
        "status": 200,
        "client": "127.0.0.1",
        "server": "https://127.0.0.1:9443/fhir",
        "token_id": "3f1c",
        "timestamp": T0,
    }
    fields.update(changes)
    return AuditRecord(**fields)


@pytest.fixture
def store(tmp_path: Path) -> AuditStore:
    return AuditStore(tmp_path / "audit" / "audit.db")


# --- the record ------------------------------------------------------------------------------------------


def test_defaults_follow_the_transaction() -> None:
    assert (query_at_b().action, query_at_b().subtype) == ("E", "search-type")
    retrieve = AuditRecord("RAD-160", "0", "NCP-A FR border")
    assert (retrieve.action, retrieve.subtype) == ("R", "read")
    assert AuditRecord("ITI-65", "0", "registry").action == "C"


@pytest.mark.parametrize(
    "changes",
    [
        {"outcome": "1"},
        {"action": "X"},
        {"transaction": ""},
        {"patient": "FR-0001"},
        {"timestamp": datetime(2026, 1, 1)},
    ],
)
def test_invalid_records_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        query_at_b(**changes)


def test_user_fields_come_from_verified_claims(pki: FederationPki) -> None:
    idp = pki.identity_provider("AT")
    token = idp.treatment_token(
        idp.hcp_token("dr-hofer", "221", "AKH Wien", "Hospital", ["ITI-67"]), "FR-0001", "2.999.250.2"
    )
    claims = TokenVerifier(pki.trusted_idps(["AT"]), ncp_id("AT")).verify(token)
    record = AuditRecord("ITI-67", "0", "NCP-B AT gateway", **user_fields(claims))
    assert (record.user, record.user_role, record.user_organisation) == ("dr-hofer", "221", "AKH Wien")
    assert (record.patient, record.purpose_of_use, record.token_id) == (
        "2.999.250.2|FR-0001",
        "TREATMENT",
        claims.token_id,
    )


# --- SQLite ----------------------------------------------------------------------------------------------


def test_records_round_trip_through_sqlite(store: AuditStore) -> None:
    original = query_at_b()
    store.record(original)
    assert store.records() == [original]


def test_records_survive_reopening_the_store(store: AuditStore) -> None:
    original = query_at_b()
    store.record(original)
    assert AuditStore(store.db_path).records() == [original]


def test_store_uses_write_ahead_logging(store: AuditStore) -> None:
    with contextlib.closing(sqlite3.connect(store.db_path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_recording_the_same_event_twice_keeps_one(store: AuditStore) -> None:
    event = query_at_b()
    store.record(event)
    store.record(event)
    assert store.count() == 1


def test_concurrent_recording_from_threads_loses_nothing(store: AuditStore) -> None:
    def work(n: int) -> None:
        for i in range(25):
            store.record(query_at_b(request_id=f"t{n}-{i}"))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count() == 200
    assert len({r.request_id for r in store.records({"_count": "1000"})}) == 200


def test_search_correlates_hops_by_request_id(store: AuditStore) -> None:
    at_b = query_at_b()
    at_a = query_at_b(source="NCP-A FR border", client="AT", timestamp=T0 + timedelta(milliseconds=5))
    store.record(at_a)
    store.record(at_b)
    store.record(query_at_b(request_id="req-2"))
    hops = store.search({"request-id": "req-1"})
    assert [e["source"]["site"] for e in hops] == ["NCP-B AT gateway", "NCP-A FR border"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"patient": "urn:oid:2.999.250.2|FR-0001"}, 2),
        ({"patient": "2.999.250.2|FR-0001"}, 2),
        ({"patient": "2.999.250.2|FR-000"}, 0),
        ({"outcome": "4"}, 1),
        ({"subtype": "urn:ihe:event-type-code|RAD-160"}, 1),
        ({"subtype": "ITI-67"}, 2),
        ({"action": "R"}, 1),
        ({"source": "NCP-A FR border"}, 1),
        ({"date": "ge2026-11-28T09:00:01Z"}, 1),
        ({"date": "lt2026-11-28T09:00:01Z"}, 2),
        ({"_count": "1"}, 1),
    ],
)
def test_search_parameters(store: AuditStore, params: dict[str, str], expected: int) -> None:
    store.record(query_at_b())
    store.record(query_at_b(request_id="req-2"))
    store.record(
        AuditRecord(
            "RAD-160",
            "4",
            "NCP-A FR border",
            patient="2.999.250.2|FR-0002",
            detail="study not in treatment context",
            status=403,
            timestamp=T0 + timedelta(seconds=2),
        )
    )
    assert len(store.search(params)) == expected


@pytest.mark.parametrize(
    "params",
    [{"bogus": "1"}, {"_count": "0"}, {"_count": "x"}, {"date": "yesterday"}, {"date": "ne2026-01-01"}],
)
def test_bad_search_parameters_are_invalid_requests(store: AuditStore, params: dict[str, str]) -> None:
    with pytest.raises(InvalidRequest):
        store.search(params)


# --- no tokens, ever -------------------------------------------------------------------------------------


def test_tokens_never_reach_the_database(store: AuditStore) -> None:
    store.record(
        query_at_b(
            query=f"GET /wado/studies/1.2.3?access_token={JWT}&x=1",
            detail=f"refused Authorization: Bearer {JWT}",
            client=f"peer {JWT}",
        )
    )
    stored = store.records()[0]
    assert stored.query == "GET /wado/studies/1.2.3?access_token=REDACTED&x=1"
    assert stored.detail == "refused Authorization: Bearer REDACTED"
    signature = JWT.rsplit(".", 1)[1].encode()
    files = [p for p in store.db_path.parent.iterdir() if p.is_file()]
    assert files and all(signature not in p.read_bytes() for p in files)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"token={JWT}", "token=REDACTED"),
        ("/x?a=1&assertion=PHNhbWw6QXNzZXJ0aW9u&b=2", "/x?a=1&assertion=REDACTED&b=2"),
        (f"bad signature on {JWT}", "bad signature on REDACTED"),
        ("<saml2:Assertion ID='x'>secret</saml2:Assertion> left", "REDACTED left"),
        ("GET /fhir/Patient?identifier=urn:oid:1.2|X", "GET /fhir/Patient?identifier=urn:oid:1.2|X"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


# --- FHIR AuditEvent (BALP) ------------------------------------------------------------------------------

RECORDS: dict[str, Callable[[], AuditRecord]] = {
    "query success": query_at_b,
    "query denied": lambda: query_at_b(outcome="4", status=403, detail="token lacks scope ITI-67"),
    "retrieve success": lambda: query_at_b(transaction="RAD-160", query="GET /wado/studies/1.2.3"),
    "retrieve failed upstream": lambda: query_at_b(transaction="ITI-68", outcome="8", status=502),
    "anonymous refusal": lambda: AuditRecord("RAD-160", "4", "NCP-A FR border", status=401, detail="expired"),
    "publish": lambda: AuditRecord("ITI-65", "0", "registry FR", query="POST /fhir", client="10.0.0.7"),
    "unknown transaction": lambda: AuditRecord("XX-1", "12", "gateway"),
}


@pytest.mark.parametrize("case", RECORDS)
def test_audit_events_validate_as_fhir_r4(case: str) -> None:
    event = to_fhir(RECORDS[case]())
    AuditEvent.model_validate(event)


def codes(concepts: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in concepts}


def agent_codes(event: dict[str, Any]) -> list[str]:
    return [a["type"]["coding"][0]["code"] for a in event["agent"]]


def test_query_event_follows_balp_patient_query() -> None:
    event = to_fhir(query_at_b())
    assert event["meta"]["profile"] == [
        "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientQuery"
    ]
    assert event["type"]["code"] == "rest" and event["action"] == "E" and event["outcome"] == "0"
    assert codes(event["subtype"]) == {
        ("http://hl7.org/fhir/restful-interaction", "search-type"),
        ("urn:ihe:event-type-code", "ITI-67"),
    }
    assert agent_codes(event)[:3] == ["110153", "110152", "IRCP"]  # client Source, server Destination
    user = event["agent"][2]
    assert user["who"]["identifier"] == {"value": "dr-hofer", "system": "urn:xcwado:idp:AT"}
    assert user["requestor"] is True and user["role"][0]["coding"][0]["code"] == "221"
    assert user["purposeOfUse"][0]["coding"][0]["code"] == "TREATMENT"
    by_role = {e["role"]["code"]: e for e in event["entity"] if "role" in e}
    assert by_role["1"]["what"]["identifier"] == {"system": "urn:oid:2.999.250.2", "value": "FR-0001"}
    assert base64.b64decode(by_role["24"]["query"]).decode() == query_at_b().query
    xrid = [e for e in event["entity"] if e["type"]["code"] == "XrequestId"]
    assert xrid[0]["what"]["identifier"]["value"] == "req-1"


def test_read_event_swaps_client_and_server_roles() -> None:
    event = to_fhir(query_at_b(transaction="RAD-160", query="GET /wado/studies/1.2.3"))
    assert event["action"] == "R"
    assert event["meta"]["profile"][0].endswith("IHE.BasicAudit.PatientRead")
    assert agent_codes(event)[:2] == ["110152", "110153"]
    data = [e for e in event["entity"] if e.get("role", {}).get("code") == "4"]
    assert data[0]["what"]["display"] == "GET /wado/studies/1.2.3"


def test_failures_do_not_claim_a_success_profile_and_say_why() -> None:
    event = to_fhir(query_at_b(outcome="4", status=403, detail="request patient differs"))
    assert "meta" not in event
    assert event["outcomeDesc"] == "HTTP 403: request patient differs"


def test_home_community_and_organisation_are_agents() -> None:
    event = to_fhir(query_at_b())
    hcid = [a for a in event["agent"] if a["type"]["coding"][0]["code"] == "homeCommunityId"]
    assert hcid[0]["who"]["identifier"]["value"] == "urn:oid:2.999.250.1"
    org = [a for a in event["agent"] if a["type"]["coding"][0]["code"] == "PROV"]
    assert org[0]["who"]["display"] == "AKH Wien"


# --- HTTP search -------------------------------------------------------------------------------------


@pytest.fixture
def audit_base(serve: Callable[..., str], store: AuditStore) -> str:
    store.record(query_at_b())
    store.record(query_at_b(source="NCP-A FR border", timestamp=T0 + timedelta(seconds=1)))
    store.record(query_at_b(request_id="req-2", outcome="4", status=403))
    port = free_port()
    base = f"http://127.0.0.1:{port}"  # the configured base its links start with
    app = Starlette(routes=[Route("/fhir/AuditEvent", audit_search_endpoint(store, base=base))])
    assert serve(app, port=port) == base
    return base + "/fhir/AuditEvent"


def test_search_endpoint_returns_a_searchset_bundle(audit_base: str) -> None:
    answer = httpx.get(audit_base, params={"request-id": "req-1", "patient": "urn:oid:2.999.250.2|FR-0001"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/fhir+json"
    bundle = answer.json()
    Bundle.model_validate(bundle)
    assert bundle["type"] == "searchset" and bundle["total"] == 2
    assert [e["resource"]["source"]["site"] for e in bundle["entry"]] == [
        "NCP-B AT gateway",
        "NCP-A FR border",
    ]
    first = bundle["entry"][0]
    assert first["fullUrl"] == f"{audit_base}/{first['resource']['id']}"


def test_search_endpoint_total_counts_beyond_the_page(audit_base: str) -> None:
    bundle = httpx.get(audit_base, params={"_count": "1"}).json()
    assert (bundle["total"], len(bundle["entry"])) == (3, 1)


def test_search_endpoint_filters_by_outcome(audit_base: str) -> None:
    bundle = httpx.get(audit_base, params={"outcome": "4"}).json()
    assert [e["resource"]["outcome"] for e in bundle["entry"]] == ["4"]


@pytest.mark.parametrize(
    "query", ["bogus=1", "_count=5000", "outcome=0&outcome=4", "request-id=", "date=soon"]
)
def test_search_endpoint_bad_parameters_are_400_operation_outcomes(
    audit_base: str, store: AuditStore, query: str
) -> None:
    answer = httpx.get(f"{audit_base}?{query}")
    assert answer.status_code == 400
    assert answer.json()["resourceType"] == "OperationOutcome"
    assert store.count() == 3
