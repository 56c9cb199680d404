"""The XDS store: DocumentEntries with their query keys, SubmissionSets and document bytes, in SQLite.

Blocking by design (the app calls it through ``run_in_threadpool``), one connection per call, WAL,
like ncp.registry.store. A Provide and Register is one ``BEGIN IMMEDIATE`` transaction: a refused
submission stores nothing (ITI TF-2b 3.42.4.1.3: the registry "shall reject the entire submission").
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ncp.registry.sqlite import connection, transaction
from ncp.registry.xds.ebrim import Coded, DocumentEntry, SubmissionSet, XdsError

__all__ = ["XdsStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    entry_uuid TEXT PRIMARY KEY, unique_id TEXT NOT NULL UNIQUE, patient_id TEXT NOT NULL,
    status TEXT NOT NULL, submission_set TEXT NOT NULL, entry TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS documents_patient ON documents(patient_id, status);
CREATE TABLE IF NOT EXISTS document_refs (
    entry_uuid TEXT NOT NULL REFERENCES documents(entry_uuid), value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS document_refs_value ON document_refs(value);
CREATE TABLE IF NOT EXISTS contents (
    unique_id TEXT PRIMARY KEY REFERENCES documents(unique_id), mime_type TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS submission_sets (
    entry_uuid TEXT PRIMARY KEY, unique_id TEXT NOT NULL UNIQUE, entry TEXT NOT NULL);
"""
_CODED_FIELDS = (
    "class_code",
    "type_code",
    "format_code",
    "confidentiality_code",
    "healthcare_facility_type",
    "practice_setting",
)


def _entry_json(entry: DocumentEntry) -> str:
    return json.dumps(asdict(entry))


def _entry_from_json(text: str) -> DocumentEntry:
    data: dict[str, Any] = json.loads(text)
    for name in _CODED_FIELDS:
        data[name] = Coded(**data[name])
    data["event_codes"] = tuple(Coded(**c) for c in data["event_codes"])
    data["reference_ids"] = tuple(data["reference_ids"])
    return DocumentEntry(**data)


class XdsStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with connection(self.path) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    def submit(self, submission_set: SubmissionSet, documents: Sequence[tuple[DocumentEntry, bytes]]) -> None:
        """Register and store a whole submission, or nothing (XDSDuplicateUniqueIdInRegistry)."""
        with transaction(self.path) as db:
            try:
                db.execute(
                    "INSERT INTO submission_sets VALUES (?, ?, ?)",
                    (submission_set.entry_uuid, submission_set.unique_id, json.dumps(asdict(submission_set))),
                )
                for entry, data in documents:
                    self._insert(db, submission_set.entry_uuid, entry, data)
            except sqlite3.IntegrityError:
                raise XdsError(
                    "XDSDuplicateUniqueIdInRegistry", "a uniqueId or entryUUID is already registered"
                ) from None

    @staticmethod
    def _insert(db: sqlite3.Connection, submission_set: str, entry: DocumentEntry, data: bytes) -> None:
        db.execute(
            "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?)",
            (
                entry.entry_uuid,
                entry.unique_id,
                entry.patient_id,
                entry.status,
                submission_set,
                _entry_json(entry),
            ),
        )
        db.executemany(
            "INSERT INTO document_refs VALUES (?, ?)",
            [(entry.entry_uuid, ref) for ref in entry.reference_ids],
        )
        db.execute("INSERT INTO contents VALUES (?, ?, ?)", (entry.unique_id, entry.mime_type, data))

    def _select(self, sql: str, args: Sequence[str]) -> list[DocumentEntry]:
        with connection(self.path) as db:
            return [_entry_from_json(row[0]) for row in db.execute(sql, args)]

    def by_patient(self, patient_id: str, statuses: Sequence[str]) -> list[DocumentEntry]:
        marks = ",".join("?" * len(statuses))
        sql = f"SELECT entry FROM documents WHERE patient_id = ? AND status IN ({marks}) ORDER BY rowid"
        return self._select(sql, [patient_id, *statuses])

    def by_reference(
        self, patient_id: str, statuses: Sequence[str], refs: Sequence[str]
    ) -> list[DocumentEntry]:
        """Entries of the patient holding any of ``refs`` in their referenceIdList (exact CXi values)."""
        marks, ref_marks = ",".join("?" * len(statuses)), ",".join("?" * len(refs))
        sql = (
            f"SELECT entry FROM documents WHERE patient_id = ? AND status IN ({marks}) AND entry_uuid IN "
            f"(SELECT entry_uuid FROM document_refs WHERE value IN ({ref_marks})) ORDER BY rowid"
        )
        return self._select(sql, [patient_id, *statuses, *refs])

    def by_ids(self, entry_uuids: Sequence[str], unique_ids: Sequence[str]) -> list[DocumentEntry]:
        marks, unique_marks = ",".join("?" * len(entry_uuids)), ",".join("?" * len(unique_ids))
        sql = (
            f"SELECT entry FROM documents WHERE entry_uuid IN ({marks}) OR unique_id IN ({unique_marks}) "
            "ORDER BY rowid"
        )
        return self._select(sql, [*entry_uuids, *unique_ids])

    def content(self, unique_id: str) -> tuple[str, bytes] | None:
        with connection(self.path) as db:
            row = db.execute(
                "SELECT mime_type, data FROM contents WHERE unique_id = ?", (unique_id,)
            ).fetchone()
        return (row[0], bytes(row[1])) if row else None

    def counts(self) -> dict[str, int]:
        with connection(self.path) as db:
            documents = db.execute("SELECT count(*) FROM documents").fetchone()[0]
            sets = db.execute("SELECT count(*) FROM submission_sets").fetchone()[0]
        return {"documents": documents, "submission_sets": sets}
