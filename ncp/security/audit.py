"""Durable audit trail: one record per transaction per hop, rendered as IHE BALP FHIR AuditEvents.

Records live in SQLite (WAL, ``synchronous=FULL``), written by one thread per store with group commit.
Hops are correlated by ``X-Request-Id`` (BALP ``entity[transaction]`` of type ``XrequestId``). Tokens and
assertions are never stored: query strings and free text are scrubbed of bearer values and JWT-shaped
strings before they reach the database (RFC 6750 §5.3, SMART Imaging "without exposing
credentials in logs").

:func:`to_fhir` follows IHE ITI Basic Audit Log Patterns: ``type`` = ``audit-event-type#rest``, subtype = the
FHIR restful interaction plus ``urn:ihe:event-type-code#<transaction>``; queries (action E) carry the
client as Source Role ID (DCM 110153) and the server as Destination (110152) with the request base64 in
``entity[query].query``; reads (action R) swap the two roles (BALP ``PatientRead``). The user agent is
the IUA-style ``IRCP`` agent with role and purpose of use; the patient is ``entity[patient]``.
Only successful events claim a BALP profile in ``meta.profile``, since those profiles fix outcome 0. A
failure says why twice: R4 ``outcomeDesc`` ("HTTP 403: <reason>") and an ``entity.detail`` of type
``failure-reason`` on the entity of the request (R4 AuditEvent.entity.detail: name + valueString), so a
reader finds the reason with the object it concerns.

Over HTTP (:func:`audit_routes`) the trail is IHE RESTful ATNA's Audit Record Repository: search
(ITI-81 Retrieve ATNA Audit Event) and read by id. Only an auditor may use it (:func:`auditor_check`): a
bearer token of the country's IdP with scope :data:`AUDIT_SCOPE`, or, over mTLS on the border, the NCP's
own client certificate; 401/403 OperationOutcome otherwise. Searches page with ``_count`` + ``_offset``
and absolute ``self``/``first``/``previous``/``next``/``last`` links under a configured base, never the
Host header (FHIR R4 http.html#paging); each entry's ``fullUrl`` answers the read.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import os
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ncp.errors import Forbidden, InvalidRequest, NcpError, NotFound, Unauthorized, fhir_error_response
from ncp.security.pki import FederationPki, peer_certificate
from ncp.security.tokens import ISCO08_SYSTEM, PURPOSE_OF_USE_SYSTEM, Claims

__all__ = [
    "AUDIT_SCOPE",
    "FAILURE_REASON",
    "FAILURE_STATE",
    "TRANSACTIONS",
    "AuditRecord",
    "AuditStore",
    "Authorize",
    "audit_read_endpoint",
    "audit_routes",
    "audit_search_endpoint",
    "auditor_check",
    "note_failure",
    "random_uuid",
    "redact",
    "to_fhir",
    "user_fields",
]

# transaction -> (display, default action, FHIR restful interaction)
TRANSACTIONS: dict[str, tuple[str, str, str]] = {
    "ITI-65": ("Provide Document Bundle", "C", "transaction"),
    "ITI-67": ("Find Document References", "E", "search-type"),
    "ITI-68": ("Retrieve Document", "R", "read"),
    "ITI-71": ("Get Access Token", "C", ""),  # not a FHIR interaction, no BALP profile
    "ITI-78": ("Patient Demographics Query for Mobile", "E", "search-type"),
    "ITI-81": ("Retrieve ATNA Audit Event", "E", "search-type"),  # reading the trail is audited too
    "RAD-107": ("WADO-RS Retrieve", "R", "read"),
    "RAD-108": ("Store Instances over the Web", "C", "create"),
    "RAD-129": ("QIDO-RS Query", "E", "search-type"),
    "RAD-160": ("Cross-Community WADO-RS Retrieve", "R", "read"),
}
_ACTIONS = frozenset("CRUDE")
_OUTCOMES = {"0": "Success", "4": "Minor failure", "8": "Serious failure", "12": "Major failure"}
_INTERACTIONS = {
    "read": "read",
    "vread": "vread",
    "search-type": "search type",
    "search-system": "search system",
    "create": "create",
    "update": "update",
    "delete": "delete",
    "transaction": "transaction",
}
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_BALP = "https://profiles.ihe.net/ITI/BALP"
AUDIT_SCOPE = "system/AuditEvent.read"  # SMART v1 system scope: who holds it may read the audit trail
# request.state (Starlette: scope["state"]) key where an error handler leaves why it refused the request
FAILURE_STATE = "audit_failure"
FAILURE_REASON = "failure-reason"  # AuditEvent.entity.detail.type carrying that reason
_MAX_COUNT = 1000
_DEFAULT_COUNT = 100
_MAX_BATCH = 256  # records per commit: bounds what one fsync carries and what a crash may hold
# Under concurrent traffic (the last commit, less than _TRAFFIC_S ago, held several records) a batch waits
# _GATHER_S for more before its commit: one fsync and one write of SQLite's pages then serve the requests
# answered meanwhile instead of each paying its own. A lone client's records (batches of one) never wait.
_GATHER_S = 0.002
_TRAFFIC_S = 0.010
# A record nobody waits for (AuditStore.later: the nginx front's, written after the answer) gathers up to
# _LATER_S: fewer commits, and no caller's answer waits for them; a record somebody waits for cuts it short.
# A commit costs the writer about as much as 40 records: at 700 images/s, 100 ms make batches of 70 and
# cost a hop 15-20 us per image, 20 ms cost it 40-45 (docs/benchmarks.md, "Round 6"). A crash loses them.
_LATER_S = 0.100
# Who waits for a record's commit: a thread (a concurrent Future), a coroutine (its loop and future), or
# nobody (None).
_Waiter = Future[None] | tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"] | None
_Pending = tuple[tuple[Any, ...], _Waiter]
_COUNT = re.compile(r"[0-9]{1,4}")
_OFFSET = re.compile(r"[0-9]{1,9}")

# Credentials that must never reach the store: named query parameters, bearer values, JWT/SAML shapes.
_SECRET_PARAMS = re.compile(
    r"(?i)((?:^|[?&;])(?:access_token|id_token|token|assertion|client_assertion|jwt|saml\w*|code)=)[^&;#\s]*"
)
# a credential after the scheme has a digit or symbol, or is long; "missing bearer token" keeps its word
_BEARER = re.compile(
    r"(?i)\b(bearer|basic)\s+(?=[A-Za-z]*(?:[0-9_~+/=-]|\.\w)|[A-Za-z]{12})[A-Za-z0-9._~+/=-]+"
)
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
# what each pattern above cannot match without (lower-cased): "=" aside, a cheap test before the regexes
_SECRET_MARKS = ("bearer", "basic", "eyj", "assertion", "phnhbww")
_SAML = re.compile(r"(<(?:\w+:)?Assertion\b.*?(?:</(?:\w+:)?Assertion>|$)|PHNhbWw[A-Za-z0-9+/=]*)", re.S)


def redact(text: str | None) -> str | None:
    """``text`` with bearer values, token query parameters and JWT/SAML-shaped strings removed."""
    if text is None:
        return None
    if _cannot_hold_secrets(text):
        return text  # the common case, e.g. every image request's query
    text = _SECRET_PARAMS.sub(r"\1REDACTED", text)
    text = _BEARER.sub(r"\1 REDACTED", text)
    text = _JWT.sub("REDACTED", text)
    return _SAML.sub("REDACTED", text)


def _cannot_hold_secrets(text: str) -> bool:
    """True when no pattern of :func:`redact` can match: each needs "=" or one of ``_SECRET_MARKS`` (in
    any case; non-ASCII text takes the regexes, whose case folding also maps e.g. U+017F to "s")."""
    if not text.isascii() or "=" in text:
        return False
    lowered = text.lower()
    return not any(mark in lowered for mark in _SECRET_MARKS)


_REDACTED = ("query", "detail", "client", "user")  # free text that may carry a credential


def _now() -> datetime:
    return datetime.now(UTC)


def random_uuid() -> str:
    """A random (version 4, RFC 9562 5.4) UUID as text: ``str(uuid.uuid4())`` at 40 % of its cost, without the
    ``uuid.UUID`` object in between (an event id and a request id on every image request)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


