"""QIDO-RS Search (IHE RAD-129, PS3.18 10.6) over the store's index.

Resources: ``/studies``, ``/series``, ``/instances`` and the study/series-scoped forms. Matching
(PS3.4 C.2.2.2): single value, comma-separated value lists (PS3.18 8.3.4.1), ``*``/``?``
wildcards on text keys, UID list matching, date ranges ``a-b``, ``-b``, ``a-``; an empty value
matches everything. Keys are keywords or tags (``00100020``). An unknown key, a key below the
queried level or a malformed value is a 400 with a Warning. ``limit``/``offset`` page through
results; without a limit at most ``max_results`` are returned, with a Warning if more exist
(PS3.18 8.3.4.4). No match is 200 with ``[]``. ``fuzzymatching=true`` is not supported: literal
matching is done and a Warning says so (PS3.18 8.3.4.2).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
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
from ncp.pacs.store import Condition, Level

__all__ = ["SearchRequest", "parse_search", "search_routes"]

_RANK: dict[Level, int] = {"study": 0, "series": 1, "instance": 2}
_RESERVED = {"limit", "offset", "includefield", "fuzzymatching"}
_DATE = re.compile(r"^\d{8}$")


@dataclass(frozen=True)
class _Key:
    column: str
    level: Level
    kind: str  # "text" | "uid" | "date"
    in_study: bool = False


# Matching keys (PS3.18 Table 10.6.1-5 subset). Modality at study level means ModalitiesInStudy,
# as the MyHealth@EU conformance draft queries it.
_KEYS: dict[str, _Key] = {
    "PatientID": _Key("patient_id", "study", "text"),
    "PatientName": _Key("patient_name", "study", "text"),
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

# Attributes that ``includefield=all`` adds at each level (from the stored metadata).
_STUDY_GROUPS = {0x0010}
_STUDY_TAGS = {
    "00080020", "00080030", "00080050", "00080051", "00080090", "00081030", "00081032", "00081060",
    "0020000D", "00200010", "00321032", "00321060", "00080005", "00080201",
}  # fmt: skip
_SERIES_TAGS = {
    "00080021", "00080031", "00080060", "0008103E", "00081050", "00180015", "0020000E", "00200011",
    "00200060", "00400244", "00400245", "00400253", "00400254", "00400275",
}  # fmt: skip


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


def _date(value: str, key: str) -> str:
    if not _DATE.fullmatch(value):
        raise InvalidRequest(f"{key}={value!r}: expected YYYYMMDD or a range YYYYMMDD-YYYYMMDD")
    try:
        date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        raise InvalidRequest(f"{key}={value!r}: not a calendar date") from None
    return value


def _condition(keyword: str, key: _Key, raw: list[str], level: Level) -> Condition | None:
    in_study = key.in_study or (keyword == "Modality" and level == "study")
    values = [v.strip() for item in raw for v in item.replace("\\", ",").split(",") if v.strip()]
    if not values:
        return None  # universal matching (PS3.4 C.2.2.2.3)
    if key.kind == "date":
        if len(values) != 1:
            raise InvalidRequest(f"{keyword}: one date or one date range expected")
        low, sep, high = values[0].partition("-")
        if not sep:
            return Condition(key.column, values=(_date(low, keyword),))
        if not low and not high:
            raise InvalidRequest(f"{keyword}={values[0]!r}: empty range")
        return Condition(
            key.column, low=_date(low, keyword) if low else None, high=_date(high, keyword) if high else None
        )
    if key.kind == "uid":
        for v in values:
            validate_uid(v, keyword)
        return Condition(key.column, values=tuple(values), in_study=in_study)
    if len(values) == 1 and any(c in values[0] for c in "*?"):
        return Condition(key.column, pattern=values[0], in_study=in_study)
    return Condition(key.column, values=tuple(values), in_study=in_study)


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
        key = _KEYS.get(keyword)
        if key is None:
            supported = ", ".join(sorted(_KEYS))
            raise InvalidRequest(f"unsupported query key {keyword!r}; supported: {supported}")
        if _RANK[key.level] > _RANK[level] and not (keyword == "Modality" and level == "study"):
            raise InvalidRequest(f"{keyword} is not a matching key at the {level} level")
        condition = _condition(keyword, key, raw, level)
        if condition is not None:
            conditions.append(condition)
    return SearchRequest(
        level, tuple(conditions), limit, offset, None if fields is None else frozenset(fields), fuzzy
    )


# -- DICOM JSON results ------------------------------------------------------------------------------
def _attr(vr: str, *values: Any) -> dict[str, Any]:
    present = [v for v in values if v not in (None, "")]
    if not present:
        return {"vr": vr}
    if vr == "PN":
        present = [{"Alphabetic": v} for v in present]
    return {"vr": vr, "Value": present}


def _multi(vr: str, text: str | None) -> dict[str, Any]:
    return _attr(vr, *(text or "").replace(",", "\\").split("\\"))


def _study_attrs(row: dict[str, Any], base: str, with_counts: bool) -> dict[str, Any]:
    out = {
        "00080020": _attr("DA", row["study_date"]),
        "00080030": _attr("TM", row["study_time"]),
        "00080050": _attr("SH", row["accession_number"]),
        "00080090": _attr("PN", row["referring_physician"]),
        "00081030": _attr("LO", row["study_description"]),
        "00100010": _attr("PN", row["patient_name"]),
        "00100020": _attr("LO", row["patient_id"]),
        "00100030": _attr("DA", row["patient_birth_date"]),
        "00100040": _attr("CS", row["patient_sex"]),
        "0020000D": _attr("UI", row["study_uid"]),
        "00200010": _attr("SH", row["study_id"]),
    }
    if with_counts:
        modalities = sorted({m for m in (row["modalities"] or "").split(",") if m})
        out |= {
            "00080061": _attr("CS", *modalities),
            "00081190": _attr("UR", f"{base}/studies/{row['study_uid']}"),
            "00201206": _attr("IS", row["n_series"]),
            "00201208": _attr("IS", row["n_instances"]),
        }
    return out


def _series_attrs(row: dict[str, Any], base: str, with_counts: bool) -> dict[str, Any]:
    out = {
        "00080060": _attr("CS", row["modality"]),
        "0008103E": _attr("LO", row["series_description"]),
        "00180015": _attr("CS", row["body_part"]),
        "0020000D": _attr("UI", row["study_uid"]),
        "0020000E": _attr("UI", row["series_uid"]),
        "00200011": _attr("IS", row["series_number"]),
    }
    if with_counts:
        out["00081190"] = _attr("UR", f"{base}/studies/{row['study_uid']}/series/{row['series_uid']}")
        out["00201209"] = _attr("IS", row["n_instances"])
    return out


def _instance_attrs(row: dict[str, Any], base: str) -> dict[str, Any]:
    url = f"{base}/studies/{row['study_uid']}/series/{row['series_uid']}/instances/{row['sop_uid']}"
    return {
        "00080016": _attr("UI", row["sop_class_uid"]),
        "00080018": _attr("UI", row["sop_uid"]),
        "00081190": _attr("UR", url),
        "00200013": _attr("IS", row["instance_number"]),
        "00280008": _attr("IS", row["frames"]),
        "00280010": _attr("US", row["rows"]),
        "00280011": _attr("US", row["columns"]),
    }


def _in_level(tag: str, level: Level) -> bool:
    if level == "instance":
        return True
    study = int(tag[:4], 16) in _STUDY_GROUPS or tag in _STUDY_TAGS
    return study if level == "study" else study or tag in _SERIES_TAGS


def _result(row: dict[str, Any], search: SearchRequest, base: str, scoped: bool) -> dict[str, Any]:
    """One result (PS3.18 Table 10.6.3-3..5); study attributes too unless the path named the study."""
    level = search.level
    out: dict[str, Any] = {"00080056": _attr("CS", "ONLINE")}
    if level == "study" or not scoped:
        out |= _study_attrs(row, base, with_counts=level == "study")
    if level in ("series", "instance"):
        out |= _series_attrs(row, base, with_counts=level == "series")
    if level == "instance":
        out |= _instance_attrs(row, base)
    meta: dict[str, Any] = json.loads(row["meta"])
    if search.includefields is None:
        out |= {t: v for t, v in meta.items() if t not in out and _in_level(t, level)}
    else:
        out |= {t: meta.get(t, {"vr": _vr(t)}) for t in search.includefields if t not in out}
    return dict(sorted(out.items()))


def _vr(tag: str) -> str:
    try:
        return str(dictionary_VR(int(tag, 16)))
    except KeyError:
        return "UN"


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
