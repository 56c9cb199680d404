"""The PACS file store: PS3.10 files under ``{root}/{study}/{series}/{sop}.dcm`` plus a SQLite index.

Blocking by design: the HTTP layer calls it through ``run_in_threadpool``. One SQLite connection
per call (safe across threads), WAL so searches never wait for a writer. Paths are built only
from UIDs that passed :func:`ncp.dicom.uids.validate_uid`.

Storing is two-phase so that a rejected STOW request leaves the store unchanged: :meth:`stage`
checks one instance and writes it under ``.incoming/`` (random name), :meth:`commit` moves
staged files into place (``os.replace``, so a retrieval already streaming the old file keeps
reading it) and updates the index in one transaction; :meth:`discard` drops them.

What ``stage`` accepts (:func:`_normalise` brings it to a little-endian PS3.10 file first): a
PS3.10 file, a file meta group without the preamble, a bare dataset (PS3.10 7.1 aside, Orthanc and
DICOMweb clients send them), Deflated (inflated within ``max_inflated`` bytes) and Big Endian files
(stored converted to Explicit VR Little Endian, since neither shall be used on the Web, PS3.18 8.7.3),
Implicit VR Little Endian (converted likewise), and a Media Storage SOP Instance UID other than the
SOP Instance UID (the dataset wins: the file meta is rewritten, the dataset bytes kept).
What it refuses (a :class:`StoreFailure` carrying the PS3.18 Table 10.5.3-2 failure reason): bytes
that are not DICOM, structurally unsound encodings (:mod:`ncp.pacs.part10`: lengths beyond the file,
sequences nested deeper than ``max_depth``), missing or malformed identifying UIDs, unknown transfer
syntaxes, and a Study Instance UID other than the one in the request URL.

Metadata is kept with the index as DICOM JSON (PS3.18 F.2) of every attribute, character sets
decoded; bulk data (:func:`is_bulk`) is a ``BulkDataURI`` relative to the instance's URL
(``bulkdata/{tag}[/{item}/{tag}...]``, items numbered from 1) that :func:`resolve_bulk` completes.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import struct
import uuid
import zlib
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID

from ncp.dicom.media import TransferSyntax
from ncp.dicom.uids import is_valid_uid
from ncp.pacs.part10 import StructureError, check_structure

__all__ = [
    "FAILURE_CANNOT_UNDERSTAND",
    "FAILURE_OUT_OF_RESOURCES",
    "FAILURE_PROCESSING",
    "FAILURE_TRANSFER_SYNTAX",
    "Condition",
    "InstanceStore",
    "Level",
    "StagedInstance",
    "StoreFailure",
    "StoredInstance",
    "is_bulk",
    "resolve_bulk",
    "without_bulk",
]

# PS3.18 Table 10.5.3-2 Store Instances Response Failure Reasons (US values of (0008,1197)).
# 0xA900 (Data Set does not match SOP Class) is not used: the store does not validate IODs.
FAILURE_PROCESSING = 0x0110
FAILURE_OUT_OF_RESOURCES = 0xA700
FAILURE_CANNOT_UNDERSTAND = 0xC000
FAILURE_TRANSFER_SYNTAX = 0xC122

Level = Literal["study", "series", "instance"]

_INDEX = "index.sqlite"
_INCOMING = ".incoming"
_EVLE = TransferSyntax.EXPLICIT_VR_LITTLE_ENDIAN.value
_IVLE = TransferSyntax.IMPLICIT_VR_LITTLE_ENDIAN.value
_DEFLATED = TransferSyntax.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN.value
_BIG_ENDIAN = TransferSyntax.EXPLICIT_VR_BIG_ENDIAN.value
_PREAMBLE = b"\0" * 128 + b"DICM"
_META_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
_VRS = {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN", b"SH",
    b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
} | _META_LONG_VRS  # fmt: skip
_WORD_SIZE = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}  # byte-swapped from Big Endian (PS3.5 7.3)

BULK_THRESHOLD = 1024  # binary values longer than this are bulk data (the 1 KiB)
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
# Always bulk, whatever their size: Float/Double/Pixel Data, Waveform Data, Encapsulated Document.
_BULK_TAGS = {0x7FE00008, 0x7FE00009, 0x7FE00010, 0x54001010, 0x00420011}
_BULK = "bulkdata/"

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
    """One QIDO matching condition (PS3.4 C.2.2.2) on an index column or, with ``tag``, on an
    attribute of the stored DICOM JSON (``column`` is then ``"meta"``; any of its values may match,
    a person name by any component group when ``person_name``).

    Exactly one form is used: ``values`` (single value, value list or UID list matching; numbers for
    numeric VRs), ``pattern`` (wildcard ``*``/``?``), or ``low``/``high`` (inclusive range; either
    may be None). ``in_study`` / ``in_series`` match the studies / series where any instance matches
    (ModalitiesInStudy, and keys of a lower level than the one searched: relational matching).
    """

    column: str
    values: tuple[str | float, ...] = ()
    pattern: str | None = None
    low: str | None = None
    high: str | None = None
    in_study: bool = False
    in_series: bool = False
    tag: str = ""
    person_name: bool = False


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


def is_bulk(elem: DataElement) -> bool:
    """Bulk data (a BulkDataURI, PS3.18 F.2.6): pixel, waveform and overlay data, an encapsulated
    document, and any other binary value longer than :data:`BULK_THRESHOLD` bytes."""
    if elem.VR not in _BINARY_VRS or elem.is_empty:
        return False
    tag = int(elem.tag)
    overlay = tag & 0xFF01FFFF == 0x60003000  # Overlay Data (60xx,3000), even groups 6000-601E
    return tag in _BULK_TAGS or overlay or len(elem.value) > BULK_THRESHOLD


def _json(ds: Dataset, path: str = _BULK) -> dict[str, Any]:
    """DICOM JSON (PS3.18 F.2) of every attribute but group lengths; bulk data as a relative URI."""
    out: dict[str, Any] = {}
    for elem in ds:
        if elem.tag.element == 0:
            continue
        tag = f"{int(elem.tag):08X}"
        if elem.VR == "SQ":
            items = [_json(item, f"{path}{tag}/{n}/") for n, item in enumerate(elem.value, 1)]
            out[tag] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
        elif is_bulk(elem):
            out[tag] = {"vr": elem.VR, "BulkDataURI": path + tag}
        else:
            out[tag] = _element_json(elem)
    return out


def _element_json(elem: DataElement) -> dict[str, Any]:
    """One attribute in DICOM JSON; a value JSON cannot carry (IS "x") is left out, not the instance:
    archives store such files, and the file keeps the value for retrieval."""
    try:
        return dict(elem.to_json_dict(None, BULK_THRESHOLD))
    except (ValueError, TypeError, OverflowError):
        return {"vr": elem.VR}


def _walk_bulk(node: Any, replace: Callable[[dict[str, Any]], dict[str, Any] | None]) -> Any:
    if isinstance(node, list):
        return [_walk_bulk(v, replace) for v in node]
    if not isinstance(node, dict):
        return node
    if isinstance(node.get("BulkDataURI"), str) and node["BulkDataURI"].startswith(_BULK):
        return replace(node)
    out = {}
    for key, value in node.items():
        walked = _walk_bulk(value, replace)
        if walked is not None:
            out[key] = walked
    return out


def resolve_bulk(meta: dict[str, Any], instance_url: str) -> dict[str, Any]:
    """Stored metadata with each BulkDataURI made absolute under ``instance_url``."""
    return dict(
        _walk_bulk(meta, lambda attr: {**attr, "BulkDataURI": f"{instance_url}/{attr['BulkDataURI']}"})
    )


def without_bulk(meta: dict[str, Any]) -> dict[str, Any]:
    """Stored metadata without its bulk data attributes (search results carry none)."""
    return dict(_walk_bulk(meta, lambda _: None))


# -- bringing a stored part to a little-endian PS3.10 file -------------------------------------------
def _cannot(message: str) -> StoreFailure:
    return StoreFailure(FAILURE_CANNOT_UNDERSTAND, message)


def _meta_bytes(meta: FileMetaDataset, *, complete: bool = True) -> bytes:
    out = io.BytesIO()
    write_file_meta_info(out, meta, enforce_standard=complete)  # type: ignore[arg-type]
    return out.getvalue()


def _bare_dataset_meta(data: bytes) -> FileMetaDataset:
    """File meta for a dataset sent without one, its encoding guessed from its first element.

    A composite instance starts with group 0008 (SOP Common: SOP Class UID is Type 1, PS3.3 C.12.1),
    so anything else is not taken for a dataset.
    """
    if len(data) < 8 or data[:2] not in (b"\x08\x00", b"\x00\x08"):
        raise _cannot("not a DICOM PS3.10 file nor a DICOM dataset")
    explicit, little = data[4:6] in _VRS, data[:2] == b"\x08\x00"
    if not (explicit or little):
        raise _cannot("an Implicit VR Big Endian dataset is not a DICOM encoding")
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = UID(_EVLE if explicit and little else _BIG_ENDIAN if explicit else _IVLE)
    return meta


def _with_meta(data: bytes) -> bytes:
    """A PS3.10 file: as is, with the preamble added (meta without one) or with a meta group made."""
    if data[128:132] == b"DICM":
        return data
    if data[:2] == b"\x02\x00":
        return _PREAMBLE + data
    return _PREAMBLE + _meta_bytes(_bare_dataset_meta(data), complete=False) + data


def _read_meta(data: bytes) -> tuple[FileMetaDataset, int]:
    """The file meta group (PS3.10 7.1, Explicit VR Little Endian) and the offset of the dataset."""
    pos = 132
    while pos + 8 <= len(data) and data[pos : pos + 2] == b"\x02\x00":
        if data[pos + 4 : pos + 6] in _META_LONG_VRS:
            pos += 12 + struct.unpack_from("<I", data, pos + 8)[0]
        else:
            pos += 8 + struct.unpack_from("<H", data, pos + 6)[0]
    if pos > len(data):
        raise _cannot("truncated file meta information")
    return pydicom.dcmread(io.BytesIO(data[:pos]), force=True).file_meta, pos


def _inflate(body: bytes, limit: int) -> bytes:
    """A Deflated dataset (PS3.5 A.5, raw RFC 1951) inflated, refused beyond ``limit`` bytes."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = inflater.decompress(body, limit + 1)
    if len(out) > limit:
        raise StoreFailure(FAILURE_OUT_OF_RESOURCES, f"Deflated dataset inflates beyond {limit} bytes")
    if not inflater.eof:
        raise _cannot("Deflated dataset truncated")
    return out  # bytes after the stream's end (padding, a gzip trailer some writers leave) are dropped


