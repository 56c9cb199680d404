"""MHD Document Responder grouped with an XDS Document Consumer: a country's XDS.b registry behind FHIR.

NCP-A's responding gateway asks its registries with MHD (ITI-67/68) and PDQm; a country whose registry
is XDS.b (topology ``kind = "xds"``) serves the same FHIR base from this facade, on the listener of the
XDS role (MHD Vol 1 "MHD as an XDS on FHIR" deployment, ITI TF-3 4.5.1.1 mapping):

=========================================  =======================================================
``GET  /fhir/DocumentReference``           ITI-67 -> ITI-18 FindDocuments / FindDocumentsByReferenceId
``POST /fhir/DocumentReference/_search``   the same, form-encoded parameters
``GET  /fhir/DocumentReference/{id}``      read -> ITI-18 GetDocuments (the entryUUID)
``GET  /fhir/Binary/{id}``                 ITI-68 -> GetDocuments, then ITI-43 Retrieve Document Set
``GET  /fhir/Patient?identifier=``         PDQm from the patient ids the registry holds (below)
``POST /xds/registry``, ``/xds/repository`` the XDS.b role itself (``ncp.registry.xds.app``)
=========================================  =======================================================

The ITI-67 parameters, their validation and the answer's paging are the MHD registry's
(``ncp.registry.iti67``), so the gateway cannot tell the two apart. **Patients**: XDS keeps no patient
records, only patient ids (ITI TF-3 4.2.3.2.18) and each entry's sourcePatientInfo; a patient is
*known* when the registry holds a document for that id (Approved or Deprecated), and its demographics are
the newest entry's sourcePatientInfo. So PDQm here takes ``identifier`` only.

A team's own XDS.b registry + repository (topology ``url``) gets the facade alone,
:func:`create_mhd_facade_app`, over mutual TLS with the federation PKI for ``https`` endpoints.

The same routes serve other XDS backends (a :class:`DocumentSource`): MHD grouped with an XCA
Initiating Gateway (``ncp.registry.xca.initiating``) asks every community, and reports those that did not
answer as OperationOutcome entries (``search.mode = outcome``) of the searchset.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ncp.bodytimeout import BodyTimeout
from ncp.errors import (
    Gone,
    InvalidRequest,
    NotAcceptable,
    NotFound,
    UpstreamError,
    fhir_exception_handlers,
    operation_outcome,
)
from ncp.fhirsearch import split_alternatives, split_token
from ncp.registry.fhirhttp import check_format, fhir_response, validate_id
from ncp.registry.iti67 import form_params, parse_document_search, parse_paging, searchset
from ncp.registry.iti68 import choose_representation
from ncp.registry.settings import RegistrySettings
from ncp.registry.store import Representation
from ncp.registry.xds import iti18
from ncp.registry.xds.app import create_xds_app
from ncp.registry.xds.consumer import XdsConsumer
from ncp.registry.xds.ebrim import APPROVED, DocumentEntry
from ncp.registry.xds.fhirmap import (
    DEPRECATED,
    document_reference,
    entry_uuid,
    matches,
    patient_cx,
    patient_resource,
    plan_query,
)
from ncp.registry.xds.settings import XdsSettings
from ncp.security.xua import HEADER

__all__ = [
    "BridgeSettings",
    "DocumentSource",
    "Found",
    "NotAnswered",
    "create_mhd_facade_app",
    "create_xds_mhd_app",
    "facade_routes",
    "serve_facade",
]

_CONTROL = frozenset({"_count", "_offset", "_format"})
_CORRELATION = ("x-request-id", HEADER)  # HEADER: the XUA assertion, into wsse:Security (consumer)


@dataclass(frozen=True)
class BridgeSettings:
    public_base_url: str  # this facade's FHIR base (…/fhir): attachment URLs, fullUrls, paging links
    registry_url: str  # the Document Registry's ITI-18 endpoint
    repository_url: str  # the Document Repository's ITI-43 endpoint
    timeout_s: float = 30.0  # per SOAP exchange (504 beyond)
    max_message_bytes: int = 32 * 1024 * 1024  # an XDS answer (502 beyond)
    default_page_size: int = 100  # ITI-67 page size without _count, as the MHD registry
    max_page_size: int = 1000
    # the community every DocumentReference names (ihe-HomeCommunityId); None: each entry's own ``home``
    home_community_id: str | None = None

    @property
    def paging(self) -> RegistrySettings:
        """The MHD registry's settings, of which the shared ITI-67 parser reads the page sizes only."""
        return RegistrySettings(
            db_path=Path(),
            public_base_url=self.public_base_url,
            home_community_id="",
            default_page_size=self.default_page_size,
            max_page_size=self.max_page_size,
        )


Params = list[tuple[str, str | list[str]]]


@dataclass(frozen=True)
class NotAnswered:
    """A source that did not answer a query (XCA: a community, XDSUnavailableCommunity)."""

    name: str  # what a reader of the OperationOutcome recognises (a region and its homeCommunityId)
    why: str


@dataclass(frozen=True)
class Found:
    """The DocumentEntries a stored query found, and the sources that could not be asked."""

    entries: list[DocumentEntry]
    unavailable: tuple[NotAnswered, ...] = ()