@dataclass(frozen=True)
class AuditRecord:
    """What one hop records about one transaction (BALP: both client and server record)."""

    transaction: str  # "ITI-67", "ITI-68", "RAD-160", "ITI-78", ...
    outcome: str  # "0" success, "4" minor failure / denied, "8" serious failure, "12" major failure
    source: str  # the hop recording the event, e.g. "NCP-A FR border"
    action: str | None = None  # C R U D E; defaults from the transaction (E query, R retrieve)
    subtype: str | None = None  # FHIR restful interaction; defaults from the transaction
    user: str | None = None  # token subject
    user_issuer: str | None = None  # token issuer (the IdP)
    user_role: str | None = None  # ISCO-08 code
    user_organisation: str | None = None
    purpose_of_use: str | None = None  # TREATMENT | EMERGENCY
    patient: str | None = None  # "issuer-oid|id"
    home_community_id: str | None = None
    request_id: str | None = None  # X-Request-Id
    query: str | None = None  # request target, e.g. "GET /fhir/DocumentReference?..." (tokens removed)
    status: int | None = None  # HTTP status answered
    client: str | None = None  # calling party: address, peer country or base URL
    server: str | None = None  # called service
    token_id: str | None = None  # jti of the token/assertion relied on (never the token)
    detail: str | None = None  # why it failed or was denied
    timestamp: datetime = field(default_factory=_now)
    id: str = field(default_factory=random_uuid)

    def __post_init__(self) -> None:
        known = TRANSACTIONS.get(self.transaction)
        if not self.transaction or not self.source:
            raise ValueError("transaction and source are required")
        if self.outcome not in _OUTCOMES:
            raise ValueError(f"outcome {self.outcome!r} not in {sorted(_OUTCOMES)}")
        action = self.action or (known[1] if known else "E")
        if action not in _ACTIONS:
            raise ValueError(f"action {action!r} not in C R U D E")
        if self.patient is not None and "|" not in self.patient:
            raise ValueError("patient must be 'issuer|id'")
        if self.timestamp.tzinfo is None:
            raise ValueError("timestamp must be timezone-aware")
        assign = object.__setattr__  # frozen: set only what the defaults, prefix or redaction change
        if action != self.action:
            assign(self, "action", action)
        if not self.subtype:
            assign(self, "subtype", known[2] if known else None)
        if self.patient is not None and self.patient.startswith("urn:oid:"):
            assign(self, "patient", _bare_patient(self.patient))
        for name in _REDACTED:
            value = getattr(self, name)
            if value is not None and (kept := redact(value)) is not value:
                assign(self, name, kept)

    def to_json(self) -> dict[str, Any]:
        """Every field that is set (a missing one reads back as its default), the time as :func:`_iso`."""
        data = {k: v for k, v in vars(self).items() if v is not None}  # scalars: no deep copy needed
        data["timestamp"] = _iso(self.timestamp)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuditRecord:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["timestamp"] = datetime.fromisoformat(values["timestamp"])
        return cls(**values)