def _to_little_endian(data: bytes, max_depth: int) -> bytes:
    """An Explicit VR Big Endian file as Explicit VR Little Endian: pydicom re-encodes numbers and
    text; words of OW/OF/OL/OD/OV values it keeps as bytes are swapped here (PS3.5 7.3)."""
    try:
        check_structure(data, explicit_vr=True, max_depth=max_depth, little_endian=False)
    except StructureError as exc:
        raise _cannot(f"malformed encoding: {exc}") from None
    ds = pydicom.dcmread(io.BytesIO(data))
    bits = _int(ds, "BitsAllocated") or 0
    for elem in ds.iterall():
        size = _WORD_SIZE.get(elem.VR)
        if elem.tag == 0x7FE00010 and elem.VR == "OW" and bits in (32, 64):
            size = bits // 8  # 32/64-bit pixels in OW are swapped whole, not per 16-bit word
        if size and isinstance(elem.value, bytes) and len(elem.value) % size == 0:
            elem.value = np.frombuffer(elem.value, f">u{size}").astype(f"<u{size}").tobytes()
    ds.file_meta.TransferSyntaxUID = UID(_EVLE)
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def _normalise(data: bytes, max_inflated: int, max_depth: int) -> bytes:
    """A PS3.10 file in a little-endian transfer syntax: Deflated inflated, Big Endian converted."""
    data = _with_meta(data)
    meta, start = _read_meta(data)
    ts = str(meta.get("TransferSyntaxUID", ""))
    if ts == _DEFLATED:
        meta.TransferSyntaxUID = UID(_EVLE)
        return _PREAMBLE + _meta_bytes(meta, complete=False) + _inflate(data[start:], max_inflated)
    if ts == _BIG_ENDIAN:
        return _to_little_endian(data, max_depth)
    return data


