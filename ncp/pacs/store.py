"""The PACS file store: PS3.10 files under ``{root}/{study}/{series}/{sop}.dcm`` plus a SQLite index.

Blocking by design: the HTTP layer calls it through ``run_in_threadpool``. One SQLite connection
per call (safe across threads), WAL so searches never wait for a writer. Paths are built only
from UIDs that passed :func:`ncp.dicom.uids.validate_uid`.

Storing is two-phase so that a rejected STOW request leaves the store unchanged: :meth:`stage`
checks one instance and writes it under ``.incoming/`` (random name), :meth:`commit` moves
staged files into place (``os.replace``, so a retrieval already streaming the old file keeps
reading it) and updates the index in one transaction; :meth:`discard` drops them.

What ``stage`` refuses (a :class:`StoreFailure` carrying the PS3.18 10.5 failure reason):
non-Part-10 bytes, Deflated Explicit VR (inflation unbounded) and Big Endian transfer syntaxes,
structurally unsound encodings (:mod:`ncp.pacs.part10`: lengths beyond the file, sequences
nested deeper than ``max_depth``), missing or malformed UIDs, and a
Study Instance UID other than the one in the request URL. Implicit VR Little Endian files are
converted to Explicit VR Little Endian, since Implicit VR shall not be used on the Web (PS3.18
8.7.3); every other accepted file is stored byte for byte.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID

from ncp.dicom.media import TransferSyntax
from ncp.dicom.uids import is_valid_uid
from ncp.pacs.part10 import StructureError, check_structure

__all__ = [
    "FAILURE_CANNOT_UNDERSTAND",
    "FAILURE_DOES_NOT_MATCH_SOP_CLASS",
    "FAILURE_OUT_OF_RESOURCES",
    "FAILURE_PROCESSING",
    "FAILURE_TRANSFER_SYNTAX",
    "Condition",
    "InstanceStore",
    "Level",
    "StagedInstance",
    "StoreFailure",
    "StoredInstance",
]

# PS3.18 Table 10.5.3-2 Store Instances Response Failure Reasons (US values of (0008,1197)).
FAILURE_PROCESSING = 0x0110
FAILURE_OUT_OF_RESOURCES = 0xA700
FAILURE_DOES_NOT_MATCH_SOP_CLASS = 0xA900
FAILURE_CANNOT_UNDERSTAND = 0xC000
FAILURE_TRANSFER_SYNTAX = 0xC122

Level = Literal["study", "series", "instance"]

_INDEX = "index.sqlite"
_INCOMING = ".incoming"
_BULK = "\x00bulk"  # marker for bulk data left out of stored metadata
_REFUSED_SYNTAXES = {
    TransferSyntax.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN.value: "Deflated syntax refused (inflation bomb)",
    TransferSyntax.EXPLICIT_VR_BIG_ENDIAN.value: "Explicit VR Big Endian is retired and not accepted",
}

_COLUMNS = (
    "sop_uid", "sop_class_uid", "study_uid", "series_uid", "transfer_syntax", "size",
    "patient_id", "patient_name", "patient_birth_date", "patient_sex",
    "study_date", "study_time", "accession_number", "study_id", "study_description", "referring_physician",
    "modality", "series_number", "series_description", "body_part",
    "instance_number", "rows", "columns", "frames", "has_pixels", "meta",
)  # fmt: skip

_INTEGER_COLUMNS = {"size", "series_number", "instance_number", "rows", "columns", "frames", "has_pixels"}
_COLUMN_TYPES = {c: "INTEGER" if c in _INTEGER_COLUMNS else "TEXT" for c in _COLUMNS} | {
    "sop_uid": "TEXT PRIMARY KEY"
}
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS instances ({", ".join(f"{c} {t}" for c, t in _COLUMN_TYPES.items())});
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_uid, series_uid);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid);
CREATE INDEX IF NOT EXISTS instances_patient ON instances(patient_id);
CREATE INDEX IF NOT EXISTS instances_accession ON instances(accession_number);
CREATE INDEX IF NOT EXISTS instances_date ON instances(study_date);
"""

# Ordering of results (PS3.18 leaves it to the server): by date, then number, then UID.
_ORDER = {
    "study": "study_date, study_time, study_uid",
    "series": "study_date, study_uid, series_number, series_uid",
    "instance": "study_uid, series_number, series_uid, instance_number, sop_uid",
}
_GROUP = {"study": "study_uid", "series": "series_uid", "instance": None}


