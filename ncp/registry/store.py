"""The registry's SQLite store: Patients, DocumentReferences, their search keys and document bytes.

Blocking by design: the HTTP layer calls it through ``run_in_threadpool``. One connection per
call (cheap for SQLite, safe across threads); WAL so searches never wait for a writer. Search
keys live in indexed tables (``document_tokens``, ``document_dates``), never in JSON scans.
An ITI-65 submission is one ``BEGIN IMMEDIATE`` transaction: all or nothing (MHD 2:3.65.4.1.3).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ncp.errors import Conflict, InvalidRequest
from ncp.registry.index import DateRange
from ncp.registry.sqlite import connection, transaction

__all__ = [
    "DateAlt",
    "DateClause",
    "DocumentQuery",
    "NewDocument",
    "NewPatient",
    "PatientQuery",
    "PatientRef",
    "Representation",
    "Store",
    "StoredDocument",
    "Submission",
    "SubmitResult",
    "TokenAlt",
    "TokenClause",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS patients (
    id TEXT PRIMARY KEY, family TEXT NOT NULL, given TEXT NOT NULL, gender TEXT NOT NULL,
    birth_lo TEXT, birth_hi TEXT, resource TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS patient_identifiers (
    patient_id TEXT NOT NULL REFERENCES patients(id) ON DELETE CASCADE,
    system TEXT NOT NULL, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS patient_identifiers_value ON patient_identifiers(value, system);
CREATE INDEX IF NOT EXISTS patient_identifiers_patient ON patient_identifiers(patient_id);
CREATE TABLE IF NOT EXISTS documents (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    patient_id TEXT NOT NULL REFERENCES patients(id), status TEXT NOT NULL, master TEXT,
    superseded_by TEXT, resource TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS documents_patient ON documents(patient_id, status);
CREATE INDEX IF NOT EXISTS documents_master ON documents(master, status);
CREATE TABLE IF NOT EXISTS document_tokens (
    doc_seq INTEGER NOT NULL REFERENCES documents(seq), param TEXT NOT NULL,
    system TEXT NOT NULL, code TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS document_tokens_code ON document_tokens(param, code, system);
CREATE INDEX IF NOT EXISTS document_tokens_system ON document_tokens(param, system);
CREATE TABLE IF NOT EXISTS document_dates (
    doc_seq INTEGER NOT NULL REFERENCES documents(seq), param TEXT NOT NULL,
    lo TEXT NOT NULL, hi TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS document_dates_param ON document_dates(param, lo);
CREATE TABLE IF NOT EXISTS representations (
    doc_id TEXT NOT NULL REFERENCES documents(id), ordinal INTEGER NOT NULL,
    content_type TEXT NOT NULL, sha1 TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (doc_id, ordinal));
CREATE TABLE IF NOT EXISTS submission_sets (
    id TEXT PRIMARY KEY, received TEXT NOT NULL, resource TEXT NOT NULL);
"""


# -- what a submission writes ----------------------------------------------------------------------
@dataclass(frozen=True)
class NewPatient:
    """A Patient of an ITI-65 bundle: ``id`` set for ``PUT Patient/{id}``; None for POST (match or create)."""

    id: str | None
    resource: dict[str, Any]
    identifiers: tuple[tuple[str, str], ...]
    family: str
    given: str
    gender: str
    birth: DateRange | None


@dataclass(frozen=True)
class PatientRef:
    """A DocumentReference's subject: a Patient id, a Patient of the same bundle, or a business identifier."""

    id: str | None = None
    bundle_index: int | None = None  # index into Submission.patients
    identifier: tuple[str, str] | None = None


@dataclass
class NewDocument:
    id: str
    resource: dict[str, Any]
    subject: PatientRef
    master: str | None
    tokens: list[tuple[str, str, str]]
    dates: list[tuple[str, DateRange]]
    representations: list[tuple[str, bytes, str]]  # (content type, bytes, sha1 hex)
    replaces: list[str] = field(default_factory=list)  # explicit relatesTo replaces targets


@dataclass
class Submission:
    submission_set_id: str
    submission_set: dict[str, Any]
    patients: list[NewPatient]
    documents: list[NewDocument]
    supersede: list[str] = field(default_factory=list)  # PUT DocumentReference/{id} with status superseded


