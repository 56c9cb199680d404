"""Search keys of a DocumentReference, computed once at ITI-65 time and stored in indexed columns.

Token keys are ``(param, system, code)`` rows, date keys ``(param, lo, hi)`` rows (a half-open
UTC range, FHIR R4 search 3.1.1.5.6: every date value is an implicit range at its precision).
The parameter names are those of ITI-67 (MHD 2:3.67.4.1.3.1) and the MADO IG's SearchParameters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from ncp.codes import ANATOMICAL_REGIONS, DCM, SCT
from ncp.errors import InvalidRequest
from ncp.mhd import BODYSITE_EXTENSION, DICOM_UID_SYSTEM, MODALITY_EXTENSION, RFC3986

__all__ = [
    "ACCESSION_TYPE_CODES",
    "STUDY_UID_TYPE_CODES",
    "DateRange",
    "document_dates",
    "document_tokens",
    "format_instant",
    "normalize_identifier",
    "parse_date_range",
]

STUDY_UID_TYPE_CODES = frozenset({"110180", "urn:ihe:iti:xds:2016:studyInstanceUID"})
ACCESSION_TYPE_CODES = frozenset({"121022", "ACSN", "urn:ihe:iti:xds:2013:accession"})
_UID_SYSTEMS = frozenset({RFC3986, DICOM_UID_SYSTEM})

Token = tuple[str, str, str]  # (param, system or "", code)


def normalize_identifier(system: str, value: str) -> tuple[str, str]:
    """One form for OID/UID identifiers, so ``UID``, ``urn:oid:UID``, ``urn:dicom:uid|UID`` and
    ``urn:ietf:rfc:3986|urn:oid:UID`` all match (the MADO IG writes both forms)."""
    if value.startswith("urn:oid:"):
        value = value.removeprefix("urn:oid:")
        return (RFC3986 if system in _UID_SYSTEMS else system), value
    if system == DICOM_UID_SYSTEM:
        return RFC3986, value
    return system, value


def _codings(concept: Any) -> Iterator[dict[str, Any]]:
    if isinstance(concept, dict):
        yield from (c for c in concept.get("coding", []) if isinstance(c, dict) and c.get("code"))


def _coding_tokens(param: str, codings: Iterable[dict[str, Any]]) -> list[Token]:
    """A coding without a code is no search key (content.format is a bare Coding: nothing filtered it)."""
    return [(param, str(c.get("system", "")), str(c["code"])) for c in codings if c.get("code")]


def _identifier_token(param: str, identifier: Any) -> list[Token]:
    if not isinstance(identifier, dict) or not identifier.get("value"):
        return []
    system, value = normalize_identifier(str(identifier.get("system", "")), str(identifier["value"]))
    return [(param, system, value)]


def _extension_codings(doc: dict[str, Any], url: str) -> Iterator[dict[str, Any]]:
    for ext in doc.get("extension", []):
        if ext.get("url") != url:
            continue
        yield from _codings(ext.get("valueCodeableConcept"))
        for sub in ext.get("extension", []):  # bodySite is a CodeableReference: sub-extension "concept"
            if sub.get("url") == "concept":
                yield from _codings(sub.get("valueCodeableConcept"))


def _related_tokens(related: list[dict[str, Any]]) -> list[Token]:
    tokens: list[Token] = []
    for ref in related:
        identifier = ref.get("identifier")
        if not isinstance(identifier, dict):
            continue
        tokens += _identifier_token("related", identifier)
        type_codes = {c["code"] for c in _codings(identifier.get("type"))}
        if type_codes & STUDY_UID_TYPE_CODES:
            tokens += _identifier_token("study-instance-uid", identifier)
        if type_codes & ACCESSION_TYPE_CODES:
            tokens += _identifier_token("accession-number", identifier)
    return tokens


def document_tokens(doc: dict[str, Any]) -> list[Token]:
    """Every token search key of a DocumentReference (deduplicated, stable order)."""
    context = doc.get("context", {})
    events = [c for ev in context.get("event", []) for c in _codings(ev)]
    contents = doc.get("content", [])
    tokens = [
        *_coding_tokens("type", _codings(doc.get("type"))),
        *_coding_tokens("category", (c for cat in doc.get("category", []) for c in _codings(cat))),
        *_coding_tokens("security-label", (c for lab in doc.get("securityLabel", []) for c in _codings(lab))),
        *_coding_tokens("format", (c["format"] for c in contents if isinstance(c.get("format"), dict))),
        *[("contenttype", "", str(c["attachment"]["contentType"])) for c in contents if _has_type(c)],
        *_coding_tokens("event", events),
        *_coding_tokens("facility", _codings(context.get("facilityType"))),
        *_coding_tokens("setting", _codings(context.get("practiceSetting"))),
        # MADO: the R5 extensions; MADO App. A / XDS: the same codes in context.event
        *_coding_tokens("modality", _extension_codings(doc, MODALITY_EXTENSION)),
        *_coding_tokens("modality", (c for c in events if c.get("system") == DCM)),
        *_coding_tokens("anatomical-region", _extension_codings(doc, BODYSITE_EXTENSION)),
        *_coding_tokens(
            "anatomical-region",
            (c for c in events if c.get("system") == SCT and c["code"] in ANATOMICAL_REGIONS),
        ),
        *_identifier_token("identifier", doc.get("masterIdentifier")),
        *(t for i in doc.get("identifier", []) for t in _identifier_token("identifier", i)),
        *_related_tokens(context.get("related", [])),
    ]
    return list(dict.fromkeys(tokens))


def _has_type(content: dict[str, Any]) -> bool:
    attachment = content.get("attachment")
    return isinstance(attachment, dict) and bool(attachment.get("contentType"))


# -- dates ----------------------------------------------------------------------------------------
_DATE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,9}))?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


@dataclass(frozen=True)
class DateRange:
    """A half-open UTC range [lo, hi) in the fixed-width text form stored in SQLite."""

    lo: str
    hi: str


def format_instant(moment: datetime) -> str:
    """Fixed width, UTC: lexicographic order is chronological order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_date_range(value: str) -> DateRange:
    """The implicit range of a FHIR date/dateTime/instant at its precision (R4 search 3.1.1.5.6).

    A value without a zone is taken as UTC (the testbed's servers run in UTC).
    """
    match = _DATE.fullmatch(value.strip())
    if match is None:
        raise InvalidRequest(f"{value!r} is not a FHIR date/dateTime (YYYY[-MM[-DD[Thh:mm[:ss[.f]][zone]]]])")
    g = match.groupdict()
    try:
        lo, step = _lower_bound(g)
        hi = _add(lo, step)
    except (ValueError, OverflowError):
        raise InvalidRequest(f"{value!r} is not a valid calendar date") from None
    return DateRange(format_instant(lo), format_instant(hi))