def user_fields(claims: Claims) -> dict[str, Any]:
    """The :class:`AuditRecord` fields describing the user of a verified token."""
    return {
        "user": claims.subject,
        "user_issuer": claims.origin_issuer or claims.issuer,
        "user_role": claims.role,
        "user_organisation": claims.organisation,
        "purpose_of_use": claims.purpose_of_use,
        "patient": f"{claims.patient.issuer}|{claims.patient.id}" if claims.patient else None,
        "token_id": claims.token_id,
    }


def note_failure(request: Request, reason: str) -> None:
    """Leave why this request is refused or failed where the hop's audit record picks it up (``detail``)."""
    setattr(request.state, FAILURE_STATE, reason)


def _bare_patient(patient: str | None) -> str | None:
    return patient.removeprefix("urn:oid:") if patient else None


def _iso(moment: datetime) -> str:
    """Fixed-width UTC text, so SQLite compares dates as strings (``isoformat`` costs 2/3 of ``strftime``)."""
    if moment.utcoffset():
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")[:26] + "Z"


# --- store ----------------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_event (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    recorded TEXT NOT NULL,
    txn TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    source TEXT NOT NULL,
    patient TEXT,
    request_id TEXT,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_event_request ON audit_event (request_id);
CREATE INDEX IF NOT EXISTS audit_event_patient ON audit_event (patient);
CREATE INDEX IF NOT EXISTS audit_event_recorded ON audit_event (recorded);
"""
# search parameter -> (column, normaliser)
_SEARCH: dict[str, tuple[str, Callable[[str], str]]] = {
    "request-id": ("request_id", str),
    "patient": ("patient", lambda v: v.removeprefix("urn:oid:")),
    "outcome": ("outcome", str),
    "subtype": ("txn", lambda v: v.rpartition("|")[2]),
    "action": ("action", str),
    "source": ("source", str),
}
_DATE_OPS = {"ge": ">=", "le": "<=", "gt": ">", "lt": "<", "eq": "="}


class AuditStore:
    """Audit records in one SQLite file; safe to call from any thread.

    Writes go through one long-lived writer thread with group commit: it takes every record waiting, stores
    them in one transaction (``synchronous=FULL``: one fsync for the batch) and only then releases their
    callers. A hop awaits its record before the client has its whole answer, so a crash loses no record of
    an answered request; at most the batch being written, whose requests were not yet answered. Under
    concurrent traffic a batch first gathers for 2 ms, so that one commit serves several requests.
    """

    def __init__(self, db_path: Path, *, max_batch: int = _MAX_BATCH) -> None:
        self.db_path = db_path
        self._max_batch = max_batch
        self._committed = 0.0  # time.monotonic() when the writer last committed ...
        self._shared = False  # ... and whether that commit held several records
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._hurry = threading.Event()  # a record somebody waits for is queued
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        db_path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.db_path, timeout=10, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=FULL")  # durable: a recorded event survives a crash
            yield conn
        finally:
            conn.close()

    def submit(self, event: AuditRecord) -> Future[None]:
        """Queue ``event`` for the writer; the future completes once it is committed."""
        done: Future[None] = Future()
        self._ensure_writer()
        self._queue.put((_row(event), done))
        self._hurry.set()
        return done

    def later(self, event: AuditRecord) -> None:
        """Queue ``event`` with nobody waiting for its commit (the nginx front records an answer once it is
        over): under traffic it waits up to ``_LATER_S`` to share a commit with others."""
        self._ensure_writer()
        self._queue.put((_row(event), None))

    def record(self, event: AuditRecord) -> None:
        """Store ``event``, blocking until committed; the same event id again is a no-op."""
        self.submit(event).result()

    async def arecord(self, event: AuditRecord) -> None:
        """:meth:`record` for a coroutine: waits for the commit without holding a thread. A cancelled
        caller (its client went away) stops waiting; the record is committed all the same. The writer
        wakes each loop once per commit, not once per record (docs/benchmarks.md, "Per-request costs")."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._ensure_writer()
        self._queue.put((_row(event), (loop, done)))
        self._hurry.set()
        await done  # a cancelled caller cancels only its own future: the queued record is committed

    def close(self) -> None:
        """Commit what is queued and stop the writer (an app's shutdown)."""
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            self._queue.put(None)
            self._hurry.set()  # a writer gathering records nobody waits for stops now, not after _LATER_S
            writer.join()

    def _ensure_writer(self) -> None:
        with self._lock:
            if self._writer is None:
                self._writer = threading.Thread(target=self._write, name="audit-writer", daemon=True)
                self._writer.start()

    def _write(self) -> None:
        with self._connect() as conn:
            while True:
                batch, stop = self._next_batch()
                if batch:
                    _commit(conn, batch)
                    self._committed, self._shared = time.monotonic(), len(batch) > 1
                if stop:
                    return

    def _next_batch(self) -> tuple[list[_Pending], bool]:
        """What waits now (at least one item, at most ``max_batch``); True once the queue says stop."""
        batch: list[_Pending] = []
        item = self._queue.get()
        if item is not None and self._shared and time.monotonic() - self._committed < _TRAFFIC_S:
            # a sleep, not a get with timeout: no wake-up per record meanwhile
            if item[1] is None:
                self._hurry.wait(_LATER_S)
            else:
                time.sleep(_GATHER_S)
        self._hurry.clear()
        while item is not None:
            batch.append(item)
            if len(batch) >= self._max_batch:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False
        return batch, True

    def records(self, params: Mapping[str, str] | None = None) -> list[AuditRecord]:
        """Records matching FHIR-style ``params`` (see :meth:`search`), oldest first."""
        where, args = _query(params or {})
        limit, offset = _page_of(params or {})
        sql = f"SELECT record FROM audit_event{where} ORDER BY recorded, seq LIMIT ? OFFSET ?"
        with self._connect() as conn:
            rows = conn.execute(sql, (*args, limit, offset)).fetchall()
        return [AuditRecord.from_json(json.loads(r[0])) for r in rows]

    def search(self, params: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """AuditEvents for ``request-id``, ``patient`` (``[urn:oid:]issuer|id``), ``outcome``,
        ``subtype`` (transaction, ``[system|]ITI-67``), ``action``, ``source``, ``date`` (``ge``/``le``/
        ``gt``/``lt``/``eq`` prefix), paged by ``_count`` and ``_offset``; unknown parameters are a 400.
        """
        return [to_fhir(r) for r in self.records(params)]

    def count(self, params: Mapping[str, str] | None = None) -> int:
        """How many records match ``params`` (``_count`` and ``_offset`` ignored)."""
        where, args = _query(params or {})
        with self._connect() as conn:
            return int(conn.execute(f"SELECT count(*) FROM audit_event{where}", args).fetchone()[0])

    def get(self, event_id: str) -> AuditRecord | None:
        """The record whose AuditEvent has id ``event_id``, if this trail holds it."""
        with self._connect() as conn:
            row = conn.execute("SELECT record FROM audit_event WHERE id = ?", (event_id,)).fetchone()
        return AuditRecord.from_json(json.loads(row[0])) if row else None


_INSERT = (
    "INSERT OR IGNORE INTO audit_event (id, recorded, txn, action, outcome, source, patient, request_id,"
    " record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _row(event: AuditRecord) -> tuple[Any, ...]:
    data = event.to_json()
    return (
        event.id,
        data["timestamp"],
        event.transaction,
        event.action,
        event.outcome,
        event.source,
        event.patient,
        event.request_id,
        json.dumps(data),  # read back by key (from_json): key order does not matter
    )


def _commit(conn: sqlite3.Connection, batch: list[_Pending]) -> None:
    """One transaction for the batch; every waiting caller learns the outcome."""
    error: sqlite3.Error | None = None
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_INSERT, [row for row, _ in batch])
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        error = exc
    _settle(batch, error)


def _settle(batch: list[_Pending], error: BaseException | None) -> None:
    """Release the batch's waiters: threads directly, coroutines with one wake-up per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for _, waiter in batch:
        if waiter is None:
            continue
        if isinstance(waiter, tuple):
            by_loop.setdefault(waiter[0], []).append(waiter[1])
        elif waiter.cancelled():  # its waiter gave up; the record is stored regardless
            continue
        elif error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(None)
    for loop, futures in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop has closed: nobody is left to tell
            loop.call_soon_threadsafe(_settle_futures, futures, error)


def _settle_futures(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for done in futures:
        if done.done():
            continue
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(None)


def _page_of(params: Mapping[str, str]) -> tuple[int, int]:
    """``(_count, _offset)`` of a search (FHIR R4 search.html#count; ``_offset`` as our MHD registries page),
    400 unless ``_count`` is 1-1000 and ``_offset`` a non-negative integer."""
    count = params.get("_count")
    offset = params.get("_offset", "0")
    if count is not None and (not _COUNT.fullmatch(count) or not 0 < int(count) <= _MAX_COUNT):
        raise InvalidRequest(f"_count must be an integer from 1 to {_MAX_COUNT}")
    if not _OFFSET.fullmatch(offset):
        raise InvalidRequest("_offset must be a non-negative integer below 10^9")
    return (int(count) if count is not None else _DEFAULT_COUNT), int(offset)


def _query(params: Mapping[str, str]) -> tuple[str, list[str]]:
    clauses: list[str] = []
    args: list[str] = []
    for name, value in params.items():
        if name in ("_count", "_offset"):
            continue  # paging: see _page_of
        if name == "date":
            clauses.append(_date_clause(value, args))
        elif name in _SEARCH:
            column, normalise = _SEARCH[name]
            clauses.append(f"{column} = ?")
            args.append(normalise(value))
        else:
            raise InvalidRequest(f"unsupported AuditEvent search parameter {name!r}")
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    return where, args


def _date_clause(value: str, args: list[str]) -> str:
    """FHIR date search on ``recorded`` (R4 3.1.1.5.1 prefixes ge/le/gt/lt/eq)."""
    prefix = value[:2] if value[:2].isalpha() else ""
    op = _DATE_OPS.get(prefix or "eq")
    try:
        if op is None:
            raise ValueError(prefix)
        moment = datetime.fromisoformat(value[len(prefix) :].replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            "date must be an ISO 8601 date/time with an optional ge/le/gt/lt prefix"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    args.append(_iso(moment))
    return f"recorded {op} ?"


# --- FHIR AuditEvent (IHE BALP) -----------------------------------------------------------------------


def to_fhir(record: AuditRecord) -> dict[str, Any]:
    """A FHIR R4 AuditEvent for ``record`` following IHE BALP."""
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": record.id,
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "Restful Operation",
        },
        "subtype": _subtypes(record),
        "action": record.action,
        "recorded": _iso(record.timestamp),
        "outcome": record.outcome,
        "agent": _agents(record),
        "source": {
            "site": record.source,
            "observer": {"display": record.source},
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }
            ],
        },
        "entity": _entities(record),
    }
    profile = _profile(record)
    if profile:
        event["meta"] = {"profile": [f"{_BALP}/StructureDefinition/{profile}"]}
    description = _outcome_description(record)
    if description:
        event["outcomeDesc"] = description
    if record.purpose_of_use:
        event["purposeOfEvent"] = [_purpose(record.purpose_of_use)]
    return event


def _profile(record: AuditRecord) -> str | None:
    if record.outcome != "0":
        return None  # BALP success profiles fix outcome 0; failures follow FHIR core Access Denied
    kind = {"E": "Query", "R": "Read"}.get(record.action or "")
    if kind is None:
        return None
    return f"IHE.BasicAudit.{'Patient' if record.patient else ''}{kind}"


def _outcome_description(record: AuditRecord) -> str | None:
    parts = [f"HTTP {record.status}" if record.status is not None else None, record.detail]
    text = ": ".join(p for p in parts if p)
    return text or None


def _subtypes(record: AuditRecord) -> list[dict[str, str]]:
    codes = []
    if record.subtype:
        codes.append(
            {
                "system": "http://hl7.org/fhir/restful-interaction",
                "code": record.subtype,
                "display": _INTERACTIONS.get(record.subtype, record.subtype),
            }
        )
    known = TRANSACTIONS.get(record.transaction)
    transaction = {"system": "urn:ihe:event-type-code", "code": record.transaction}
    if known:
        transaction["display"] = known[0]
    return [*codes, transaction]


def _agents(record: AuditRecord) -> list[dict[str, Any]]:
    # BALP Query: client = Source Role ID 110153, server = Destination 110152; Read swaps them.
    client_role, server_role = ("110152", "110153") if record.action == "R" else ("110153", "110152")
    agents = [
        _network_agent(client_role, record.client),
        _network_agent(server_role, record.server or record.source),
    ]
    if record.user:
        agents.append(_user_agent(record))
    if record.user_organisation:
        agents.append(
            {
                "type": _concept(
                    "http://terminology.hl7.org/CodeSystem/v3-RoleClass", "PROV", "healthcare provider"
                ),
                "who": {"display": record.user_organisation},
                "requestor": False,
            }
        )
    if record.home_community_id:
        hcid = record.home_community_id
        agents.append(
            {
                "type": _concept("urn:ihe:iti:xca:2010", "homeCommunityId", "IHE homeCommunityId"),
                "who": {"identifier": {"value": hcid if hcid.startswith("urn:") else f"urn:oid:{hcid}"}},
                "requestor": False,
            }
        )
    return agents


def _network_agent(role: str, who: str | None) -> dict[str, Any]:
    display = {"110152": "Destination Role ID", "110153": "Source Role ID"}[role]
    agent: dict[str, Any] = {
        "type": _concept(_DCM, role, display),
        "who": {"display": who or "unknown"},
        "requestor": False,
    }
    if who:
        agent["network"] = {"address": who, "type": _network_type(who)}
    return agent


def _network_type(address: str) -> str:
    """R4 network-type: 1 machine name, 2 IP address, 5 URI."""
    if "://" in address:
        return "5"
    try:
        ipaddress.ip_address(address.rsplit(":", 1)[0] if address.count(":") == 1 else address)
    except ValueError:
        return "1"
    return "2"


def _user_agent(record: AuditRecord) -> dict[str, Any]:
    identifier = {"value": record.user}
    if record.user_issuer:
        identifier["system"] = record.user_issuer
    agent: dict[str, Any] = {
        "type": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "IRCP",
                    "display": "information recipient",
                },
                {"system": f"{_BALP}/CodeSystem/UserAgentTypes", "code": "UserOauthAgent"},
            ]
        },
        "who": {"identifier": identifier},
        "name": record.user,
        "requestor": True,
    }
    if record.user_role:
        agent["role"] = [{"coding": [{"system": ISCO08_SYSTEM, "code": record.user_role}]}]
    if record.token_id:
        agent["policy"] = [record.token_id]
    if record.purpose_of_use:
        agent["purposeOfUse"] = [_purpose(record.purpose_of_use)]
    return agent


def _entities(record: AuditRecord) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    if record.patient:
        issuer, _, pid = record.patient.partition("|")
        entities.append(
            {
                "what": {"type": "Patient", "identifier": {"system": f"urn:oid:{issuer}", "value": pid}},
                "type": _coding(_ENTITY_TYPE, "1", "Person"),
                "role": _coding(_OBJECT_ROLE, "1", "Patient"),
            }
        )
    request = _request_entity(record)
    if request:
        entities.append(request)
    if record.request_id:
        entities.append(
            {
                "what": {"identifier": {"value": record.request_id}},
                "type": _coding(f"{_BALP}/CodeSystem/BasicAuditEntityType", "XrequestId", "XrequestId"),
            }
        )
    return entities


def _request_entity(record: AuditRecord) -> dict[str, Any] | None:
    """The query (BALP Query: role 24, base64 ``query``) or the resource read (role 4), with the failure
    reason as an R4 ``entity.detail`` when the transaction failed."""
    entity: dict[str, Any] = {"type": _coding(_ENTITY_TYPE, "2", "System Object")}
    if record.query and record.action == "E":
        entity["role"] = _coding(_OBJECT_ROLE, "24", "Query")
        entity["description"] = record.query
        entity["query"] = base64.b64encode(record.query.encode()).decode("ascii")
    elif record.query:
        entity["what"] = {"display": record.query}
        entity["role"] = _coding(_OBJECT_ROLE, "4", "Domain Resource")
    failed = record.detail is not None and record.outcome != "0"
    if failed:
        entity["detail"] = [{"type": FAILURE_REASON, "valueString": record.detail}]
    return entity if record.query or failed else None


def _coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def _concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [_coding(system, code, display)]}


def _purpose(code: str) -> dict[str, Any]:
    return {"coding": [{"system": PURPOSE_OF_USE_SYSTEM, "code": code}]}


# --- HTTP: the Audit Record Repository (IHE RESTful ATNA) ---------------------------------------------

Authorize = Callable[[Request], None]  # raises Unauthorized (401) / Forbidden (403)


def auditor_check(pki: FederationPki | None, country: str) -> Authorize | None:
    """Who may read ``country``'s audit trail; None (anyone) with security off.

    A bearer token of the country's own IdP addressed to its NCP and carrying :data:`AUDIT_SCOPE` (401 when
    missing or unverifiable, 403 without the scope, RFC 6750 §3.1), or, without a token, the mTLS client
    certificate registered for ``country`` itself (the border listener; another NCP's is 403).
    """
    if pki is None:
        return None
    verifier = pki.gateway_verifier(country)

    def authorize(request: Request) -> None:
        authorization = request.headers.get("authorization")
        peer = pki.peer_country(peer_certificate(request.scope))
        if authorization is None and peer is not None:
            if peer != country:
                raise Forbidden(f"the certificate of NCP {peer} does not open the audit trail of {country}")
            request.state.peer = peer
        elif authorization is None:
            raise Unauthorized(
                f"the audit trail needs a bearer token with scope {AUDIT_SCOPE}",
                headers={"WWW-Authenticate": f'Bearer scope="{AUDIT_SCOPE}"'},
            )
        else:
            request.state.claims = verifier.verify_header(authorization, required_scopes=[AUDIT_SCOPE])

    return authorize


def audit_routes(store: AuditStore, *, base: str, authorize: Authorize | None) -> list[Route]:
    """``{base}/fhir/AuditEvent`` (search) and ``{base}/fhir/AuditEvent/{id}`` (read); ``base`` is the
    listener's configured public base URL, the one its links and ``fullUrl`` values start with."""
    return [
        Route("/fhir/AuditEvent", audit_search_endpoint(store, base=base, authorize=authorize)),
        Route("/fhir/AuditEvent/{id}", audit_read_endpoint(store, authorize=authorize)),
    ]


def audit_search_endpoint(
    store: AuditStore, *, base: str, authorize: Authorize | None = None
) -> Callable[[Request], Awaitable[Response]]:
    """``GET .../AuditEvent?request-id=&patient=&outcome=...&_count=&_offset=``: a searchset Bundle
    (ITI-81) whose links and ``fullUrl`` values are absolute under ``base``, whatever the Host header."""
    url = f"{base.rstrip('/')}/fhir/AuditEvent"

    async def endpoint(request: Request) -> Response:
        try:
            if authorize is not None:
                authorize(request)
            params = _single_params(request)
            events = await run_in_threadpool(store.search, params)
            total = await run_in_threadpool(store.count, params)
        except NcpError as exc:
            return _refused(request, exc)
        return _fhir_json(_bundle(url, params, events, total))

    return endpoint


def audit_read_endpoint(
    store: AuditStore, *, authorize: Authorize | None = None
) -> Callable[[Request], Awaitable[Response]]:
    """``GET .../AuditEvent/{id}``: the AuditEvent (FHIR read), 404 OperationOutcome when unknown."""

    async def endpoint(request: Request) -> Response:
        try:
            if authorize is not None:
                authorize(request)
            record = await run_in_threadpool(store.get, request.path_params["id"])
            if record is None:
                raise NotFound("no AuditEvent with this id in this audit trail")
        except NcpError as exc:
            return _refused(request, exc)
        return _fhir_json(to_fhir(record))

    return endpoint


def _refused(request: Request, exc: NcpError) -> Response:
    note_failure(request, exc.message)
    return fhir_error_response(exc)


def _fhir_json(body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), media_type="application/fhir+json")


def _single_params(request: Request) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name in params:
            raise InvalidRequest(f"search parameter {name!r} given more than once")
        if not value:
            raise InvalidRequest(f"search parameter {name!r} is empty")
        params[name] = value
    return params


def _bundle(url: str, params: dict[str, str], events: list[dict[str, Any]], total: int) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": _links(url, params, total),
        "entry": [
            {"fullUrl": f"{url}/{e['id']}", "resource": e, "search": {"mode": "match"}} for e in events
        ],
    }


def _links(url: str, params: dict[str, str], total: int) -> list[dict[str, str]]:
    """FHIR R4 paging links (http.html#paging): the same search at other offsets, absolute under ``url``."""
    count, offset = _page_of(params)
    filters = [(k, v) for k, v in params.items() if k not in ("_count", "_offset")]
    last = max(0, (total - 1) // count * count)
    pages = [("self", offset), ("first", 0)]
    if offset > 0:
        pages.append(("previous", max(0, min(offset - count, last))))
    if offset + count < total:
        pages.append(("next", offset + count))
    pages.append(("last", last))
    return [
        {"relation": relation, "url": f"{url}?{urlencode([*filters, ('_count', count), ('_offset', at)])}"}
        for relation, at in pages
    ]