@dataclass(frozen=True)
class SubmitResult:
    patient_ids: tuple[str, ...]  # final id of each Submission.patients entry
    created_patients: frozenset[str]
    superseded: dict[str, str]  # old document id -> replacing document id


# -- what a search asks ----------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenAlt:
    """``system|code`` (both), ``code`` (system None: any), ``|code`` (system ''), ``system|`` (code None)."""

    system: str | None
    code: str | None


@dataclass(frozen=True)
class TokenClause:
    param: str
    alternatives: tuple[TokenAlt, ...]  # OR


@dataclass(frozen=True)
class DateAlt:
    prefix: str  # eq ne gt lt ge le sa eb ap
    range: DateRange


@dataclass(frozen=True)
class DateClause:
    param: str
    alternatives: tuple[DateAlt, ...]  # OR


@dataclass(frozen=True)
class DocumentQuery:
    """Clauses are ANDed; the alternatives inside one clause are ORed (FHIR search 3.1.1.3)."""

    patient_ids: tuple[tuple[str, ...], ...] = ()
    patient_identifiers: tuple[tuple[TokenAlt, ...], ...] = ()
    statuses: tuple[tuple[str, ...], ...] = ()
    ids: tuple[tuple[str, ...], ...] = ()
    tokens: tuple[TokenClause, ...] = ()
    dates: tuple[DateClause, ...] = ()


@dataclass(frozen=True)
class PatientQuery:
    ids: tuple[tuple[str, ...], ...] = ()
    identifiers: tuple[tuple[TokenAlt, ...], ...] = ()
    family: tuple[tuple[str, ...], ...] = ()
    given: tuple[tuple[str, ...], ...] = ()
    gender: tuple[tuple[str, ...], ...] = ()
    birthdate: tuple[tuple[DateAlt, ...], ...] = ()


@dataclass(frozen=True)
class Representation:
    ordinal: int
    content_type: str
    sha1: str  # hex
    size: int


@dataclass(frozen=True)
class StoredDocument:
    id: str
    status: str
    superseded_by: str | None
    resource: dict[str, Any]


# -- SQL fragments ---------------------------------------------------------------------------------
def _token_sql(alt: TokenAlt, system_col: str, code_col: str) -> tuple[str, list[str]]:
    if alt.code is None:
        return f"{system_col} = ?", [alt.system or ""]
    if alt.system is None:
        return f"{code_col} = ?", [alt.code]
    return f"({code_col} = ? AND {system_col} = ?)", [alt.code, alt.system]


def _date_sql(alt: DateAlt, lo: str, hi: str) -> tuple[str, list[str]]:
    """FHIR R4 search 3.1.1.5.6 prefixes over half-open ranges: resource [lo, hi), parameter [p.lo, p.hi)."""
    p = alt.range
    inside = (f"({lo} >= ? AND {hi} <= ?)", [p.lo, p.hi])
    table: dict[str, tuple[str, list[str]]] = {
        "eq": inside,
        "ne": (f"NOT {inside[0]}", inside[1]),
        "gt": (f"{hi} > ?", [p.hi]),
        "lt": (f"{lo} < ?", [p.lo]),
        "ge": (f"({hi} > ? OR {inside[0]})", [p.hi, *inside[1]]),
        "le": (f"({lo} < ? OR {inside[0]})", [p.lo, *inside[1]]),
        "sa": (f"{lo} >= ?", [p.hi]),
        "eb": (f"{hi} <= ?", [p.lo]),
        "ap": (f"({lo} < ? AND {hi} > ?)", [p.hi, p.lo]),
    }
    return table[alt.prefix]


def _or(parts: Sequence[tuple[str, list[str]]]) -> tuple[str, list[str]]:
    return "(" + " OR ".join(sql for sql, _ in parts) + ")", [a for _, args in parts for a in args]


