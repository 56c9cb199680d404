"""FHIR plumbing shared by the gateway's MHD/PDQm transactions: upstream calls and URL rewriting.

No URL taken from a response is ever fetched: only the query part of a ``next`` link is reused,
against a base URL that comes from the topology.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from starlette.datastructures import QueryParams
from starlette.responses import Response

from ncp.errors import InvalidRequest, NotFound, UpstreamError, UpstreamTimeout
from ncp.fhirsearch import split_alternatives, split_token
from ncp.gateway.context import Hop
from ncp.mhd import HCID_EXTENSION
from ncp.security.tokens import PatientRef, patient_ref
from ncp.topology import Country

__all__ = [
    "HCID_EXTENSION",
    "FhirAnswer",
    "fhir_get",
    "fhir_response",
    "next_query",
    "parse_patient_token",
    "route_by_patient",
    "searchset",
    "split_id",
]

FHIR_JSON = "application/fhir+json"
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


@dataclass(frozen=True)
class FhirAnswer:
    status: int
    body: dict[str, Any]


async def fhir_get(
    hop: Hop,
    url: str,
    params: Sequence[tuple[str, str]],
    *,
    client: httpx.AsyncClient | None = None,
    extra: Mapping[str, str] | None = None,
) -> FhirAnswer:
    """GET a FHIR resource/search from the next hop; transport failures become 502/504.

    Nothing of the inbound request is forwarded but the correlation id: credentials are per hop. A call
    to this country's own registries (no peer ``client``) carries XUA (:meth:`Hop.national_assertion`).
    """
    out = {"accept": FHIR_JSON, "x-request-id": hop.request_id, "x-forwarded-by": hop.name, **(extra or {})}
    if client is None:
        out.update(hop.national_assertion())
    try:
        resp = await (client or hop.fhir).get(url, params=list(params), headers=out)
    except httpx.TimeoutException:
        raise UpstreamTimeout(f"{url.split('/fhir')[0]} did not answer in time") from None
    except httpx.HTTPError as exc:
        raise UpstreamError(f"next hop unreachable ({type(exc).__name__})") from None
    try:
        body = resp.json()
    except ValueError:
        raise UpstreamError(f"next hop answered {resp.status_code} without FHIR JSON") from None
    if not isinstance(body, dict):
        raise UpstreamError("next hop answered with a non-resource JSON body")
    return FhirAnswer(resp.status_code, body)


def fhir_response(body: Mapping[str, Any], status: int = 200, request_id: str | None = None) -> Response:
    headers = {"x-request-id": request_id} if request_id else None
    return Response(json.dumps(body), status_code=status, media_type=FHIR_JSON, headers=headers)


def parse_patient_token(name: str, value: str) -> PatientRef:
    """One patient from a token search value ``urn:oid:{issuer}|{id}``, read by FHIR search rules (escapes
    honoured) exactly as the registry will read it; several alternatives or a broken grammar are a 400."""
    alternatives = split_alternatives(name, value)
    if len(alternatives) != 1:
        raise InvalidRequest(f"search parameter {name!r} must name exactly one patient")
    system, code = split_token(name, alternatives[0])
    if not system or not system.startswith("urn:oid:") or not code:
        raise InvalidRequest(f"search parameter {name!r} must be urn:oid:<issuer>|<id>")
    try:
        return patient_ref(system, code)
    except ValueError as exc:
        raise InvalidRequest(f"search parameter {name!r}: {exc}") from None


def route_by_patient(hop: Hop, patient: PatientRef) -> Country:
    """The community that issues this patient identifier (ITI-78/ITI-67 routing by issuer)."""
    country = hop.settings.topology.by_patient_issuer(patient.issuer)
    if country is None:
        raise NotFound(
            f"no community of this federation issues patient identifiers under urn:oid:{patient.issuer}"
        )
    return country


def split_id(value: str, what: str) -> tuple[str, str]:
    """``prefix.rest`` -> (prefix, rest), checking the FHIR id syntax of the whole."""
    if not _FHIR_ID.fullmatch(value):
        raise InvalidRequest(f"{what} {value!r} is not a valid FHIR id")
    prefix, sep, rest = value.partition(".")
    # the rest becomes a path segment at the next hop: "." or ".." there would name another resource
    if not sep or not rest or rest.startswith(".") or rest.endswith("."):
        raise NotFound(f"{what} {value!r} is unknown")
    return prefix, rest


def next_query(link_url: str, drop: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """The query of a ``next`` link, to be replayed against a configured base (never the link's host)."""
    return [(k, v) for k, v in QueryParams(urlsplit(link_url).query).multi_items() if k not in drop]


def searchset(
    entries: list[dict[str, Any]], *, total: int, self_url: str, next_url: str | None
) -> dict[str, Any]:
    links = [{"relation": "self", "url": self_url}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    return {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links, "entry": entries}


def with_query(base: str, params: Sequence[tuple[str, str]]) -> str:
    return base + ("?" + urlencode(list(params)) if params else "")
