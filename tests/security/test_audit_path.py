"""The gateway's per-request path (CORS, body timeout, audit, hop context) over real HTTP: made cheaper per
request (issue 16), it must record and answer exactly as before.

One AuditEvent per transaction per hop, with the status answered and why a failure failed, committed before
the client has its whole answer; ids are random UUIDs; times are fixed-width UTC text; a trail written by
the code before (every key, nulls and sorted keys included) still reads; CORS names only listed origins.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ncp.bodytimeout import BodyTimeout
from ncp.cors import CorsMiddleware
from ncp.errors import NcpError, NotFound, dicomweb_error_response
from ncp.gateway.context import Hop
from ncp.gateway.guard import AuditMiddleware
from ncp.security.audit import AuditRecord, AuditStore, note_failure, random_uuid, to_fhir

VIEWER = "https://viewer.example"
PLUS_2 = timezone(timedelta(hours=2))
HCID = "2.999.250.1"
CHUNK = b"x" * 65536
OLD_ID = "8c0e3b55-2a3c-4b53-9a4b-1f5c3f0f9d11"
STUDY = "/wado/homeCommunityId/2.999.250.1/RetrieveLocationUID/2.25.1/studies/2.25.2"


async def instance(request: Request) -> Response:
    """An image answer with a Content-Length whose end-of-body message comes a second after its last byte."""
    hop = Hop.of(request)

    async def body() -> AsyncIterator[bytes]:
        yield CHUNK
        yield CHUNK
        await asyncio.sleep(1.0)  # the client has every announced byte well before this ends

    headers = {"content-length": str(2 * len(CHUNK)), "x-request-id": hop.request_id}
    return StreamingResponse(body(), headers=headers, media_type="application/dicom")


async def warned(request: Request) -> Response:
    return Response(status_code=404, headers={"warning": '299 ncp-fr-border "no such study"'})


async def missing(request: Request) -> Response:
    raise NotFound("Unknown RetrieveLocationUID 2.25.9")


async def crash(request: Request) -> Response:
    raise RuntimeError("a bug")


def handle(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NcpError)
    note_failure(request, exc.message)
    return dicomweb_error_response(exc, "ncp-at-gateway")


@pytest.fixture
def store(tmp_path: Path) -> AuditStore:
    return AuditStore(tmp_path / "audit.sqlite")


@pytest.fixture
def gateway(serve: Callable[..., str], store: AuditStore) -> str:
    """The gateway listener's stack as ``ncp.gateway.app`` builds it, around small endpoints."""
    app = Starlette(
        routes=[
            Route(f"{STUDY}/instances/{{sop}}", instance),
            Route(f"{STUDY}/warned", warned),
            Route(f"{STUDY}/missing", missing),
            Route(f"{STUDY}/crash", crash),
        ],
        middleware=[
            Middleware(CorsMiddleware, origins=(VIEWER,), agent="ncp-at-gateway"),
            Middleware(BodyTimeout),
            Middleware(AuditMiddleware, store=store, source="ncp-at-gateway", home_community_id=HCID),
        ],
        exception_handlers={NcpError: handle},
    )
    app.state.settings, app.state.clients, app.state.guard = SimpleNamespace(), None, None
    app.state.hop_name = "ncp-at-gateway"
    return serve(app)


def only_record(store: AuditStore) -> AuditRecord:
    (record,) = store.records()
    return record


def test_an_image_answer_is_in_the_trail_once_the_client_has_its_last_byte(
    gateway: str, store: AuditStore
) -> None:
    with httpx.Client() as client:
        answer = client.get(f"{gateway}{STUDY}/instances/2.25.3?x=1", headers={"x-request-id": "rid-1"})
        recorded = store.records()  # at once: the end of the body is still a second away on the server
    assert answer.status_code == 200 and len(answer.content) == 2 * len(CHUNK)
    assert [(r.transaction, r.outcome, r.status, r.request_id) for r in recorded] == [
        ("RAD-160", "0", 200, "rid-1")
    ]
    (record,) = recorded
    assert record.query == f"GET {STUDY}/instances/2.25.3?x=1"
    assert (record.action, record.subtype, record.source, record.client) == (
        "R",
        "read",
        "ncp-at-gateway",
        "127.0.0.1",
    )
    assert record.home_community_id == HCID and record.detail is None


def test_without_a_request_id_the_hop_makes_one_and_the_record_carries_it(
    gateway: str, store: AuditStore
) -> None:
    answer = httpx.get(f"{gateway}{STUDY}/instances/2.25.3")
    made = answer.headers["x-request-id"]
    assert uuid.UUID(made).version == 4 and only_record(store).request_id == made


def test_a_refusal_records_the_reason_its_handler_noted(gateway: str, store: AuditStore) -> None:
    assert httpx.get(f"{gateway}{STUDY}/missing").status_code == 404
    record = only_record(store)
    assert (record.outcome, record.status, record.detail) == ("4", 404, "Unknown RetrieveLocationUID 2.25.9")


def test_a_relayed_failure_records_the_next_hops_warning(gateway: str, store: AuditStore) -> None:
    assert httpx.get(f"{gateway}{STUDY}/warned").status_code == 404
    assert only_record(store).detail == '299 ncp-fr-border "no such study"'