def _in(column: str, values: Sequence[str]) -> tuple[str, list[str]]:
    return f"{column} IN ({', '.join('?' * len(values))})", list(values)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Store:
    """SQLite-backed registry/repository. Every public method is one short transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    # -- connections -------------------------------------------------------------------------------
    def _connect(self) -> AbstractContextManager[sqlite3.Connection]:
        return connection(self.path)

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self.path)

    # -- ITI-65 ------------------------------------------------------------------------------------
    def submit(self, sub: Submission) -> SubmitResult:
        """Write a whole submission or nothing; raises InvalidRequest/Conflict (rolled back)."""
        try:
            return self._submit(sub)
        except sqlite3.IntegrityError as exc:  # a constraint the parser could not foresee
            raise Conflict(f"the submission contradicts the registry's content ({exc})") from None

    def _submit(self, sub: Submission) -> SubmitResult:
        with self._write() as db:
            resolved = [self._put_patient(db, p) for p in sub.patients]
            patient_ids = tuple(pid for pid, _ in resolved)
            created = frozenset(pid for pid, was_created in resolved if was_created)
            superseded: dict[str, str] = {}
            for doc in sub.documents:
                pid = self._resolve_subject(db, doc.subject, patient_ids)
                doc.resource["subject"]["reference"] = f"Patient/{pid}"
                for old in self._replaced(db, doc):
                    self._supersede(db, old, doc, pid)
                    superseded[old] = doc.id
                self._insert_document(db, doc, pid)
            for doc_id in sub.supersede:
                if doc_id not in superseded:
                    self._mark_superseded(db, doc_id, None)
            db.execute(
                "INSERT INTO submission_sets (id, received, resource) VALUES (?, ?, ?)",
                (sub.submission_set_id, _now(), json.dumps(sub.submission_set)),
            )
        return SubmitResult(patient_ids, created, superseded)

    def _put_patient(self, db: sqlite3.Connection, p: NewPatient) -> tuple[str, bool]:
        holders = self._patients_with(db, p.identifiers)
        if p.id is None:  # POST: the recipient matches on the business identifier (MHD 2:3.65.4.1.2.2)
            if holders:
                return sorted(holders)[0], False
            pid = f"pat-{uuid.uuid4().hex[:24]}"
        else:
            pid = p.id
            others = holders - {pid}
            if others:
                raise Conflict(
                    f"Patient/{pid}: its identifier already belongs to Patient/{sorted(others)[0]}"
                )
        existed = db.execute("SELECT 1 FROM patients WHERE id = ?", (pid,)).fetchone() is not None
        resource = {**p.resource, "id": pid}
        birth = (p.birth.lo, p.birth.hi) if p.birth else (None, None)
        db.execute(
            "INSERT OR REPLACE INTO patients (id, family, given, gender, birth_lo, birth_hi, resource) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (pid, p.family.lower(), p.given.lower(), p.gender, *birth, json.dumps(resource)),
        )
        db.execute("DELETE FROM patient_identifiers WHERE patient_id = ?", (pid,))
        db.executemany(
            "INSERT INTO patient_identifiers (patient_id, system, value) VALUES (?, ?, ?)",
            [(pid, s, v) for s, v in p.identifiers],
        )
        return pid, not existed

    @staticmethod
    def _patients_with(db: sqlite3.Connection, identifiers: Sequence[tuple[str, str]]) -> set[str]:
        found: set[str] = set()
        for system, value in identifiers:
            rows = db.execute(
                "SELECT patient_id FROM patient_identifiers WHERE value = ? AND system = ?", (value, system)
            )
            found.update(r[0] for r in rows)
        return found

    def _resolve_subject(self, db: sqlite3.Connection, ref: PatientRef, bundle_ids: tuple[str, ...]) -> str:
        if ref.bundle_index is not None:
            return bundle_ids[ref.bundle_index]
        if ref.id is not None:
            if db.execute("SELECT 1 FROM patients WHERE id = ?", (ref.id,)).fetchone() is None:
                raise InvalidRequest(f"subject Patient/{ref.id} is neither in the Bundle nor known here")
            return ref.id
        assert ref.identifier is not None
        holders = self._patients_with(db, [ref.identifier])
        if len(holders) != 1:
            system, value = ref.identifier
            raise InvalidRequest(f"subject identifier {system}|{value} matches {len(holders)} known Patients")
        return holders.pop()

    def _replaced(self, db: sqlite3.Connection, doc: NewDocument) -> list[str]:
        """Documents this one replaces: explicit relatesTo, and the current holder of its masterIdentifier."""
        old = list(doc.replaces)
        if doc.master is not None:
            rows = db.execute(
                "SELECT id FROM documents WHERE master = ? AND status = 'current'", (doc.master,)
            )
            old += [r[0] for r in rows if r[0] not in old]
        return old

    def _supersede(self, db: sqlite3.Connection, old_id: str, new: NewDocument, pid: str) -> None:
        row = db.execute("SELECT patient_id FROM documents WHERE id = ?", (old_id,)).fetchone()
        if row is None:
            raise InvalidRequest(f"relatesTo replaces DocumentReference/{old_id}, which is not known here")
        if row[0] != pid:
            raise InvalidRequest(
                f"DocumentReference/{old_id} belongs to another patient: it cannot be replaced"
            )
        self._mark_superseded(db, old_id, new.id)
        relates = new.resource.setdefault("relatesTo", [])
        target = f"DocumentReference/{old_id}"
        if not any(r.get("target", {}).get("reference") == target for r in relates):
            relates.append({"code": "replaces", "target": {"reference": target}})

    @staticmethod
    def _mark_superseded(db: sqlite3.Connection, doc_id: str, by: str | None) -> None:
        row = db.execute("SELECT status, resource FROM documents WHERE id = ?", (doc_id,)).fetchone()
        if row is None:
            raise InvalidRequest(f"DocumentReference/{doc_id} is not known here")
        if row[0] != "current":
            raise Conflict(f"DocumentReference/{doc_id} is {row[0]}, not current: it cannot be superseded")
        resource = json.loads(row[1])
        resource["status"] = "superseded"
        resource.setdefault("meta", {}).update(versionId=str(int(resource["meta"].get("versionId", "1")) + 1))
        resource["meta"]["lastUpdated"] = _now()
        db.execute(
            "UPDATE documents SET status = 'superseded', superseded_by = ?, resource = ? WHERE id = ?",
            (by, json.dumps(resource), doc_id),
        )

    @staticmethod
    def _insert_document(db: sqlite3.Connection, doc: NewDocument, pid: str) -> None:
        doc.resource.setdefault("meta", {}).update(versionId="1", lastUpdated=_now())
        cursor = db.execute(
            "INSERT INTO documents (id, patient_id, status, master, resource) VALUES (?, ?, 'current', ?, ?)",
            (doc.id, pid, doc.master, json.dumps(doc.resource)),
        )
        seq = cursor.lastrowid
        db.executemany(
            "INSERT INTO document_tokens (doc_seq, param, system, code) VALUES (?, ?, ?, ?)",
            [(seq, *t) for t in doc.tokens],
        )
        db.executemany(
            "INSERT INTO document_dates (doc_seq, param, lo, hi) VALUES (?, ?, ?, ?)",
            [(seq, param, r.lo, r.hi) for param, r in doc.dates],
        )
        db.executemany(
            "INSERT INTO representations (doc_id, ordinal, content_type, sha1, data) VALUES (?, ?, ?, ?, ?)",
            [(doc.id, i, ct, sha1, data) for i, (ct, data, sha1) in enumerate(doc.representations)],
        )

    # -- ITI-67 ------------------------------------------------------------------------------------
    def search_documents(
        self, q: DocumentQuery, *, offset: int, count: int
    ) -> tuple[int, list[dict[str, Any]]]:
        """(total, one page in stable insertion order)."""
        where, args = self._document_where(q)
        with self._connect() as db:
            total = db.execute(f"SELECT COUNT(*) FROM documents d WHERE {where}", args).fetchone()[0]
            rows = db.execute(
                f"SELECT resource FROM documents d WHERE {where} ORDER BY d.seq LIMIT ? OFFSET ?",
                [*args, count, offset],
            ).fetchall()
        return int(total), [json.loads(r[0]) for r in rows]

    @staticmethod
    def _document_where(q: DocumentQuery) -> tuple[str, list[str]]:
        parts: list[tuple[str, list[str]]] = [("1 = 1", [])]
        parts += [_in("d.patient_id", ids) for ids in q.patient_ids]
        parts += [_in("d.status", values) for values in q.statuses]
        parts += [_in("d.id", ids) for ids in q.ids]
        for alts in q.patient_identifiers:
            sql, args = _or([_token_sql(a, "system", "value") for a in alts])
            parts.append((f"d.patient_id IN (SELECT patient_id FROM patient_identifiers WHERE {sql})", args))
        for clause in q.tokens:
            sql, args = _or([_token_sql(a, "system", "code") for a in clause.alternatives])
            parts.append(
                (
                    f"d.seq IN (SELECT doc_seq FROM document_tokens WHERE param = ? AND {sql})",
                    [clause.param, *args],
                )
            )
        for dclause in q.dates:
            sql, args = _or([_date_sql(a, "lo", "hi") for a in dclause.alternatives])
            parts.append(
                (
                    f"d.seq IN (SELECT doc_seq FROM document_dates WHERE param = ? AND {sql})",
                    [dclause.param, *args],
                )
            )
        return " AND ".join(sql for sql, _ in parts), [a for _, args in parts for a in args]

    def document(self, doc_id: str) -> StoredDocument | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT id, status, superseded_by, resource FROM documents WHERE id = ?", (doc_id,)
            ).fetchone()
        return None if row is None else StoredDocument(row[0], row[1], row[2], json.loads(row[3]))

    def delete_document(self, doc_id: str) -> bool:
        """Mark a document entered-in-error (FHIR delete): its read and retrieve answer 410 from now on."""
        with self._write() as db:
            row = db.execute("SELECT resource FROM documents WHERE id = ?", (doc_id,)).fetchone()
            if row is None:
                return False
            resource = json.loads(row[0])
            resource["status"] = "entered-in-error"
            db.execute(
                "UPDATE documents SET status = 'entered-in-error', resource = ? WHERE id = ?",
                (json.dumps(resource), doc_id),
            )
        return True

    # -- ITI-68 ------------------------------------------------------------------------------------
    def representations(self, doc_id: str) -> tuple[StoredDocument, list[Representation]] | None:
        doc = self.document(doc_id)
        if doc is None:
            return None
        with self._connect() as db:
            rows = db.execute(
                "SELECT ordinal, content_type, sha1, length(data) FROM representations "
                "WHERE doc_id = ? ORDER BY ordinal",
                (doc_id,),
            ).fetchall()
        return doc, [Representation(int(r[0]), r[1], r[2], int(r[3])) for r in rows]

    def representation_bytes(self, doc_id: str, ordinal: int) -> bytes:
        with self._connect() as db:
            row = db.execute(
                "SELECT data FROM representations WHERE doc_id = ? AND ordinal = ?", (doc_id, ordinal)
            ).fetchone()
        if row is None:
            raise InvalidRequest(f"Binary/{doc_id} has no representation {ordinal}")
        return bytes(row[0])

    # -- PDQm --------------------------------------------------------------------------------------
    def patient(self, patient_id: str) -> dict[str, Any] | None:
        with self._connect() as db:
            row = db.execute("SELECT resource FROM patients WHERE id = ?", (patient_id,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def search_patients(
        self, q: PatientQuery, *, offset: int, count: int
    ) -> tuple[int, list[dict[str, Any]]]:
        where, args = self._patient_where(q)
        with self._connect() as db:
            total = db.execute(f"SELECT COUNT(*) FROM patients p WHERE {where}", args).fetchone()[0]
            rows = db.execute(
                f"SELECT resource FROM patients p WHERE {where} ORDER BY p.rowid LIMIT ? OFFSET ?",
                [*args, count, offset],
            ).fetchall()
        return int(total), [json.loads(r[0]) for r in rows]

    @staticmethod
    def _patient_where(q: PatientQuery) -> tuple[str, list[str]]:
        parts: list[tuple[str, list[str]]] = [("1 = 1", [])]
        parts += [_in("p.id", ids) for ids in q.ids]
        parts += [_in("p.gender", values) for values in q.gender]
        for alts in q.identifiers:
            sql, args = _or([_token_sql(a, "system", "value") for a in alts])
            parts.append((f"p.id IN (SELECT patient_id FROM patient_identifiers WHERE {sql})", args))
        for column, clauses in (("p.family", q.family), ("p.given", q.given)):
            for values in clauses:  # FHIR string search: case-insensitive starts-with
                parts.append(_or([(f"{column} LIKE ? ESCAPE '\\'", [_like_prefix(v)]) for v in values]))
        for alts_ in q.birthdate:
            parts.append(_or([_date_sql(a, "p.birth_lo", "p.birth_hi") for a in alts_]))
        return " AND ".join(sql for sql, _ in parts), [a for _, args in parts for a in args]

    # -- health ------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        with self._connect() as db:
            documents = db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
            patients = db.execute("SELECT COUNT(*) FROM patients").fetchone()[0]
        return {"documents": int(documents), "patients": int(patients)}


def _like_prefix(value: str) -> str:
    escaped = value.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"
