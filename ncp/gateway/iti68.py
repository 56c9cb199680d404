"""MHD ITI-68 Retrieve Document across communities (MHD 2:3.68).

NCP-B serves ``{B}/fhir/Binary/{country}.{registry}.{id}`` (the URLs it wrote into ITI-67
results) by relaying to ``{A}/fhir/Binary/{registry}.{id}``; NCP-A relays to that registry.
Status (200/404/406/410/403), ``Content-Type`` and bytes pass through; ``Accept`` is forwarded
so the document source negotiates (application/dicom, application/pdf, application/fhir+json).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ncp.errors import Forbidden, NotFound
from ncp.gateway.context import Hop
from ncp.gateway.fhir import fhir_get, split_id
from ncp.gateway.proxy import relay
from ncp.security.tokens import Claims, PatientRef

__all__ = ["retrieve_document_initiating", "retrieve_document_responding"]

_FORWARDED = frozenset({"accept"})


async def retrieve_document_initiating(request: Request) -> Response:
    hop = Hop.of(request)
    claims = hop.guard.consumer(request)
    code, rest = split_id(request.path_params["id"], "Binary id")
    if code not in hop.settings.topology.countries:
        raise NotFound(f"Binary {request.path_params['id']!r} is unknown")
    url = f"{hop.settings.endpoints[code].border}/fhir/Binary/{rest}"
    headers = hop.outbound_headers(request, _FORWARDED, hop.guard.assertion_for(claims, code))
    _, upstream = hop.clients.peer(code)
    return await relay(upstream, url, headers, hop=hop.name, request_id=hop.request_id)


async def retrieve_document_responding(request: Request) -> Response:
    hop = Hop.of(request)
    claims = hop.guard.peer(request)
    reg_id, doc_id = split_id(request.path_params["id"], "Binary id")
    base = hop.settings.my_endpoints.registries.get(reg_id)
    if base is None:
        raise NotFound(f"Binary {request.path_params['id']!r} is unknown")
    if claims is not None:
        await _require_subject(hop, f"{base}/DocumentReference/{doc_id}", claims)
    headers = hop.outbound_headers(request, _FORWARDED, hop.national_assertion())
    return await relay(
        hop.upstream, f"{base}/Binary/{doc_id}", headers, hop=hop.name, request_id=hop.request_id
    )


async def _require_subject(hop: Hop, url: str, claims: Claims) -> None:
    """ITI-68 under a treatment context: the document must be the asserted patient's (else 403)."""
    answer = await fhir_get(hop, url, [])
    if answer.status == 404:
        raise NotFound("document is unknown")
    subject = answer.body.get("subject", {}).get("identifier", {})
    owner = PatientRef(str(subject.get("system", "")).removeprefix("urn:oid:"), str(subject.get("value", "")))
    if answer.status != 200 or owner != claims.patient:
        raise Forbidden("the document does not belong to the patient of the treatment context")
