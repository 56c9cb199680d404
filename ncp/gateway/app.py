"""The NCP gateway's two listeners (docs/architecture.md, "Roles and listeners").

* ``gateway``: for this country's consumers (initiating side): ITI-78/67/68 facade and the
  Initiating Imaging Gateway ``/wado/...``.
* ``border``: for other NCPs only (responding side): ITI-78/67/68 answered from this country's
  registries and the Responding Imaging Gateway ``/wado-rs/...``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ncp.bodytimeout import BodyTimeout
from ncp.cors import CorsMiddleware
from ncp.errors import NcpError, dicomweb_error_response, fhir_error_response, from_http_exception
from ncp.gateway import iti67, iti68, iti78, rad160
from ncp.gateway.authz import FrontAuthz
from ncp.gateway.context import Clients
from ncp.gateway.front import socket_path
from ncp.gateway.guard import AuditMiddleware, Guard, idp_routes_handlers
from ncp.gateway.proxy import make_upstream
from ncp.gateway.settings import GatewaySettings
from ncp.security.audit import AuditStore, audit_routes, auditor_check, note_failure
from ncp.security.pki import FederationPki

__all__ = ["create_border_app", "create_gateway_app"]


def create_gateway_app(settings: GatewaySettings) -> Starlette:
    routes = [
        Route("/wado/{path:path}", rad160.initiating_imaging_gateway),  # first: tried on every image request
        Route("/fhir/Patient", iti78.find_patients_initiating),
        Route("/fhir/DocumentReference", iti67.find_document_references_initiating),
        Route("/fhir/Binary/{id}", iti68.retrieve_document_initiating),
    ]
    pki = _pki(settings)
    if pki is not None:  # the country's simulated identity provider sits beside its NCP
        routes += [
            Route(path, h, methods=["POST"])
            for path, h in idp_routes_handlers(pki, settings.country, iti78.patient_known).items()
        ]
    return _app(settings, routes, "gateway")


def create_border_app(settings: GatewaySettings) -> Starlette:
    routes = [
        Route("/wado-rs/{path:path}", rad160.responding_imaging_gateway),  # first, as above
        Route("/fhir/Patient", iti78.find_patients_responding),
        Route("/fhir/DocumentReference", iti67.find_document_references_responding),
        Route("/fhir/Binary/{id}", iti68.retrieve_document_responding),
    ]
    return _app(settings, routes, "border")


def _pki(settings: GatewaySettings) -> FederationPki | None:
    return FederationPki.load(settings.pki_dir) if settings.pki_dir else None


# This country's registries close a connection idle for 5 s (uvicorn's default) and httpx, unlike aiohttp,
# does not retry a GET that meets that close: the ownership check, asked every 5 s, met it and answered
# 502 in the benchmark. A pooled connection is therefore dropped well before a registry would drop it.
_LOCAL_KEEPALIVE_S = 2.0


def _clients(settings: GatewaySettings, pki: FederationPki | None) -> Clients:
    timeout = httpx.Timeout(settings.timeouts.first_byte, connect=settings.timeouts.connect)
    clients = Clients(
        fhir=httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(keepalive_expiry=_LOCAL_KEEPALIVE_S)),
        upstream=make_upstream(settings.data_plane, settings.timeouts),
    )
    if pki is not None:
        # every country's border, its own included: a consumer may identify a patient of its own country
        for peer in settings.topology.countries:
            tls = pki.client_ssl_context(settings.country, peer=peer)
            clients.peers[peer] = (
                httpx.AsyncClient(timeout=timeout, verify=tls),
                make_upstream(settings.data_plane, settings.timeouts, tls),
            )
    return clients


def _app(settings: GatewaySettings, routes: list[Route], listener: Literal["gateway", "border"]) -> Starlette:
    pki = _pki(settings)
    hop_name = f"{settings.agent}-{listener}"

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        clients = _clients(settings, pki)
        app.state.clients = clients
        front = await _front_authz(settings, app, listener, audit)
        try:
            yield
        finally:
            if front is not None:
                await front.close()
            await clients.aclose()
            if audit is not None:
                audit.close()

    audit = AuditStore(settings.audit_db) if settings.audit_db else None
    extra = _audit_routes(settings, audit, pki, listener)
    middleware = (
        [
            Middleware(
                AuditMiddleware, store=audit, source=hop_name, home_community_id=settings.me.home_community_id
            )
        ]
        if audit
        else []
    )
    if listener == "gateway":  # browsers are consumers; the border is for NCPs only
        cors = [Middleware(CorsMiddleware, origins=settings.me.cors_origins, agent=hop_name)]
    else:
        cors = []
    handler = _error_handler(hop_name)
    app = Starlette(
        routes=[*routes, *extra, Route("/health", _health)],
        lifespan=lifespan,
        # outermost: every answer (a 408 too) names an allowed origin; BodyTimeout: the audit records a 408
        middleware=[*cors, Middleware(BodyTimeout), *middleware],
        exception_handlers={NcpError: handler, HTTPException: handler},
    )
    app.state.settings = settings
    app.state.hop_name = hop_name
    app.state.guard = Guard(settings.country, pki, fronted=settings.front_sockets is not None)
    return app


async def _front_authz(
    settings: GatewaySettings, app: Starlette, listener: str, audit: AuditStore | None
) -> FrontAuthz | None:
    """Behind the nginx front: answer its questions on this listener's socket, on this app's loop."""
    if settings.front_sockets is None:
        return None
    front = FrontAuthz(settings, app.state.clients, app.state.guard, listener, audit)
    sockets = settings.front_sockets
    await front.start(
        socket_path(sockets, settings.country, listener, "authz"),
        socket_path(sockets, settings.country, listener, "audit"),
    )
    return front


def _audit_routes(
    settings: GatewaySettings, store: AuditStore | None, pki: FederationPki | None, listener: str
) -> list[Route]:
    """The NCP's audit trail on this listener, for auditors only (open with security off); its links and
    ``fullUrl`` values start with the listener's configured base, never with a Host header."""
    if store is None:
        return []
    ends = settings.my_endpoints
    base = ends.public_base if listener == "gateway" else ends.border
    return audit_routes(store, base=base, authorize=auditor_check(pki, settings.country))


def _error_handler(agent: str) -> Callable[[Request, Exception], Any]:
    def handle(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):  # Starlette's own 404 (no route), 405, 400: the same shapes
            exc = from_http_exception(exc)
        assert isinstance(exc, NcpError)
        is_fhir = request.url.path.startswith(("/fhir", "/idp"))
        note_failure(request, exc.message)  # every refusal and failure is audited with its reason
        response = fhir_error_response(exc) if is_fhir else dicomweb_error_response(exc, agent)
        if rid := request.headers.get("x-request-id"):
            response.headers["x-request-id"] = rid
        return response

    return handle


async def _health(request: Request) -> Response:
    settings: GatewaySettings = request.app.state.settings
    return Response(json.dumps({"status": "ok", "country": settings.country}), media_type="application/json")