def _check_syntax(meta: FileMetaDataset) -> str:
    ts = str(meta.get("TransferSyntaxUID", ""))
    if not ts:
        raise _cannot("no Transfer Syntax UID in the file meta information")
    uid = UID(ts)
    if not uid.is_transfer_syntax or not uid.is_little_endian or uid.is_deflated:
        raise StoreFailure(FAILURE_TRANSFER_SYNTAX, f"unsupported transfer syntax {ts[:64]!r}")
    return ts


class InstanceStore:
    """PS3.10 files and their index under one directory."""

    def __init__(self, root: Path, *, max_depth: int = 12, max_inflated: int = 1 << 30) -> None:
        self.root = root
        self.max_depth = max_depth
        self.max_inflated = max_inflated  # a Deflated dataset is refused beyond this (inflation bomb)
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
        """Check one instance and write it under ``.incoming/``; raise StoreFailure if refused."""
        tmp = self.incoming / f"{uuid.uuid4().hex}.part"
        try:
            return self._stage_file(tmp, _normalise(data, self.max_inflated, self.max_depth), study_uid)
        except StoreFailure:
            tmp.unlink(missing_ok=True)
            raise
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreFailure(FAILURE_OUT_OF_RESOURCES, f"cannot write: {exc.strerror}") from None
        except Exception as exc:  # pydicom raises many types on hostile input; none may escape as a 500
            tmp.unlink(missing_ok=True)
            raise _cannot(f"cannot parse: {type(exc).__name__}: {exc}") from None

    def _stage_file(self, tmp: Path, data: bytes, study_uid: str | None) -> StagedInstance:
        meta, start = _read_meta(data)
        ts = _check_syntax(meta)
        try:
            check_structure(data, explicit_vr=ts != _IVLE, max_depth=self.max_depth)
        except StructureError as exc:
            raise _cannot(f"malformed encoding: {exc}") from None
        ds = pydicom.dcmread(io.BytesIO(data), force=False)
        sop_class, sop = _text(ds, "SOPClassUID"), _text(ds, "SOPInstanceUID")
        self._check_identity(ds, sop_class, sop, study_uid)
        # PS3.10 7.1: the file meta names the dataset's SOP Class and Instance; where they differ
        # (or the meta was made here) the dataset wins and the meta is rewritten.
        same = (_text(meta, "MediaStorageSOPClassUID"), _text(meta, "MediaStorageSOPInstanceUID")) == (
            sop_class,
            sop,
        )
        ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
        ds.file_meta.MediaStorageSOPInstanceUID = UID(sop)
        if ts == _IVLE:  # Implicit VR shall not be used on the Web (PS3.18 8.7.3)
            ds.file_meta.TransferSyntaxUID = UID(_EVLE)
            ds.save_as(tmp, enforce_file_format=True)
            ts = _EVLE
        else:
            tmp.write_bytes(data if same else _PREAMBLE + _meta_bytes(ds.file_meta) + data[start:])
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
    def _check_identity(ds: Dataset, sop_class: str, sop: str, study_uid: str | None) -> None:
        """The UIDs that place an instance; absent or malformed ones are Data Elements the store
        cannot understand (0xC000, as Orthanc answers them too)."""
        uids = {
            "SOPClassUID": sop_class,
            "SOPInstanceUID": sop,
            "StudyInstanceUID": _text(ds, "StudyInstanceUID"),
            "SeriesInstanceUID": _text(ds, "SeriesInstanceUID"),
        }
        shown_class = sop_class if is_valid_uid(sop_class) else ""
        shown_sop = sop if is_valid_uid(sop) else ""
        for keyword, value in uids.items():
            if not is_valid_uid(value):
                raise StoreFailure(
                    FAILURE_CANNOT_UNDERSTAND, f"{keyword} missing or not a valid UID", shown_class, shown_sop
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
            "meta": json.dumps(_json(ds)),
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
        """Stored DICOM JSON of the given instances, in the given order (relative BulkDataURIs)."""
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
            clause, values = _meta_clause(cond) if cond.tag else _predicate(cond.column, cond)
            if cond.in_study:
                clause = f"study_uid IN (SELECT study_uid FROM instances WHERE {clause})"
            elif cond.in_series:
                clause = f"series_uid IN (SELECT series_uid FROM instances WHERE {clause})"
            clauses.append(clause)
            params.extend(values)
        if exclude:
            clauses.append(f"sop_uid NOT IN ({', '.join('?' * len(exclude))})")
            params.extend(exclude)
        return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


def _glob(pattern: str) -> str:
    """A DICOM wildcard (PS3.4 C.2.2.2.4: ``*`` any run, ``?`` one character) as a SQLite GLOB."""
    return pattern.replace("[", "[[]")


def _predicate(expr: str, cond: Condition) -> tuple[str, list[Any]]:
    if cond.pattern is not None:
        return f"{expr} GLOB ?", [_glob(cond.pattern)]
    if cond.values:
        return f"{expr} IN ({', '.join('?' * len(cond.values))})", list(cond.values)
    parts, values = [f"{expr} != ''"], []
    if cond.low is not None:
        parts.append(f"{expr} >= ?")
        values.append(cond.low)
    if cond.high is not None:
        parts.append(f"{expr} <= ?")
        values.append(cond.high)
    return " AND ".join(parts), values


def _meta_clause(cond: Condition) -> tuple[str, list[Any]]:
    """Any value of the attribute ``cond.tag`` (8 hex digits) of the stored DICOM JSON matches."""
    groups = ("Alphabetic", "Ideographic", "Phonetic") if cond.person_name else ()
    exprs = [f"json_extract(value, '$.{g}')" for g in groups] or ["value"]
    predicates = [_predicate(e, cond) for e in exprs]
    where = " OR ".join(f"({sql})" for sql, _ in predicates)
    params = [p for _, values in predicates for p in values]
    return f"EXISTS (SELECT 1 FROM json_each(meta, ?) WHERE {where})", [f'$."{cond.tag}".Value', *params]
