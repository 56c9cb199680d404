"""MHD ITI-68 Retrieve Document across communities (MHD 2:3.68).

NCP-B serves ``{B}/fhir/Binary/{country}.{registry}.{id}`` (the URLs it wrote into ITI-67
results) by relaying to ``{A}/fhir/Binary/{registry}.{id}``; NCP-A relays to that registry.
Status (200/404/406/410/403), ``Content-Type`` and bytes pass through; ``Accept`` is forwarded
so the document source negotiates (application/dicom, application/pdf, application/fhir+json).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ncp.errors import NotFound
from ncp.gateway.context import Hop
from ncp.gateway.fhir import split_id
from ncp.gateway.proxy import relay

__all__ = ["retrieve_document_initiating", "retrieve_document_responding"]

_FORWARDED = frozenset({"accept", "authorization", "x-ncp-assertion"})


async def retrieve_document_initiating(request: Request) -> Response:
    hop = Hop.of(request)
    code, rest = split_id(request.path_params["id"], "Binary id")
    if code not in hop.settings.topology.countries:
        raise NotFound(f"Binary {request.path_params['id']!r} is unknown")
    url = f"{hop.settings.endpoints[code].border}/fhir/Binary/{rest}"
    return await relay(
        hop.upstream, url, hop.outbound_headers(request, _FORWARDED), hop=hop.name, request_id=hop.request_id
    )


async def retrieve_document_responding(request: Request) -> Response:
    hop = Hop.of(request)
    reg_id, doc_id = split_id(request.path_params["id"], "Binary id")
    base = hop.settings.my_endpoints.registries.get(reg_id)
    if base is None:
        raise NotFound(f"Binary {request.path_params['id']!r} is unknown")
    headers = hop.outbound_headers(request, _FORWARDED - {"authorization", "x-ncp-assertion"})
    return await relay(
        hop.upstream, f"{base}/Binary/{doc_id}", headers, hop=hop.name, request_id=hop.request_id
    )
