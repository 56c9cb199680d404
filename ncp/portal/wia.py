"""The WIA facade (MCWG 1.8): one DICOMweb base at NCP-B for an unmodified DICOMweb client.

``{B}/wia/dicom-web`` answers QIDO-RS (PS3.18 10.6) ``studies``, ``series`` and ``instances`` from the
KOS manifests of the treatment-context patient (found with ITI-67, read with ITI-68 on this NCP's
gateway: no QIDO crosses the border), and maps WADO-RS (PS3.18 10.4) onto RAD-160 at the same gateway.
The caller authenticates as for RAD-160, with its bearer treatment token; the patient is the token's,
and the gateway verifies the token on every call made with it.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import jwt
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ncp.consumer.documents import DocumentEntry
from ncp.dicom.kos import read_manifest
from ncp.dicom.multipart import MultipartDecoder, Part, encode_multipart, multipart_content_type, new_boundary
from ncp.dicom.uids import validate_uid
from ncp.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from ncp.model import Manifest
from ncp.portal.upstream import DICOM_MULTIPART, Gateway

__all__ = ["BASE", "routes"]

BASE = "/wia/dicom-web"
_CX = re.compile(r"([^\^&]+)\^\^\^&([0-9.]+)&ISO")  # IUA person_id, HL7 v2 CX
_DICOM_JSON = "application/dicom+json"
_FRAMES_MULTIPART = 'multipart/related; type="application/octet-stream"'
_FRAMES = re.compile(r"[1-9][0-9]{0,8}(,[1-9][0-9]{0,8}){0,1023}")
_STUDY_KEYS = {"StudyInstanceUID": "0020000D", "PatientID": "00100020", "AccessionNumber": "00080050"}


def routes() -> list[Route]:
    study = BASE + "/studies/{study}"
    series = study + "/series/{series}"
    instance = series + "/instances/{sop}"
    retrievals = [
        Route(path + tail, retrieve, methods=["GET"])
        for path in (study, series, instance)
        for tail in ("", "/metadata", "/rendered")
    ]
    return [
        Route(instance + "/frames/{frames}", retrieve, methods=["GET"]),  # what a viewer asks for (OHIF)
        Route(BASE + "/studies", search_studies, methods=["GET"]),
        Route(study + "/series", search_series, methods=["GET"]),
        Route(study + "/instances", search_instances, methods=["GET"]),
        Route(series + "/instances", search_instances, methods=["GET"]),
        *retrievals,
    ]


# -- where the answers come from: the patient's manifests ------------------------------------------
async def _manifests(
    request: Request, study_uid: str = ""
) -> tuple[str, list[tuple[DocumentEntry, Manifest]]]:
    """The bearer token and the (entry, manifest) of each of its patient's studies, or of the one study
    named: a viewer asks for a study's frames one request at a time, and each must not read every manifest
    of the patient across the border."""
    token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    issuer, patient_id = _patient(token)
    gateway: Gateway = request.app.state.gateway
    found = await gateway.documents(token, issuer, patient_id, study_uid=study_uid)
    entries = [e for e in found if e.kind == "manifest"]
    fetched = await asyncio.gather(*(gateway.document(token, e, "application/dicom") for e in entries))
    return token, [(e, read_manifest(f.body)) for e, f in zip(entries, fetched, strict=True)]


def _patient(token: str) -> tuple[str, str]:
    """The patient a treatment token names. Read, not trusted: every call made with the token is verified
    by the gateway, which refuses it for any other patient."""
    if not token:
        raise Unauthorized("a bearer treatment token is required", headers={"WWW-Authenticate": "Bearer"})
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
        person = claims["extensions"]["ihe_iua"]["person_id"]
    except (jwt.PyJWTError, KeyError, TypeError):
        raise Unauthorized("the bearer token names no patient: a treatment token is required") from None
    match = _CX.fullmatch(str(person))
    if match is None:
        raise Forbidden("the token's patient is not id^^^&oid&ISO")
    return match.group(2), match.group(1)


async def _study(request: Request) -> tuple[str, DocumentEntry, Manifest]:
    uid = validate_uid(request.path_params["study"], "Study Instance UID")
    token, found = await _manifests(request, uid)
    for entry, manifest in found:
        if manifest.study_instance_uid == uid:
            return token, entry, manifest
    raise NotFound("no study of the treatment-context patient has this Study Instance UID")


# -- QIDO-RS (PS3.18 10.6) ------------------------------------------------------------------------------
async def search_studies(request: Request) -> Response:
    _, found = await _manifests(request)
    rows = [_study_json(e, m) for e, m in found]
    return _qido(request, [r for r in rows if _matches(r, request, _STUDY_KEYS)])


async def search_series(request: Request) -> Response:
    _, _, manifest = await _study(request)
    rows = [
        {
            **_study_keys(manifest),
            "0020000E": _ui(s.series_instance_uid),
            "00080060": _cs(s.modality or ""),
            "0008103E": {"vr": "LO", "Value": [s.description]} if s.description else {"vr": "LO"},
            "00201209": {"vr": "IS", "Value": [len(s.instances)]},
            "00081190": _ur(f"{BASE}/studies/{manifest.study_instance_uid}/series/{s.series_instance_uid}"),
        }
        for s in manifest.series
    ]
    keys = {"SeriesInstanceUID": "0020000E", "Modality": "00080060"}
    return _qido(request, [r for r in rows if _matches(r, request, keys)])


async def search_instances(request: Request) -> Response:
    _, _, manifest = await _study(request)
    wanted = request.path_params.get("series")
    rows = [
        {
            **_study_keys(manifest),
            "0020000E": _ui(s.series_instance_uid),
            "00080060": _cs(s.modality or ""),
            "00080016": _ui(i.sop_class_uid),
            "00080018": _ui(i.sop_instance_uid),
            "00200013": {"vr": "IS", "Value": [i.instance_number]} if i.instance_number else {"vr": "IS"},
        }
        for s in manifest.series
        if wanted is None or s.series_instance_uid == wanted
        for i in s.instances
    ]
    return _qido(request, [r for r in rows if _matches(r, request, {"SOPInstanceUID": "00080018"})])


def _qido(request: Request, rows: list[dict[str, Any]]) -> Response:
    offset, limit = _int(request, "offset", 0), _int(request, "limit", 1000)
    page = rows[offset : offset + limit]
    if not page:
        return Response(status_code=204)
    return Response(json.dumps(page), media_type=_DICOM_JSON)


def _int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    return int(raw) if raw is not None and raw.isdigit() and len(raw) < 7 else default


def _matches(row: dict[str, Any], request: Request, keys: dict[str, str]) -> bool:
    """Single-value matching on the keys given by keyword or tag (PS3.18 8.3.4.6.1)."""
    for keyword, tag in keys.items():
        wanted = request.query_params.get(keyword) or request.query_params.get(tag)
        if wanted is not None and wanted not in row.get(tag, {}).get("Value", []):
            return False
    return True


def _study_json(entry: DocumentEntry, manifest: Manifest) -> dict[str, Any]:
    date = (entry.period_start or "")[:10].replace("-", "")
    return {
        **_study_keys(manifest),
        "00080020": {"vr": "DA", "Value": [date]} if date else {"vr": "DA"},
        "00080050": {"vr": "SH", "Value": list(manifest.accession_numbers[:1])},
        "00080061": {"vr": "CS", "Value": list(manifest.modalities)},
        "00081030": {"vr": "LO", "Value": [str(entry.raw.get("description", ""))]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": str(manifest.extras.get("patient_name", ""))}]},
        "00201206": {"vr": "IS", "Value": [len(manifest.series)]},
        "00201208": {"vr": "IS", "Value": [manifest.instance_count()]},
        "00081190": _ur(f"{BASE}/studies/{manifest.study_instance_uid}"),
    }


def _study_keys(manifest: Manifest) -> dict[str, Any]:
    return {
        "0020000D": _ui(manifest.study_instance_uid),
        "00100020": {"vr": "LO", "Value": [manifest.patient_id]},
    }


def _ui(uid: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [uid]}


def _cs(value: str) -> dict[str, Any]:
    return {"vr": "CS", "Value": [value]} if value else {"vr": "CS"}


def _ur(url: str) -> dict[str, Any]:
    return {"vr": "UR", "Value": [url]}


# -- WADO-RS mapped onto RAD-160 ------------------------------------------------------------------------
async def retrieve(request: Request) -> Response:
    token, entry, manifest = await _study(request)
    gateway: Gateway = request.app.state.gateway
    p = request.path_params
    tail = next((t for t in ("metadata", "rendered") if request.url.path.endswith("/" + t)), None)
    if "frames" in p:
        if not _FRAMES.fullmatch(p["frames"]):
            raise InvalidRequest("frames: a comma-separated list of frame numbers from 1 (PS3.18 10.4.1.1.3)")
        tail = f"frames/{p['frames']}"
    chosen = [s for s in manifest.series if "series" not in p or s.series_instance_uid == p["series"]]
    if not chosen:
        raise NotFound("the study's manifest references no such series")
    hcid = entry.home_community_id or ""
    urls = [gateway.rad160(hcid, manifest, s, p.get("sop")) + (f"/{tail}" if tail else "") for s in chosen]
    if tail == "rendered":  # one image stands for the study or series (PS3.18 10.4.1.1.3): the first series'
        urls = urls[:1]
    default = _DICOM_JSON if tail == "metadata" else _FRAMES_MULTIPART if "frames" in p else DICOM_MULTIPART
    accept = request.headers.get("accept") or default
    if len(urls) == 1:
        upstream, body = await gateway.stream(token, urls[0], request.url.query, accept)
        headers = {k: v for k, v in upstream.headers.items() if k.lower() in ("content-type", "warning")}
        return StreamingResponse(body, status_code=upstream.status_code, headers=headers)
    if tail == "metadata":
        return await _metadata(gateway, token, urls)
    return _joined(gateway, token, urls)


async def _metadata(gateway: Gateway, token: str, urls: list[str]) -> Response:
    """A study spread over several locations: one metadata array from each series' RAD-160 answer."""
    items: list[Any] = []
    for url in urls:
        _, body = await gateway.stream(token, url, "", _DICOM_JSON)
        items += json.loads(b"".join([chunk async for chunk in body]))
    return Response(json.dumps(items), media_type=_DICOM_JSON)


def _joined(gateway: Gateway, token: str, urls: list[str]) -> Response:
    """A study spread over several locations: each series' parts, as they arrive, in one multipart
    message (one instance in memory at a time)."""
    boundary = new_boundary()

    async def parts() -> AsyncIterator[Part]:
        for url in urls:
            upstream, body = await gateway.stream(token, url, "", DICOM_MULTIPART)
            decoder = MultipartDecoder(upstream.headers.get("content-type", ""))
            async for chunk in body:
                for part in decoder.feed(chunk):
                    yield Part.from_bytes(part.body, "application/dicom")
            decoder.close()

    media = multipart_content_type("application/dicom", boundary)
    return StreamingResponse(encode_multipart(parts(), boundary), media_type=media)
