"""QIDO-RS Search (IHE RAD-129, PS3.18 10.6) over the store's index and stored metadata.

Resources: ``/studies``, ``/series``, ``/instances`` and the study/series-scoped forms. Keys are
keywords or tags (``00100020``, ``0010,0020``). The identifying and most asked-for keys match on
index columns; every other public attribute of a matchable VR matches on the stored DICOM JSON
(PS3.4 C.2.2.2): single value and comma-separated value lists (PS3.18 8.3.4.1), ``*``/``?``
wildcards on text VRs, UID lists, ranges ``a-b``, ``-b``, ``a-`` on DA/TM/DT, numbers on numeric VRs
(``Rows=512``), a person name on any of its component groups; any value of a multi-valued attribute
may match; an empty value matches everything. A key of a lower level than the one searched
(``/studies?Rows=512``) matches the studies or series holding a matching instance (relational
matching, as Orthanc answers it). Refused with 400 and a Warning: an unknown key, a private tag
(what it means depends on its Private Creator block, PS3.5 7.8.1, so a bare tag names different
attributes in different instances), sequences and binary VRs, and malformed values. ``limit``/
``offset`` page through results; without a limit at most ``max_results`` are returned, with a
Warning if more exist (PS3.18 8.3.4.4). No match is 200 with ``[]``. ``fuzzymatching=true`` is not
supported: literal matching is done and a Warning says so (PS3.18 8.3.4.2).

Each result carries the attributes PS3.18 Tables 10.6.3-3/-4/-5 require at its level (and the
study's or series' when the path did not name them), from the stored metadata (person names by
component group), plus ``includefield`` ones (keywords, tags or ``all``); bulk data never.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ncp.dicom.media import MediaType, negotiate
from ncp.dicom.uids import validate_uid
from ncp.errors import InvalidRequest, warning_header
from ncp.pacs.context import PacsContext, dicomweb_base
from ncp.pacs.store import Condition, Level, without_bulk

__all__ = ["SearchRequest", "parse_search", "search_routes"]

_RANK: dict[Level, int] = {"study": 0, "series": 1, "instance": 2}
_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_DATETIME = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_NUMERIC_VRS = {"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "IS", "DS"}
_RANGE_VRS = {"DA": _DATE, "TM": _TIME, "DT": _DATETIME}
_WILDCARD_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"}  # PS3.4 C.2.2.2.4
_UNMATCHABLE_VRS = {"SQ", "OB", "OD", "OF", "OL", "OV", "OW", "UN"}


@dataclass(frozen=True)
class _Key:
    column: str
    level: Level
    kind: str  # "text" | "uid" | "date"
    in_study: bool = False


# Matching keys on index columns (PS3.18 Table 10.6.1-5 subset). Modality at study level means
# ModalitiesInStudy, as the MyHealth@EU conformance draft queries it.
_KEYS: dict[str, _Key] = {
    "PatientID": _Key("patient_id", "study", "text"),
    "StudyInstanceUID": _Key("study_uid", "study", "uid"),
    "AccessionNumber": _Key("accession_number", "study", "text"),
    "StudyDate": _Key("study_date", "study", "date"),
    "StudyID": _Key("study_id", "study", "text"),
    "ModalitiesInStudy": _Key("modality", "study", "text", in_study=True),
    "Modality": _Key("modality", "series", "text"),
    "SeriesInstanceUID": _Key("series_uid", "series", "uid"),
    "SOPInstanceUID": _Key("sop_uid", "instance", "uid"),
    "SOPClassUID": _Key("sop_class_uid", "instance", "uid"),
}
_KIND_VR = {"text": "LO", "uid": "UI", "date": "DA"}  # how an index key's values are matched

# Attributes of the study and series levels (PS3.3 C.7.1-C.7.3 modules, PS3.18 Tables 10.6.1-5/-6).
_STUDY_GROUPS = {0x0010}
_STUDY_TAGS = {
    "00080020", "00080030", "00080050", "00080051", "00080061", "00080090", "00081030", "00081032",
    "00081060", "0020000D", "00200010", "00321032", "00321060", "00080201",
}  # fmt: skip
_SERIES_TAGS = {
    "00080021", "00080031", "00080060", "0008103E", "00081050", "00180015", "0020000E", "00200011",
    "00200060", "00400244", "00400245", "00400253", "00400254", "00400275",
}  # fmt: skip

# Return attributes (PS3.18 Tables 10.6.3-3, -4, -5): empty when the instance lacks them...
_REQUIRED: dict[Level, tuple[str, ...]] = {
    "study": (
        "00080020", "00080030", "00080050", "00080090", "00081030", "00100010", "00100020", "00100030",
        "00100040", "0020000D", "00200010",
    ),
    "series": ("00080060", "0008103E", "00180015", "0020000D", "0020000E", "00200011"),
    "instance": ("00080016", "00080018", "00200013", "00280008", "00280010", "00280011", "00280100"),
}  # fmt: skip
# ...and these only when present (Specific Character Set, Timezone Offset, PPS start, Request Attributes).
_IF_PRESENT: dict[Level, tuple[str, ...]] = {
    "study": ("00080005", "00080201"),
    "series": ("00080005", "00080201", "00400244", "00400245", "00400275"),
    "instance": ("00080005", "00080201"),
}


@dataclass(frozen=True)
class SearchRequest:
    """A parsed QIDO-RS query."""

    level: Level
    conditions: tuple[Condition, ...]
    limit: int | None
    offset: int
    includefields: frozenset[str] | None  # DICOM JSON tags ("00100020"), None for includefield=all
    fuzzy: bool


def _keyword(name: str) -> str:
    """A query key as a keyword: ``00100020`` and ``0010,0020`` are read as tags."""
    hexed = name.replace(",", "")
    if re.fullmatch(r"[0-9A-Fa-f]{8}", hexed):
        return keyword_for_tag(int(hexed, 16)) or hexed.upper()
    return name


def _tag(name: str) -> str:
    """An includefield value as a DICOM JSON tag key; InvalidRequest if unknown."""
    hexed = name.replace(",", "")
    if re.fullmatch(r"[0-9A-Fa-f]{8}", hexed):
        return hexed.upper()
    tag = tag_for_keyword(name)
    if tag is None:
        raise InvalidRequest(f"includefield: {name!r} is neither a DICOM keyword nor a tag")
    return f"{tag:08X}"


def _vr(tag: str) -> str:
    try:
        return str(dictionary_VR(int(tag, 16)))
    except KeyError:
        return "UN"


def _level_of(tag: str) -> Level:
    if int(tag[:4], 16) in _STUDY_GROUPS or tag in _STUDY_TAGS:
        return "study"
    return "series" if tag in _SERIES_TAGS else "instance"


def _checked(value: str, key: str, vr: str) -> str:
    if not _RANGE_VRS[vr].fullmatch(value):
        raise InvalidRequest(f"{key}={value!r}: not a {vr} value (PS3.5 Table 6.2-1) nor a range of them")
    if vr == "DA":
        try:
            date(int(value[:4]), int(value[4:6]), int(value[6:]))
        except ValueError:
            raise InvalidRequest(f"{key}={value!r}: not a calendar date") from None
    return value


def _range(values: list[str], key: str, vr: str, column: str) -> Condition:
    """Single value or range matching on DA/TM/DT (PS3.4 C.2.2.2.5)."""
    if len(values) != 1:
        raise InvalidRequest(f"{key}: one value or one range expected")
    low, sep, high = values[0].partition("-")
    if not sep:
        return Condition(column, values=(_checked(low, key, vr),))
    if not low and not high:
        raise InvalidRequest(f"{key}={values[0]!r}: empty range")
    return Condition(
        column, low=_checked(low, key, vr) if low else None, high=_checked(high, key, vr) if high else None
    )


def _number(value: str, key: str) -> float:
    if not _NUMBER.fullmatch(value):
        raise InvalidRequest(f"{key}={value!r}: a number expected")
    return float(value)


def _values(keyword: str, vr: str, column: str, values: list[str]) -> Condition:
    """The condition of non-empty ``values`` for an attribute of ``vr`` (PS3.4 C.2.2.2)."""
    if vr in _RANGE_VRS:
        return _range(values, keyword, vr, column)
    if vr in _NUMERIC_VRS:
        return Condition(column, values=tuple(_number(v, keyword) for v in values))
    if vr == "UI":
        return Condition(column, values=tuple(validate_uid(v, keyword) for v in values))
    if vr in _WILDCARD_VRS and len(values) == 1 and any(c in values[0] for c in "*?"):
        return Condition(column, pattern=values[0])
    return Condition(column, values=tuple(values))


def _meta_key(keyword: str) -> tuple[str, str]:
    """The tag and VR of a public attribute that can be a matching key; InvalidRequest otherwise."""
    if re.fullmatch(r"[0-9A-F]{8}", keyword):
        if int(keyword[:4], 16) % 2:
            raise InvalidRequest(
                f"{keyword}: private attributes are not matching keys (a bare tag means different "
                "attributes under different Private Creators, PS3.5 7.8.1)"
            )
        raise InvalidRequest(f"unsupported query key {keyword!r}: not an attribute of the DICOM dictionary")
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise InvalidRequest(f"unsupported query key {keyword!r}: neither a DICOM keyword nor a tag")
    vrs = str(dictionary_VR(tag)).split(" or ")
    if any(vr in _UNMATCHABLE_VRS for vr in vrs):
        raise InvalidRequest(f"{keyword} ({vrs[0]}) is not a matching key: no sequence or binary matching")
    return f"{tag:08X}", vrs[0]


def _condition(keyword: str, raw: list[str], level: Level) -> Condition | None:
    values = [v.strip() for item in raw for v in item.replace("\\", ",").split(",") if v.strip()]
    key = _KEYS.get(keyword)
    if key is not None:
        key_level, tag = key.level, ""
        condition = _values(keyword, _KIND_VR[key.kind], key.column, values) if values else None
    else:
        tag, vr = _meta_key(keyword)
        key_level = _level_of(tag)
        condition = _values(keyword, vr, "meta", values) if values else None
        if condition is not None:
            condition = replace(condition, tag=tag, person_name=vr == "PN")
    if condition is None:
        return None  # universal matching (PS3.4 C.2.2.2.3)
    if key is not None and key.in_study:
        return replace(condition, in_study=True)
    # A key below the searched level matches the studies or series holding a matching instance.
    lower = _RANK[key_level] > _RANK[level]
    return replace(condition, in_study=lower and level == "study", in_series=lower and level == "series")


def _nonnegative(raw: str, name: str) -> int:
    if not re.fullmatch(r"[0-9]{1,9}", raw):
        raise InvalidRequest(f"{name}={raw[:20]!r}: expected an integer 0-999999999")
    return int(raw)


def parse_search(level: Level, items: list[tuple[str, str]], scope: dict[str, str]) -> SearchRequest:
    """Parse query parameters (and the path's UIDs in ``scope``) into a SearchRequest."""
    grouped: dict[str, list[str]] = {}
    limit, offset, fuzzy = None, 0, False
    fields: set[str] | None = set()
    for name, value in items:
        if name in ("limit", "offset"):
            number = _nonnegative(value, name)
            limit, offset = (number, offset) if name == "limit" else (limit, number)
        elif name == "fuzzymatching":
            if value not in ("true", "false"):
                raise InvalidRequest(f"fuzzymatching={value!r}: expected true or false")
            fuzzy = value == "true"
        elif name == "includefield":
            for field in (f.strip() for f in value.split(",") if f.strip()):
                if field == "all":
                    fields = None
                elif fields is not None:
                    fields.add(_tag(field))
        else:
            grouped.setdefault(_keyword(name), []).append(value)
    conditions = [Condition(_KEYS[k].column, values=(v,)) for k, v in scope.items()]
    for keyword, raw in grouped.items():
        condition = _condition(keyword, raw, level)
        if condition is not None:
            conditions.append(condition)
    return SearchRequest(
        level, tuple(conditions), limit, offset, None if fields is None else frozenset(fields), fuzzy
    )


# -- DICOM JSON results ------------------------------------------------------------------------------
def _attr(vr: str, *values: Any) -> dict[str, Any]:
    present = [v for v in values if v not in (None, "")]
    return {"vr": vr, "Value": present} if present else {"vr": vr}


def _stored(meta: dict[str, Any], level: Level) -> dict[str, Any]:
    """The level's return attributes (PS3.18 Tables 10.6.3-3..5) as stored: empty where absent."""
    out = {t: meta.get(t, {"vr": _vr(t)}) for t in _REQUIRED[level]}
    return out | {t: meta[t] for t in _IF_PRESENT[level] if t in meta}


def _counts(row: dict[str, Any], level: Level, base: str) -> dict[str, Any]:
    """What the index computes: modalities and numbers of related series/instances, Retrieve URL."""
    study_url = f"{base}/studies/{row['study_uid']}"
    if level == "study":
        modalities = sorted({m for m in (row["modalities"] or "").split(",") if m})
        return {
            "00080061": _attr("CS", *modalities),
            "00081190": _attr("UR", study_url),
            "00201206": _attr("IS", row["n_series"]),
            "00201208": _attr("IS", row["n_instances"]),
        }
    series_url = f"{study_url}/series/{row['series_uid']}"
    if level == "series":
        return {"00081190": _attr("UR", series_url), "00201209": _attr("IS", row["n_instances"])}
    return {"00081190": _attr("UR", f"{series_url}/instances/{row['sop_uid']}")}


def _in_level(tag: str, level: Level) -> bool:
    return _RANK[_level_of(tag)] <= _RANK[level]


def _result(row: dict[str, Any], search: SearchRequest, base: str, scoped: bool) -> dict[str, Any]:
    """One result (PS3.18 Table 10.6.3-3..5); study attributes too unless the path named the study."""
    level = search.level
    meta = without_bulk(json.loads(row["meta"]))
    out: dict[str, Any] = {"00080056": _attr("CS", "ONLINE")}
    if level == "study" or not scoped:
        out |= _stored(meta, "study")
    if level in ("series", "instance"):
        out |= _stored(meta, "series")
    if level == "instance":
        out |= _stored(meta, "instance")
    out |= _counts(row, level, base)
    if search.includefields is None:
        out |= {t: v for t, v in meta.items() if t not in out and _in_level(t, level)}
    else:
        out |= {t: meta.get(t, {"vr": _vr(t)}) for t in search.includefields if t not in out}
    return dict(sorted(out.items()))


def search_routes(ctx: PacsContext) -> list[Route]:
    def handler(level: Level) -> Callable[[Request], Any]:
        async def search(request: Request) -> Response:
            """RAD-129 / PS3.18 10.6.1: Search for Studies, Series or Instances."""
            media_type = negotiate(request.headers.get("accept"), [MediaType.DICOM_JSON, MediaType.JSON])
            scope = {
                k: validate_uid(request.path_params[p], k)
                for p, k in (("study", "StudyInstanceUID"), ("series", "SeriesInstanceUID"))
                if p in request.path_params
            }
            search = parse_search(level, request.query_params.multi_items(), scope)
            cap = ctx.settings.max_results
            limit = min(search.limit, cap) if search.limit is not None else cap
            rows = await run_in_threadpool(
                ctx.store.search,
                level,
                search.conditions,
                limit=limit + 1,
                offset=search.offset,
                exclude=ctx.settings.withhold,
            )
            warnings = []
            if len(rows) > limit and (search.limit is None or search.limit > cap):
                warnings.append(f"there are additional results; at most {cap} are returned per request")
            if search.fuzzy:
                warnings.append("fuzzymatching is not supported; only literal matching has been performed")
            base = dicomweb_base(request)
            body = [_result(r, search, base, scoped=bool(scope)) for r in rows[:limit]]
            headers = (
                {"Warning": ", ".join(warning_header(ctx.settings.agent, w) for w in warnings)}
                if warnings
                else {}
            )
            return Response(json.dumps(body), media_type=media_type, headers=headers)

        return search

    studies = "/dicom-web/studies"
    return [
        Route(studies, handler("study"), methods=["GET"]),
        Route("/dicom-web/series", handler("series"), methods=["GET"]),
        Route("/dicom-web/instances", handler("instance"), methods=["GET"]),
        Route(studies + "/{study}/series", handler("series"), methods=["GET"]),
        Route(studies + "/{study}/instances", handler("instance"), methods=["GET"]),
        Route(studies + "/{study}/series/{series}/instances", handler("instance"), methods=["GET"]),
    ]