class DocumentSource(Protocol):
    """What the facade asks: ITI-18 (or ITI-38) stored queries, and one document by its entry."""

    async def find(self, query_id: str, params: Params, headers: Mapping[str, str]) -> Found: ...

    async def retrieve(self, entry: DocumentEntry, headers: Mapping[str, str]) -> bytes: ...


@dataclass(frozen=True)
class _Registry:
    """One XDS.b registry and its repository (no partial answers)."""

    consumer: XdsConsumer

    async def find(self, query_id: str, params: Params, headers: Mapping[str, str]) -> Found:
        return Found(await self.consumer.query(query_id, params, headers))

    async def retrieve(self, entry: DocumentEntry, headers: Mapping[str, str]) -> bytes:
        return await self.consumer.retrieve(entry, headers)


@dataclass(frozen=True)
class _Bridge:
    settings: BridgeSettings
    xds: DocumentSource

    @staticmethod
    def of(request: Request) -> _Bridge:
        bridge: _Bridge = request.app.state.bridge
        return bridge


def create_xds_mhd_app(xds: XdsSettings, bridge: BridgeSettings) -> Starlette:
    """The XDS.b registry + repository and, on the same listener, its MHD Document Responder facade."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with _consumer(app, bridge, verify=True):
            yield
        role.state.xds.close()

    role = create_xds_app(xds)
    routes = [
        *(Route(path, role) for path in ("/xds/registry", "/xds/repository", "/health")),  # SOAP Faults
        *facade_routes(),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(BodyTimeout)],
        exception_handlers=fhir_exception_handlers(),
        lifespan=lifespan,
    )


def create_mhd_facade_app(bridge: BridgeSettings, *, verify: ssl.SSLContext | bool = True) -> Starlette:
    """The MHD Document Responder facade alone, in front of an XDS.b registry + repository that runs
    elsewhere (a team's own, topology ``url``); ``verify``: the TLS client context for ``https`` endpoints
    (the federation CA and the country's client certificate, as NCPs reach an external border)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with _consumer(app, bridge, verify=verify):
            yield

    return Starlette(
        routes=[Route("/health", _facade_health, methods=["GET"]), *facade_routes()],
        middleware=[Middleware(BodyTimeout)],
        exception_handlers=fhir_exception_handlers(),
        lifespan=lifespan,
    )


@asynccontextmanager
async def _consumer(
    app: Starlette, bridge: BridgeSettings, *, verify: ssl.SSLContext | bool
) -> AsyncIterator[None]:
    """The facade's XDS Document Consumer, one pooled client for the app's lifetime."""
    timeout = httpx.Timeout(bridge.timeout_s, connect=5.0)
    async with httpx.AsyncClient(timeout=timeout, verify=verify) as client:
        consumer = XdsConsumer(
            client, bridge.registry_url, bridge.repository_url, max_bytes=bridge.max_message_bytes
        )
        serve_facade(app, bridge, _Registry(consumer))
        yield


async def _facade_health(request: Request) -> Response:
    """The facade is up; whether its registry answers is what ITI-67 finds out (502 when it does not)."""
    settings = _Bridge.of(request).settings
    body = {"status": "ok", "registry": settings.registry_url, "repository": settings.repository_url}
    return Response(json.dumps(body), media_type="application/json")


def facade_routes() -> list[Route]:
    """The MHD Document Responder's routes under ``/fhir``; the app's state must hold a source
    (:func:`serve_facade`) and its exception handlers be ``fhir_exception_handlers()``."""
    return [
        Route("/fhir/DocumentReference", _search, methods=["GET"]),
        Route("/fhir/DocumentReference/_search", _search, methods=["POST"]),
        Route("/fhir/DocumentReference/{id}", _read, methods=["GET"]),
        Route("/fhir/Binary/{id}", _binary, methods=["GET"]),
        Route("/fhir/Patient", _patients, methods=["GET"]),
        Route("/fhir/{rest:path}", _unknown, methods=["GET"]),
    ]


def serve_facade(app: Starlette, settings: BridgeSettings, source: DocumentSource) -> None:
    """Point the facade routes of ``app`` at ``source`` (from its lifespan, where clients are opened)."""
    app.state.bridge = _Bridge(settings, source)


def _presented(entry: DocumentEntry, settings: BridgeSettings) -> DocumentEntry:
    hcid = settings.home_community_id
    return replace(entry, home_community_id=f"urn:oid:{hcid}") if hcid else entry


def _not_answered(unavailable: tuple[NotAnswered, ...]) -> list[dict[str, Any]]:
    """Searchset entries for the sources that did not answer (a partial success, MHD ITI-67 3.67.4.2.2)."""
    return [
        {
            "resource": operation_outcome(
                f"{u.name} did not answer: {u.why}", code="incomplete", severity="warning"
            ),
            "search": {"mode": "outcome"},
        }
        for u in unavailable
    ]


def _correlation(request: Request) -> dict[str, str]:
    return {h: request.headers[h] for h in _CORRELATION if h in request.headers}


async def _search(request: Request) -> Response:
    """ITI-67: the stored query, then every parameter on the mapped DocumentReferences, then a page."""
    bridge = _Bridge.of(request)
    check_format(request)
    params = list(request.query_params.multi_items())
    if request.method == "POST":
        params += await form_params(request)
    query, paging = parse_document_search(params, bridge.settings.paging)
    plan = plan_query(query)
    result = (
        await bridge.xds.find(plan.query_id, plan.params, _correlation(request))
        if plan is not None
        else Found([])
    )
    base = bridge.settings.public_base_url
    mapped = (document_reference(_presented(e, bridge.settings), base) for e in result.entries)
    found = [r for r in mapped if matches(r, query)]
    page = found[paging.offset : paging.offset + paging.count]
    bundle_entries = [
        {"fullUrl": f"{base}/DocumentReference/{r['id']}", "resource": r, "search": {"mode": "match"}}
        for r in page
    ] + _not_answered(result.unavailable)
    criteria = [(k, v) for k, v in params if k not in _CONTROL]
    return fhir_response(searchset(f"{base}/DocumentReference", criteria, paging, len(found), bundle_entries))


async def _entry(request: Request, what: str) -> DocumentEntry:
    """The DocumentEntry a FHIR id names (ITI-18 GetDocuments by entryUUID); 404 when none, 502 when none
    was found but a source could not be asked."""
    resource_id = validate_id(request.path_params["id"], f"{what} id")
    uuid = entry_uuid(resource_id)
    result = (
        await _Bridge.of(request).xds.find(
            iti18.GET_DOCUMENTS, [("$XDSDocumentEntryEntryUUID", [uuid])], _correlation(request)
        )
        if uuid
        else Found([])
    )
    if not result.entries and result.unavailable:  # it may be held where nobody could ask
        raise UpstreamError("; ".join(f"{u.name} did not answer: {u.why}" for u in result.unavailable))
    if not result.entries:
        raise NotFound(f"{what}/{resource_id} is not known")
    return result.entries[0]


async def _read(request: Request) -> Response:
    check_format(request)
    entry = await _entry(request, "DocumentReference")
    settings = _Bridge.of(request).settings
    return fhir_response(document_reference(_presented(entry, settings), settings.public_base_url))


async def _binary(request: Request) -> Response:
    """ITI-68 (MHD 2:3.68.4.2): 410 for a deprecated entry, as the MHD registry answers a superseded one;
    406 when ``Accept`` excludes the entry's mimeType; the bytes from ITI-43."""
    entry = await _entry(request, "Binary")
    if entry.status == DEPRECATED:
        raise Gone(f"Binary/{request.path_params['id']}: the document is deprecated")
    offered = Representation(0, entry.mime_type, entry.hash, entry.size or 0)
    accept = request.headers.get("accept")
    if choose_representation(accept, [offered]) is None:
        raise NotAcceptable(f"the document is {entry.mime_type}; Accept {accept!r} does not allow it")
    etag = f'"{entry.hash}"'
    headers = {"ETag": etag, "Vary": "Accept", "Cache-Control": "private, no-cache"}
    if entry.hash and etag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers=headers)
    data = await _Bridge.of(request).xds.retrieve(entry, _correlation(request))
    return Response(data, media_type=entry.mime_type, headers=headers)


async def _patients(request: Request) -> Response:
    """PDQm by identifier: the patient is known when the registry holds documents for the id."""
    bridge = _Bridge.of(request)
    check_format(request)
    params = list(request.query_params.multi_items())
    criteria = [(k, v) for k, v in params if k not in _CONTROL]
    if [k for k, _ in criteria] != ["identifier"]:
        raise InvalidRequest(
            "this registry is XDS and knows patients by identifier only: "
            "Patient?identifier=urn:oid:<issuer>|<id>"
        )
    alternatives = split_alternatives("identifier", criteria[0][1])
    if len(alternatives) != 1:
        raise InvalidRequest("search parameter 'identifier' must name exactly one patient")
    system, value = split_token("identifier", alternatives[0])
    cx = patient_cx(system, value)
    paging = parse_paging(params, bridge.settings.paging)
    statuses = [APPROVED, DEPRECATED]
    query: list[tuple[str, str | list[str]]] = [
        ("$XDSDocumentEntryPatientId", cx),
        ("$XDSDocumentEntryStatus", statuses),
    ]
    entries = (await bridge.xds.find(iti18.FIND_DOCUMENTS, query, _correlation(request))).entries
    base = bridge.settings.public_base_url
    patients: list[dict[str, Any]] = []
    if entries and system and value:
        patients.append(patient_resource(system.removeprefix("urn:oid:"), value, entries))
    page = patients[paging.offset : paging.offset + paging.count]
    bundle_entries = [
        {"fullUrl": f"{base}/Patient/{p['id']}", "resource": p, "search": {"mode": "match"}} for p in page
    ]
    return fhir_response(searchset(f"{base}/Patient", criteria, paging, len(patients), bundle_entries))


async def _unknown(request: Request) -> Response:
    raise NotFound(f"{request.url.path} is not served by this MHD facade of an XDS registry")
