"""ITI-67 Find Document References, Document Responder side (MHD 2:3.67), with the MADO parameters.

Strict parameter handling (FHIR search 3.1.1.5.8 ``handling=strict``): an unknown parameter or
modifier is a 400 naming it, never silently ignored (an ignored filter would return documents
the consumer did not ask for). Comma separates alternatives (OR) inside one parameter; a repeated
parameter is another condition (AND). Tokens: ``system|code``, ``|code``, ``code``, ``system|``.
Identifier-like parameters (``identifier``, ``related``, ``study-instance-uid``, ``accession-number``)
match UIDs with and without ``urn:oid:`` (the MADO IG writes both forms).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ncp.errors import Gone, InvalidRequest, NotFound, PayloadTooLarge, UnsupportedMediaType
from ncp.fhirsearch import split_alternatives, split_token
from ncp.mhd import DICOM_UID_SYSTEM, RFC3986
from ncp.registry.fhirhttp import Registry, check_format, fhir_response, render_document, validate_id
from ncp.registry.index import normalize_identifier, parse_date_range
from ncp.registry.settings import RegistrySettings
from ncp.registry.store import DateAlt, DateClause, DocumentQuery, TokenAlt, TokenClause

__all__ = [
    "DATE_PARAMS",
    "DOCUMENT_STATUSES",
    "SEARCH_PARAMS",
    "TOKEN_PARAMS",
    "Paging",
    "check_parameter_count",
    "delete_document_reference",
    "parse_date_alternatives",
    "parse_document_search",
    "parse_paging",
    "read_document_reference",
    "search_document_references",
    "searchset",
    "split_alternatives",
    "token_alternative",
]

# token parameter -> (FHIR path searched, description); aliases map onto these names
TOKEN_PARAMS: dict[str, str] = {
    "type": "DocumentReference.type",
    "category": "DocumentReference.category",
    "format": "DocumentReference.content.format",
    "contenttype": "DocumentReference.content.attachment.contentType",
    "event": "DocumentReference.context.event",
    "setting": "DocumentReference.context.practiceSetting",
    "facility": "DocumentReference.context.facilityType",
    "security-label": "DocumentReference.securityLabel",
    "modality": "DocumentReference.extension(modality) | context.event (DCM)",
    "anatomical-region": "DocumentReference.extension(bodySite).concept | context.event (SCT region)",
    "accession-number": "DocumentReference.context.related.identifier (type DCM 121022 / ACSN)",
    "study-instance-uid": "DocumentReference.context.related.identifier (type DCM 110180)",
    "identifier": "DocumentReference.masterIdentifier | DocumentReference.identifier",
    "related": "DocumentReference.context.related.identifier",
}
DATE_PARAMS: dict[str, str] = {
    "date": "DocumentReference.date",
    "period": "DocumentReference.context.period",
    "creation": "DocumentReference.content.attachment.creation",
}
# every parameter with its FHIR type, for the CapabilityStatement
SEARCH_PARAMS: dict[str, str] = {
    "patient": "reference",
    "patient.identifier": "token",
    "status": "token",
    "_id": "token",
    **{p: "token" for p in TOKEN_PARAMS},
    "bodysite": "token",
    **{p: "date" for p in DATE_PARAMS},
}
DOCUMENT_STATUSES = frozenset({"current", "superseded", "entered-in-error"})
_ALIASES = {"bodysite": "anatomical-region"}  # the name in MADO's CapabilityStatement
_MODIFIERS = {("related", "identifier")}  # related:identifier (MHD 2:3.67.4.1.3.1)
_IDENTIFIER_PARAMS = frozenset({"identifier", "related", "study-instance-uid", "accession-number"})
_CONTROL = frozenset({"_count", "_offset", "_format"})
_DATE_PREFIXES = frozenset({"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"})
_STATUS_SYSTEM = "http://hl7.org/fhir/document-reference-status"
_MAX_FORM_BYTES = 64 * 1024
_MAX_PARAMETERS = 50


@dataclass(frozen=True)
class Paging:
    count: int
    offset: int


# -- handlers --------------------------------------------------------------------------------------
async def search_document_references(request: Request) -> Response:
    """``GET /fhir/DocumentReference?...`` and ``POST /fhir/DocumentReference/_search`` (form)."""
    registry = Registry.of(request)
    check_format(request)
    params = list(request.query_params.multi_items())
    if request.method == "POST":
        params += await form_params(request)
    query, paging = parse_document_search(params, registry.settings)
    total, docs = await run_in_threadpool(
        registry.store.search_documents, query, offset=paging.offset, count=paging.count
    )
    entries = [
        {
            "fullUrl": f"{registry.base}/DocumentReference/{d['id']}",
            "resource": render_document(d, registry.base),
            "search": {"mode": "match"},
        }
        for d in docs
    ]
    criteria = [(k, v) for k, v in params if k not in _CONTROL]
    return fhir_response(searchset(f"{registry.base}/DocumentReference", criteria, paging, total, entries))


async def read_document_reference(request: Request) -> Response:
    """``GET /fhir/DocumentReference/{id}``: 404 unknown, 410 deleted (FHIR http 3.1.0.4)."""
    registry = Registry.of(request)
    check_format(request)
    doc_id = validate_id(request.path_params["id"], "DocumentReference id")
    stored = await run_in_threadpool(registry.store.document, doc_id)
    if stored is None:
        raise NotFound(f"DocumentReference/{doc_id} is not known")
    if stored.status == "entered-in-error":
        raise Gone(f"DocumentReference/{doc_id} was deleted")
    version = stored.resource.get("meta", {}).get("versionId", "1")
    return fhir_response(render_document(stored.resource, registry.base), headers={"ETag": f'W/"{version}"'})


async def delete_document_reference(request: Request) -> Response:
    """``DELETE /fhir/DocumentReference/{id}``: marks it entered-in-error; ITI-68 then answers 410."""
    registry = Registry.of(request)
    doc_id = validate_id(request.path_params["id"], "DocumentReference id")
    if not await run_in_threadpool(registry.store.delete_document, doc_id):
        raise NotFound(f"DocumentReference/{doc_id} is not known")
    return Response(status_code=204)


async def form_params(request: Request) -> list[tuple[str, str]]:
    """The ``application/x-www-form-urlencoded`` body of a ``_search`` POST (FHIR http 3.1.0.8)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded parameters")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            raise PayloadTooLarge(f"search parameters exceed {_MAX_FORM_BYTES} bytes")
    try:
        return parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise InvalidRequest("the form body is not UTF-8") from None