def test_an_escaped_exception_is_a_serious_failure(gateway: str, store: AuditStore) -> None:
    assert httpx.get(f"{gateway}{STUDY}/crash").status_code == 500
    record = only_record(store)
    assert (record.outcome, record.status, record.detail) == ("8", 500, "answer aborted: RuntimeError")


def test_a_path_that_is_no_transaction_is_not_audited(gateway: str, store: AuditStore) -> None:
    assert httpx.get(f"{gateway}/elsewhere").status_code == 404
    assert store.count() == 0


def test_only_a_listed_origin_is_named_and_a_request_without_one_is_left_alone(gateway: str) -> None:
    url = f"{gateway}{STUDY}/instances/2.25.3"
    named = httpx.get(url, headers={"origin": VIEWER})
    assert named.headers["access-control-allow-origin"] == VIEWER and "Origin" in named.headers["vary"]
    assert "Warning" in named.headers["access-control-expose-headers"]
    for headers in ({}, {"origin": "https://other.example"}):
        plain = httpx.get(url, headers=headers)
        assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers


def test_preflights_are_answered_before_routing_and_audit(gateway: str, store: AuditStore) -> None:
    asked = {"access-control-request-method": "GET"}
    allowed = httpx.options(f"{gateway}{STUDY}/instances/2.25.3", headers={"origin": VIEWER, **asked})
    refused = httpx.options(
        f"{gateway}{STUDY}/instances/2.25.3", headers={"origin": "https://x.test", **asked}
    )
    assert allowed.status_code == 204 and allowed.headers["access-control-allow-origin"] == VIEWER
    assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
    assert "warning" in refused.headers  # the DICOMweb shape of the gateway's errors
    assert store.count() == 0


def test_event_ids_are_random_version_4_uuids() -> None:
    ids = [random_uuid() for _ in range(2000)]
    parsed = [uuid.UUID(i) for i in ids]
    assert all(
        u.version == 4 and u.variant == uuid.RFC_4122 and str(u) == i
        for u, i in zip(parsed, ids, strict=True)
    )
    assert len(set(ids)) == len(ids)
    assert {i[19] for i in ids} == set("89ab")  # every variant digit occurs: the bits are random


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05.000000Z"),  # no microseconds
        (datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=PLUS_2), "2026-01-02T01:04:05.000007Z"),
    ],
)
def test_times_are_fixed_width_utc_text(store: AuditStore, moment: datetime, text: str) -> None:
    record = AuditRecord("RAD-160", "0", "ncp-at-gateway", timestamp=moment)
    store.record(record)
    assert to_fhir(record)["recorded"] == text
    assert store.count({"date": text}) == 1  # stored as the same text, so date search compares strings


def test_a_trail_written_with_every_key_and_sorted_keys_still_reads(store: AuditStore) -> None:
    """Rows before issue 16 held every field, nulls included, keys sorted: they read back as they were."""
    nulls = ("detail", "patient", "purpose_of_use", "server", "token_id", "user", "user_issuer")
    old = {
        **dict.fromkeys((*nulls, "user_organisation", "user_role")),
        **{"action": "R", "client": "127.0.0.1", "home_community_id": HCID, "id": OLD_ID, "outcome": "0"},
        **{"query": "GET /wado/x", "request_id": "r-old", "source": "ncp-at-gateway", "status": 200},
        **{"subtype": "read", "timestamp": "2026-11-28T09:00:00.000000Z", "transaction": "RAD-160"},
    }
    columns = "id, recorded, txn, action, outcome, source, patient, request_id, record"
    with contextlib.closing(sqlite3.connect(store.db_path)) as conn, conn:
        conn.execute(
            f"INSERT INTO audit_event ({columns}) VALUES (?, ?, 'RAD-160', 'R', '0', ?, NULL, ?, ?)",
            (OLD_ID, old["timestamp"], "ncp-at-gateway", "r-old", json.dumps(old, sort_keys=True)),
        )
    store.record(AuditRecord("RAD-160", "0", "ncp-at-gateway", request_id="r-new", query="GET /wado/y"))
    before, after = store.records()
    assert before == AuditRecord(
        "RAD-160",
        "0",
        "ncp-at-gateway",
        client="127.0.0.1",
        home_community_id=HCID,
        query="GET /wado/x",
        request_id="r-old",
        status=200,
        timestamp=datetime(2026, 11, 28, 9, tzinfo=UTC),
        id=OLD_ID,
    )
    assert (after.request_id, after.query, after.patient, after.user) == ("r-new", "GET /wado/y", None, None)


def test_a_lone_clients_records_are_committed_without_waiting_for_company(
    store: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    monkeypatch.setattr("ncp.security.audit.time.sleep", waits.append)  # the writer's gathering pauses
    for i in range(20):
        store.record(AuditRecord("RAD-160", "0", "ncp-at-gateway", request_id=f"alone-{i}"))
    assert waits == [] and store.count() == 20


def test_concurrent_records_gather_into_shared_commits(
    store: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    monkeypatch.setattr("ncp.security.audit.time.sleep", waits.append)

    async def many() -> None:
        for _ in range(5):
            await asyncio.gather(
                *(store.arecord(AuditRecord("RAD-160", "0", "ncp-at-gateway")) for _ in range(16))
            )

    asyncio.run(many())
    assert waits and set(waits) == {0.002} and store.count() == 80