def _lower_bound(g: dict[str, str | None]) -> tuple[datetime, str | timedelta]:
    zone = _zone(g["tz"])
    year, month, day = int(g["y"] or 0), int(g["m"] or 1), int(g["d"] or 1)
    if g["m"] is None:
        return datetime(year, 1, 1, tzinfo=zone), "year"
    if g["d"] is None:
        return datetime(year, month, 1, tzinfo=zone), "month"
    if g["H"] is None:
        return datetime(year, month, day, tzinfo=zone), timedelta(days=1)
    hour, minute = int(g["H"] or 0), int(g["M"] or 0)
    if g["S"] is None:
        return datetime(year, month, day, hour, minute, tzinfo=zone), timedelta(minutes=1)
    fraction = g["f"] or ""
    micro = int((fraction + "000000")[:6])
    moment = datetime(year, month, day, hour, minute, int(g["S"] or 0), micro, tzinfo=zone)
    step = timedelta(microseconds=10 ** (6 - min(len(fraction), 6))) if fraction else timedelta(seconds=1)
    return moment, step


def _zone(tz: str | None) -> timezone:
    if tz is None or tz == "Z":
        return UTC
    sign = 1 if tz[0] == "+" else -1
    return timezone(sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])))


def _add(lo: datetime, step: str | timedelta) -> datetime:
    if isinstance(step, timedelta):
        return lo + step
    if step == "year":
        return lo.replace(year=lo.year + 1)
    return lo.replace(year=lo.year + 1, month=1) if lo.month == 12 else lo.replace(month=lo.month + 1)


def document_dates(doc: dict[str, Any]) -> list[tuple[str, DateRange]]:
    """Date search keys: ``date`` (DocumentReference.date), ``period`` (context.period), ``creation``.

    A period without an end is the study instant (MADO: period.start = study date/time), not an
    open-ended range, so ``period=ge2024`` does not match every older study.
    """
    out: list[tuple[str, DateRange]] = []
    if isinstance(doc.get("date"), str):
        out.append(("date", parse_date_range(doc["date"])))
    period = doc.get("context", {}).get("period", {})
    if isinstance(period.get("start"), str):
        start = parse_date_range(period["start"])
        end = parse_date_range(period["end"]) if isinstance(period.get("end"), str) else start
        out.append(("period", DateRange(start.lo, max(start.hi, end.hi))))
    for content in doc.get("content", []):
        creation = content.get("attachment", {}).get("creation")
        if isinstance(creation, str):
            out.append(("creation", parse_date_range(creation)))
    return list(dict.fromkeys(out))