# -- parsing ---------------------------------------------------------------------------------------
def parse_document_search(
    params: Sequence[tuple[str, str]], settings: RegistrySettings
) -> tuple[DocumentQuery, Paging]:
    """ITI-67 parameters -> a store query; InvalidRequest names the offending parameter."""
    patient_ids: list[tuple[str, ...]] = []
    patient_identifiers: list[tuple[TokenAlt, ...]] = []
    statuses: list[tuple[str, ...]] = []
    ids: list[tuple[str, ...]] = []
    tokens: list[TokenClause] = []
    dates: list[DateClause] = []
    check_parameter_count(params)
    for raw_name, value in params:
        name, _, modifier = raw_name.partition(":")
        name = _ALIASES.get(name, name)
        if name in _CONTROL:
            continue
        if modifier and (name, modifier) not in _MODIFIERS:
            raise InvalidRequest(f"search parameter {raw_name!r}: modifier :{modifier} is not supported")
        alternatives = split_alternatives(raw_name, value)
        if name == "patient":
            patient_ids.append(tuple(_patient_id(raw_name, v) for v in alternatives))
        elif name == "patient.identifier":
            patient_identifiers.append(tuple(token_alternative(raw_name, v) for v in alternatives))
        elif name == "status":
            statuses.append(tuple(_status(raw_name, v) for v in alternatives))
        elif name == "_id":
            ids.append(tuple(validate_id(v, f"{raw_name} value") for v in alternatives))
        elif name in TOKEN_PARAMS:
            alts = [token_alternative(raw_name, v) for v in alternatives]
            if name in _IDENTIFIER_PARAMS:
                alts = [_normalized(a) for a in alts]
            tokens.append(TokenClause(name, tuple(alts)))
        elif name in DATE_PARAMS:
            dates.append(DateClause(name, parse_date_alternatives(raw_name, alternatives)))
        else:
            raise InvalidRequest(
                f"unknown search parameter {raw_name!r} for DocumentReference "
                f"(supported: {', '.join(sorted(SEARCH_PARAMS))})"
            )
    if not (patient_ids or patient_identifiers) or not statuses:
        raise InvalidRequest("ITI-67 needs patient or patient.identifier, and status (MHD 2:3.67.4.1.3)")
    query = DocumentQuery(
        tuple(patient_ids),
        tuple(patient_identifiers),
        tuple(statuses),
        tuple(ids),
        tuple(tokens),
        tuple(dates),
    )
    return query, parse_paging(params, settings)


