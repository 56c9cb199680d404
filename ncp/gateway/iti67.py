"""MHD ITI-67 Find Document References across communities.

Initiating side (country B): routes the search by the patient identifier's issuer to the
responding NCP, keeps its ``ihe-HomeCommunityId`` on every entry (MHD 2:3.67.4.2.2.1.6) and
rewrites ``attachment.url`` to B's own ITI-68 path, so a consumer never talks to A directly.

Responding side (country A): answers from the national registry (architectures A and C) or
fans out to the regional registries (architecture B), merging results and reporting a region
that failed as an OperationOutcome entry (``search.mode = outcome``) rather than failing all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from ncp.errors import InvalidRequest, NcpError, operation_outcome
from ncp.gateway.context import Hop
from ncp.gateway.fhir import (
    HCID_EXTENSION,
    fhir_get,
    fhir_response,
    next_query,
    parse_patient_token,
    route_by_patient,
    searchset,
    with_query,
)
from ncp.security.tokens import PatientRef

__all__ = ["find_document_references_initiating", "find_document_references_responding"]

_PAGING = frozenset({"_count", "_offset"})
_PATIENT_PARAMS = frozenset({"patient", "patient.identifier", "subject"})
_MAX_PAGES = 50


def _one_patient(request: Request, required: bool) -> tuple[PatientRef | None, list[tuple[str, str]]]:
    """The search's one patient, and its parameters with that patient re-escaped: the registry reads the
    very value the guard checked, whatever escapes the consumer wrote."""
    params = list(request.query_params.multi_items())
    if any(k.partition(":")[0] in _PATIENT_PARAMS and k != "patient.identifier" for k, _ in params):
        raise InvalidRequest("a cross-border search names its patient by patient.identifier only")
    tokens = [v for k, v in params if k == "patient.identifier"]
    if len(tokens) > 1 or (required and not tokens):
        raise InvalidRequest(
            "a cross-border search needs exactly one patient.identifier (urn:oid:<issuer>|<id>)"
        )
    if not tokens:
        return None, params
    patient = parse_patient_token("patient.identifier", tokens[0])
    canonical = [(k, patient.search_token() if k == "patient.identifier" else v) for k, v in params]
    return patient, canonical


async def find_document_references_initiating(request: Request) -> Response:
    hop = Hop.of(request)
    patient, params = _one_patient(request, required=True)
    assert patient is not None
    claims = hop.guard.consumer(request, patient=patient)
    country = route_by_patient(hop, patient)
    border = hop.settings.endpoints[country.code].border
    client, _ = hop.clients.peer(country.code)
    extra = hop.guard.assertion_for(claims, country.code)
    answer = await fhir_get(hop, f"{border}/fhir/DocumentReference", params, client=client, extra=extra)
    if answer.status != 200:
        return fhir_response(answer.body, answer.status, hop.request_id)
    own = f"{hop.settings.my_endpoints.public_base}/fhir"
    bundle = answer.body
    for entry in bundle.get("entry", []):
        resource = entry.get("resource", {})
        if resource.get("resourceType") == "DocumentReference":
            _ensure_home_community(resource, country.home_community_id)
            _rewrite_attachments(resource, lambda doc_id: f"{own}/Binary/{country.code}.{doc_id}")
            resource["id"] = f"{country.code}.{resource.get('id', '')}"
            entry["fullUrl"] = f"{own}/DocumentReference/{resource['id']}"
    _rewrite_links(bundle, f"{own}/DocumentReference")
    return fhir_response(bundle, 200, hop.request_id)


async def find_document_references_responding(request: Request) -> Response:
    hop = Hop.of(request)
    patient, params = _one_patient(request, required=hop.guard.enabled)
    hop.guard.peer(request, patient=patient)
    registries = hop.settings.my_endpoints.registries
    own = f"{hop.settings.my_endpoints.border}/fhir"
    if len(registries) == 1:
        ((reg_id, base),) = registries.items()
        answer = await fhir_get(hop, f"{base}/DocumentReference", params)
        if answer.status != 200:
            return fhir_response(answer.body, answer.status, hop.request_id)
        bundle = answer.body
        _localise(bundle.get("entry", []), hop, reg_id, own)
        _rewrite_links(bundle, f"{own}/DocumentReference")
        return fhir_response(bundle, 200, hop.request_id)
    return await _fan_out(hop, params, registries, own)


async def _fan_out(
    hop: Hop, params: list[tuple[str, str]], registries: Mapping[str, str], own: str
) -> Response:
    """Architecture B: query every regional registry, merge, page at the gateway."""
    count, offset = _paging(params)
    query = [(k, v) for k, v in params if k not in _PAGING]
    results = await asyncio.gather(
        *(_all_pages(hop, base, query) for base in registries.values()), return_exceptions=True
    )
    entries: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []
    for (reg_id, _), result in zip(registries.items(), results, strict=True):
        if isinstance(result, NcpError):
            outcomes.append(_region_failed(reg_id, result.message))
        elif isinstance(result, BaseException):
            raise result
        elif isinstance(result, tuple):  # the region answered with an error status
            status, body = result
            if status >= 500:
                outcomes.append(_region_failed(reg_id, f"answered {status}"))
            else:
                return fhir_response(body, status, hop.request_id)
        else:
            _localise(result, hop, reg_id, own)
            entries.extend(result)
    page = entries[offset : offset + count] if count is not None else entries[offset:]
    more = count is not None and offset + count < len(entries)
    self_url = with_query(f"{own}/DocumentReference", params)
    next_url = (
        with_query(
            f"{own}/DocumentReference",
            [*query, ("_count", str(count)), ("_offset", str(offset + (count or 0)))],
        )
        if more
        else None
    )
    return fhir_response(
        searchset(page + outcomes, total=len(entries), self_url=self_url, next_url=next_url),
        200,
        hop.request_id,
    )


async def _all_pages(
    hop: Hop, base: str, query: list[tuple[str, str]]
) -> list[dict[str, Any]] | tuple[int, dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    page_query = query
    for _ in range(_MAX_PAGES):
        answer = await fhir_get(hop, f"{base}/DocumentReference", page_query)
        if answer.status != 200:
            return answer.status, answer.body
        entries += [e for e in answer.body.get("entry", []) if e.get("search", {}).get("mode") != "outcome"]
        nxt = next((lk["url"] for lk in answer.body.get("link", []) if lk.get("relation") == "next"), None)
        if nxt is None:
            return entries
        page_query = next_query(nxt)
    raise InvalidRequest(f"more than {_MAX_PAGES} pages in one region: narrow the search")


def _paging(params: list[tuple[str, str]]) -> tuple[int | None, int]:
    values = dict((k, v) for k, v in params if k in _PAGING)
    try:
        count = int(values["_count"]) if "_count" in values else None
        offset = int(values.get("_offset", "0"))
    except ValueError:
        raise InvalidRequest("_count and _offset must be integers") from None
    if (count is not None and count < 1) or offset < 0:
        raise InvalidRequest("_count must be positive and _offset not negative")
    return count, offset


def _region_failed(reg_id: str, why: str) -> dict[str, Any]:
    outcome = operation_outcome(
        f"regional registry {reg_id!r} did not answer: {why}", code="incomplete", severity="warning"
    )
    return {"resource": outcome, "search": {"mode": "outcome"}}


def _localise(entries: list[dict[str, Any]], hop: Hop, reg_id: str, own: str) -> None:
    """Point entries at this NCP's border: ``Binary/{registry}.{id}``, homeCommunityId set."""
    for entry in entries:
        resource = entry.get("resource", {})
        if resource.get("resourceType") != "DocumentReference":
            continue
        _ensure_home_community(resource, hop.settings.me.home_community_id)
        _rewrite_attachments(resource, lambda doc_id: f"{own}/Binary/{reg_id}.{doc_id}")
        resource["id"] = f"{reg_id}.{resource.get('id', '')}"
        entry["fullUrl"] = f"{own}/DocumentReference/{resource['id']}"


def _ensure_home_community(resource: dict[str, Any], hcid: str) -> None:
    extensions = resource.setdefault("extension", [])
    if not any(e.get("url") == HCID_EXTENSION for e in extensions):
        extensions.append({"url": HCID_EXTENSION, "valueOid": f"urn:oid:{hcid}"})


def _rewrite_attachments(resource: dict[str, Any], url_for: Any) -> None:
    for content in resource.get("content", []):
        attachment = content.get("attachment", {})
        if "url" in attachment:
            attachment["url"] = url_for(urlsplit(attachment["url"]).path.rstrip("/").rsplit("/", 1)[-1])


def _rewrite_links(bundle: dict[str, Any], base: str) -> None:
    for link in bundle.get("link", []):
        if "url" in link:
            link["url"] = with_query(base, next_query(link["url"]))
