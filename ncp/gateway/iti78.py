"""Patient identification across communities, PDQm ITI-78 style (docs/architecture.md, step 0).

NCP-B routes ``Patient?identifier=urn:oid:{issuer}|{id}`` to the community that issues the
identifier; NCP-A searches its registries (all regions in architecture B) and returns one
searchset Bundle.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ncp.errors import InvalidRequest, NcpError
from ncp.gateway.context import Hop
from ncp.gateway.fhir import (
    FhirAnswer,
    fhir_get,
    fhir_response,
    parse_patient_token,
    route_by_patient,
    searchset,
    with_query,
)
from ncp.security.tokens import PatientRef

__all__ = ["find_patients_initiating", "find_patients_responding", "patient_known"]


def _identifier(request: Request) -> PatientRef:
    """The one patient searched for; it is passed on re-escaped, never as the consumer spelled it."""
    values = [v for k, v in request.query_params.multi_items() if k != "_format"]
    names = {k for k, _ in request.query_params.multi_items() if k != "_format"}
    if names != {"identifier"} or len(values) != 1:
        raise InvalidRequest("Patient search needs exactly one identifier=urn:oid:<issuer>|<id>")
    return parse_patient_token("identifier", values[0])


async def find_patients_initiating(request: Request) -> Response:
    patient = _identifier(request)
    answer = await _identify(request, patient)
    hop = Hop.of(request)
    body = answer.body
    if answer.status == 200:
        own = with_query(
            f"{hop.settings.my_endpoints.public_base}/fhir/Patient", [("identifier", patient.search_token())]
        )
        body["link"] = [{"relation": "self", "url": own}]
    return fhir_response(body, answer.status, hop.request_id)


async def patient_known(request: Request, patient: PatientRef) -> bool:
    """Whether the community that issues the identifier knows the patient: the identity provider opens
    a treatment context only for an identified patient (docs/architecture.md, security)."""
    answer = await _identify(request, patient)
    return answer.status == 200 and bool(answer.body.get("entry"))


async def _identify(request: Request, patient: PatientRef) -> FhirAnswer:
    """ITI-78 at the NCP of the community that issues the identifier, with the caller's HCP context."""
    hop = Hop.of(request)
    claims = hop.guard.consumer(request, treatment=False)
    country = route_by_patient(hop, patient)
    client, _ = hop.clients.peer(country.code)
    return await fhir_get(
        hop,
        f"{hop.settings.endpoints[country.code].border}/fhir/Patient",
        [("identifier", patient.search_token())],
        client=client,
        extra=hop.guard.assertion_for(claims, country.code),
    )


async def find_patients_responding(request: Request) -> Response:
    hop = Hop.of(request)
    hop.guard.peer(request, treatment=False)
    token = _identifier(request).search_token()
    bases = list(hop.settings.my_endpoints.registries.values())
    answers = await asyncio.gather(
        *(fhir_get(hop, f"{b}/Patient", [("identifier", token)]) for b in bases),
        return_exceptions=True,
    )
    seen: dict[str, dict[str, Any]] = {}
    for answer in answers:
        if isinstance(answer, NcpError):
            continue  # another region may know the patient; the search is by identifier, not by region
        if isinstance(answer, BaseException):
            raise answer
        if answer.status != 200:
            return fhir_response(answer.body, answer.status, hop.request_id)
        for entry in answer.body.get("entry", []):
            resource = entry.get("resource", {})
            seen.setdefault(resource.get("id", ""), {"fullUrl": entry.get("fullUrl"), "resource": resource})
    if not seen and answers and all(isinstance(a, NcpError) for a in answers):
        raise answers[0]  # type: ignore[misc]
    own = f"{hop.settings.my_endpoints.border}/fhir/Patient"
    bundle = searchset(
        list(seen.values()), total=len(seen), self_url=with_query(own, [("identifier", token)]), next_url=None
    )
    return fhir_response(bundle, 200, hop.request_id)