def parse_paging(params: Sequence[tuple[str, str]], settings: RegistrySettings) -> Paging:
    values: dict[str, str] = {}
    for name, value in params:
        if name in ("_count", "_offset"):
            if name in values:
                raise InvalidRequest(f"search parameter {name!r} is given twice")
            values[name] = value
    count = _non_negative("_count", values.get("_count"), settings.default_page_size)
    offset = _non_negative("_offset", values.get("_offset"), 0)
    return Paging(min(count, settings.max_page_size), offset)


def _non_negative(name: str, value: str | None, default: int) -> int:
    if value is None:
        return default
    if not value.isdigit() or len(value) > 9:
        raise InvalidRequest(f"search parameter {name!r} must be a non-negative integer, got {value!r}")
    return int(value)


def check_parameter_count(params: Sequence[tuple[str, str]]) -> None:
    if len(params) > _MAX_PARAMETERS:
        raise InvalidRequest(f"{len(params)} search parameters: at most {_MAX_PARAMETERS} are accepted")


def token_alternative(name: str, value: str) -> TokenAlt:
    """``system|code`` -> both; ``|code`` -> system ''; ``code`` -> any system; ``system|`` -> any code."""
    return TokenAlt(*split_token(name, value))


def _normalized(alt: TokenAlt) -> TokenAlt:
    if alt.code is None:
        return TokenAlt(RFC3986 if alt.system == DICOM_UID_SYSTEM else alt.system, None)
    system, code = normalize_identifier(alt.system or "", alt.code)
    return TokenAlt(system if alt.system is not None else None, code)


def parse_date_alternatives(name: str, alternatives: Sequence[str]) -> tuple[DateAlt, ...]:
    out = []
    for value in alternatives:
        prefix, rest = (value[:2], value[2:]) if value[:2] in _DATE_PREFIXES else ("eq", value)
        try:
            out.append(DateAlt(prefix, parse_date_range(rest)))
        except InvalidRequest as exc:
            raise InvalidRequest(f"search parameter {name!r}: {exc.message}") from None
    return tuple(out)


def _patient_id(name: str, value: str) -> str:
    """``Patient/{id}``, ``{id}`` or an absolute ``.../Patient/{id}`` -> id."""
    tail = value.rstrip("/").rsplit("/", 2)
    if len(tail) >= 2 and tail[-2] != "Patient":
        raise InvalidRequest(f"search parameter {name!r}: {value!r} is not a Patient reference")
    return validate_id(tail[-1], f"{name} value")


def _status(name: str, value: str) -> str:
    system, _, code = value.rpartition("|")
    if system not in ("", _STATUS_SYSTEM) or code not in DOCUMENT_STATUSES:
        raise InvalidRequest(
            f"search parameter {name!r}: {value!r} is not one of {sorted(DOCUMENT_STATUSES)}"
        )
    return code


# -- response --------------------------------------------------------------------------------------
def searchset(
    url: str, criteria: list[tuple[str, str]], paging: Paging, total: int, entries: list[dict[str, Any]]
) -> dict[str, Any]:
    """A searchset Bundle with ``total`` and self/next/previous links (FHIR search 3.1.1.5.4).

    Paging state lives in the link itself (``_count`` + ``_offset``) so a gateway can replay the
    query against its configured base; order is insertion order, stable between pages.
    """

    def page(offset: int) -> str:
        return f"{url}?{urlencode([*criteria, ('_count', str(paging.count)), ('_offset', str(offset))])}"

    links = [{"relation": "self", "url": page(paging.offset)}]
    if paging.count and paging.offset + paging.count < total:
        links.append({"relation": "next", "url": page(paging.offset + paging.count)})
    if paging.count and paging.offset > 0:
        links.append({"relation": "previous", "url": page(max(0, paging.offset - paging.count))})
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": uuid.uuid4().hex,
        "meta": {"lastUpdated": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")},
        "type": "searchset",
        "total": total,
        "link": links,
    }
    if entries:  # FHIR JSON: no empty arrays
        bundle["entry"] = entries
    return bundle