class StoreFailure(Exception):
    """An instance the store refuses; becomes an item of the STOW FailedSOPSequence (0008,1198)."""

    def __init__(
        self, reason: int, message: str, sop_class_uid: str = "", sop_instance_uid: str = ""
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid


@dataclass(frozen=True)
class StoredInstance:
    """What retrieval needs of one indexed instance."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    size: int
    has_pixels: bool

    @property
    def relpath(self) -> Path:
        return Path(self.study_uid, self.series_uid, f"{self.sop_uid}.dcm")


@dataclass(frozen=True)
class StagedInstance:
    """A checked instance waiting under ``.incoming/`` for :meth:`InstanceStore.commit`."""

    tmp: Path
    instance: StoredInstance
    row: dict[str, Any]


@dataclass(frozen=True)
class Condition:
    """One QIDO matching condition on an index column (PS3.4 C.2.2.2).

    Exactly one form is used: ``values`` (single value or UID list matching), ``pattern``
    (wildcard ``*``/``?``), or ``low``/``high`` (inclusive range; either may be None).
    ``in_study`` matches studies where any instance matches (ModalitiesInStudy).
    """

    column: str
    values: tuple[str, ...] = ()
    pattern: str | None = None
    low: str | None = None
    high: str | None = None
    in_study: bool = False


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    return "\\".join(str(v) for v in value) if isinstance(value, pydicom.multival.MultiValue) else str(value)


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _strip_bulk(node: Any) -> Any:
    """Drop elements whose value was replaced by the bulk-data marker, at any depth."""
    if isinstance(node, dict):
        return {
            k: _strip_bulk(v)
            for k, v in node.items()
            if not (isinstance(v, dict) and v.get("BulkDataURI") == _BULK)
        }
    if isinstance(node, list):
        return [_strip_bulk(v) for v in node]
    return node


def _metadata(ds: Dataset) -> dict[str, Any]:
    """DICOM JSON (PS3.18 F.2) without bulk data: binary values over 1 KiB are omitted."""
    raw = ds.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=lambda _: _BULK)
    return dict(_strip_bulk(raw))


class InstanceStore:
    """PS3.10 files and their index under one directory."""

    def __init__(self, root: Path, *, max_depth: int = 12) -> None:
        self.root = root
        self.max_depth = max_depth
        self.incoming = root / _INCOMING
        self.incoming.mkdir(parents=True, exist_ok=True)
        self._db = root / _INDEX
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self._db, timeout=30)) as conn:
            conn.row_factory = sqlite3.Row
            with conn:
                yield conn

    def path(self, instance: StoredInstance) -> Path:
        return self.root / instance.relpath

    # -- storing -------------------------------------------------------------------------------------
    def stage(self, data: bytes, *, study_uid: str | None = None) -> StagedInstance:
        """Check one PS3.10 file and write it under ``.incoming/``; raise StoreFailure if refused."""
        tmp = self.incoming / f"{uuid.uuid4().hex}.part"
        try:
            tmp.write_bytes(data)
            return self._stage_file(tmp, data, study_uid)
        except StoreFailure:
            tmp.unlink(missing_ok=True)
            raise
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreFailure(FAILURE_OUT_OF_RESOURCES, f"cannot write: {exc.strerror}") from None
        except Exception as exc:  # pydicom raises many types on hostile input; none may escape as a 500
            tmp.unlink(missing_ok=True)
            raise StoreFailure(
                FAILURE_CANNOT_UNDERSTAND, f"cannot parse: {type(exc).__name__}: {exc}"
            ) from None

    def _stage_file(self, tmp: Path, data: bytes, study_uid: str | None) -> StagedInstance:
        ts = self._check_meta(tmp)
        try:
            check_structure(
                data, explicit_vr=ts != TransferSyntax.IMPLICIT_VR_LITTLE_ENDIAN, max_depth=self.max_depth
            )
        except StructureError as exc:
            raise StoreFailure(FAILURE_CANNOT_UNDERSTAND, f"malformed encoding: {exc}") from None
        ds = pydicom.dcmread(tmp, force=False)
        sop_class, sop = _text(ds, "SOPClassUID"), _text(ds, "SOPInstanceUID")
        self._check_identity(ds, sop_class, sop, study_uid)
        if ts == TransferSyntax.IMPLICIT_VR_LITTLE_ENDIAN:
            ds.file_meta.TransferSyntaxUID = UID(TransferSyntax.EXPLICIT_VR_LITTLE_ENDIAN.value)
            ds.save_as(tmp, enforce_file_format=True)
            ts = TransferSyntax.EXPLICIT_VR_LITTLE_ENDIAN.value
        instance = StoredInstance(
            study_uid=_text(ds, "StudyInstanceUID"),
            series_uid=_text(ds, "SeriesInstanceUID"),
            sop_uid=sop,
            sop_class_uid=sop_class,
            transfer_syntax=ts,
            size=tmp.stat().st_size,
            has_pixels="PixelData" in ds,
        )
        return StagedInstance(tmp, instance, self._row(ds, instance))

    @staticmethod
    def _check_meta(tmp: Path) -> str:
        """Read only the file meta group first: the transfer syntax decides whether to parse at all."""
        try:
            meta = read_file_meta_info(tmp)
        except InvalidDicomError:
            raise StoreFailure(
                FAILURE_CANNOT_UNDERSTAND, "not a DICOM PS3.10 file (no DICM prefix)"
            ) from None
        ts = str(meta.get("TransferSyntaxUID", ""))
        if ts in _REFUSED_SYNTAXES:
            raise StoreFailure(FAILURE_TRANSFER_SYNTAX, _REFUSED_SYNTAXES[ts])
        uid = UID(ts)
        if not uid.is_transfer_syntax or not uid.is_little_endian:
            raise StoreFailure(FAILURE_TRANSFER_SYNTAX, f"unsupported transfer syntax {ts[:64]!r}")
        return ts

    @staticmethod
    def _check_identity(ds: Dataset, sop_class: str, sop: str, study_uid: str | None) -> None:
        uids = {
            "SOPClassUID": sop_class,
            "SOPInstanceUID": sop,
            "StudyInstanceUID": _text(ds, "StudyInstanceUID"),
            "SeriesInstanceUID": _text(ds, "SeriesInstanceUID"),
        }
        shown_class, shown_sop = (
            (sop_class if is_valid_uid(sop_class) else ""),
            (sop if is_valid_uid(sop) else ""),
        )
        for keyword, value in uids.items():
            if not is_valid_uid(value):
                raise StoreFailure(
                    FAILURE_DOES_NOT_MATCH_SOP_CLASS,
                    f"{keyword} missing or not a valid UID",
                    shown_class,
                    shown_sop,
                )
        if _text(ds.file_meta, "MediaStorageSOPInstanceUID") not in ("", sop):
            raise StoreFailure(
                FAILURE_DOES_NOT_MATCH_SOP_CLASS,
                "MediaStorageSOPInstanceUID differs from SOPInstanceUID (PS3.10 7.1)",
                sop_class,
                sop,
            )
        if study_uid is not None and uids["StudyInstanceUID"] != study_uid:
            # PS3.18 10.5.1: instances of another study than the target are not stored.
            raise StoreFailure(
                FAILURE_PROCESSING, f"StudyInstanceUID is not the target study {study_uid}", sop_class, sop
            )

    @staticmethod
    def _row(ds: Dataset, inst: StoredInstance) -> dict[str, Any]:
        return {
            "sop_uid": inst.sop_uid,
            "sop_class_uid": inst.sop_class_uid,
            "study_uid": inst.study_uid,
            "series_uid": inst.series_uid,
            "transfer_syntax": inst.transfer_syntax,
            "size": inst.size,
            "patient_id": _text(ds, "PatientID"),
            "patient_name": _text(ds, "PatientName"),
            "patient_birth_date": _text(ds, "PatientBirthDate"),
            "patient_sex": _text(ds, "PatientSex"),
            "study_date": _text(ds, "StudyDate"),
            "study_time": _text(ds, "StudyTime"),
            "accession_number": _text(ds, "AccessionNumber"),
            "study_id": _text(ds, "StudyID"),
            "study_description": _text(ds, "StudyDescription"),
            "referring_physician": _text(ds, "ReferringPhysicianName"),
            "modality": _text(ds, "Modality"),
            "series_number": _int(ds, "SeriesNumber"),
            "series_description": _text(ds, "SeriesDescription"),
            "body_part": _text(ds, "BodyPartExamined"),
            "instance_number": _int(ds, "InstanceNumber"),
            "rows": _int(ds, "Rows"),
            "columns": _int(ds, "Columns"),
            "frames": _int(ds, "NumberOfFrames"),
            "has_pixels": int(inst.has_pixels),
            "meta": json.dumps(_metadata(ds)),
        }

    def commit(self, staged: Sequence[StagedInstance]) -> None:
        """Move staged files into place and index them; a stored SOP Instance UID is replaced."""
        moved: list[str] = []
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            for item in staged:
                inst = item.instance
                old = conn.execute(
                    "SELECT study_uid, series_uid FROM instances WHERE sop_uid = ?", (inst.sop_uid,)
                ).fetchone()
                final = self.path(inst)
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(item.tmp, final)
                if old is not None and (old["study_uid"], old["series_uid"]) != (
                    inst.study_uid,
                    inst.series_uid,
                ):
                    moved.append(str(Path(old["study_uid"], old["series_uid"], f"{inst.sop_uid}.dcm")))
                columns = ", ".join(_COLUMNS)
                marks = ", ".join("?" for _ in _COLUMNS)
                conn.execute(
                    f"INSERT OR REPLACE INTO instances ({columns}) VALUES ({marks})",
                    [item.row[c] for c in _COLUMNS],
                )
        for rel in moved:  # the instance changed study or series: its old file is stale
            with suppress(OSError):
                (self.root / rel).unlink()

    def discard(self, staged: Sequence[StagedInstance]) -> None:
        for item in staged:
            item.tmp.unlink(missing_ok=True)

    def put(self, data: bytes) -> StoredInstance:
        """Stage and commit one instance (seeding, tests)."""
        staged = self.stage(data)
        self.commit([staged])
        return staged.instance

    # -- reading -------------------------------------------------------------------------------------
    def instances(
        self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
    ) -> list[StoredInstance]:
        """Instances of a study, series or one instance, in series/instance number order."""
        where, params = ["study_uid = ?"], [study_uid]
        if series_uid is not None:
            where.append("series_uid = ?")
            params.append(series_uid)
        if sop_uid is not None:
            where.append("sop_uid = ?")
            params.append(sop_uid)
        sql = (
            "SELECT study_uid, series_uid, sop_uid, sop_class_uid, transfer_syntax, size, has_pixels "
            f"FROM instances WHERE {' AND '.join(where)} ORDER BY {_ORDER['instance']}"
        )
        with self._connect() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [StoredInstance(**{**dict(r), "has_pixels": bool(r["has_pixels"])}) for r in rows]

    def metadata(self, sop_uids: Sequence[str]) -> list[dict[str, Any]]:
        """Stored DICOM JSON of the given instances, in the given order."""
        if not sop_uids:
            return []
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT sop_uid, meta FROM instances WHERE sop_uid IN ({', '.join('?' * len(sop_uids))})",
                list(sop_uids),
            ).fetchall()
        by_uid = {r["sop_uid"]: r["meta"] for r in rows}
        return [json.loads(by_uid[u]) for u in sop_uids if u in by_uid]

    def search(
        self,
        level: Level,
        conditions: Sequence[Condition],
        *,
        limit: int,
        offset: int = 0,
        exclude: Collection[str] = (),
    ) -> list[dict[str, Any]]:
        """Index rows (one per study, series or instance) matching all ``conditions``.

        Study and series rows carry ``n_series``, ``n_instances`` and ``modalities`` aggregated
        over the instances not in ``exclude``; their other columns come from one instance.
        """
        where, params = self._where(conditions, exclude)
        group = _GROUP[level]
        # Bare columns come from the MIN(rowid) row (SQLite "bare columns in an aggregate query").
        aggregates = (
            ", COUNT(DISTINCT series_uid) AS n_series, COUNT(*) AS n_instances, "
            "GROUP_CONCAT(DISTINCT modality) AS modalities, MIN(rowid) AS representative"
        )
        sql = (
            f"SELECT *{aggregates if group else ''} FROM instances {where}"
            f"{f' GROUP BY {group}' if group else ''} ORDER BY {_ORDER[level]} LIMIT ? OFFSET ?"
        )
        with self._connect() as conn:
            rows = conn.execute(sql, [*params, limit, offset]).fetchall()
        return [dict(r) for r in rows]

    @staticmethod
    def _where(conditions: Sequence[Condition], exclude: Collection[str]) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for cond in conditions:
            if cond.column not in _COLUMNS:
                raise ValueError(f"not an index column: {cond.column!r}")
            clause, values = _clause(cond)
            if cond.in_study:
                clause = f"study_uid IN (SELECT study_uid FROM instances WHERE {clause})"
            clauses.append(clause)
            params.extend(values)
        if exclude:
            clauses.append(f"sop_uid NOT IN ({', '.join('?' * len(exclude))})")
            params.extend(exclude)
        return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


def _glob(pattern: str) -> str:
    """A DICOM wildcard (PS3.4 C.2.2.2.4: ``*`` any run, ``?`` one character) as a SQLite GLOB."""
    return pattern.replace("[", "[[]")


def _clause(cond: Condition) -> tuple[str, list[Any]]:
    col = cond.column
    if cond.pattern is not None:
        return f"{col} GLOB ?", [_glob(cond.pattern)]
    if cond.values:
        return f"{col} IN ({', '.join('?' * len(cond.values))})", list(cond.values)
    parts, values = [f"{col} != ''"], []
    if cond.low is not None:
        parts.append(f"{col} >= ?")
        values.append(cond.low)
    if cond.high is not None:
        parts.append(f"{col} <= ?")
        values.append(cond.high)
    return " AND ".join(parts), values
