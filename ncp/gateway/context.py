"""Per-request view of a gateway hop: its settings, clients and correlation id."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from starlette.requests import Request

from ncp.asgi import raw_header
from ncp.gateway.guard import Guard
from ncp.gateway.proxy import Upstream
from ncp.gateway.settings import GatewaySettings
from ncp.security.audit import random_uuid
from ncp.security.xua import HEADER, XuaContext, national_audience

__all__ = ["Clients", "Hop", "valid_request_id"]

_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")


def valid_request_id(rid: str) -> bool:
    """A request id goes into headers at every hop: visible ASCII only, at most 128 characters."""
    return _REQUEST_ID.fullmatch(rid) is not None


@dataclass
class Clients:
    """Upstream clients owned by one app's lifespan (never module-level: several NCPs share a process).

    ``fhir``/``upstream`` reach this country's own registries and PACS; ``peers`` hold one pair per
    other country, with a TLS client context pinned to that country's certificate when security is on.
    """

    fhir: httpx.AsyncClient
    upstream: Upstream
    peers: dict[str, tuple[httpx.AsyncClient, Upstream]] = field(default_factory=dict)

    def peer(self, country: str) -> tuple[httpx.AsyncClient, Upstream]:
        return self.peers.get(country, (self.fhir, self.upstream))

    async def aclose(self) -> None:
        for fhir, upstream in [(self.fhir, self.upstream), *self.peers.values()]:
            await fhir.aclose()
            await upstream.aclose()


class RequestState(Protocol):
    """What a hop keeps per request (Starlette's ``request.state``, or the nginx front's): the claims and
    peer the guard verified, which may be absent, and the national XUA assertion once signed."""

    xua_header: str | None


@dataclass(frozen=True)
class Hop:
    settings: GatewaySettings
    clients: Clients
    guard: Guard
    name: str  # e.g. "ncp-at-gateway" (Server-Timing metric name, audit source)
    request_id: str
    request_state: RequestState | None = None

    @classmethod
    def of(cls, request: Request) -> Hop:
        app = request.app.state
        state = request.state
        # what request.state holds, and the raw headers, read without State's or Headers' KeyError
        known: dict[str, Any] = request.scope["state"]
        rid = known.get("request_id") or raw_header(request.scope, b"x-request-id")
        if not valid_request_id(rid):
            rid = random_uuid()
        known["request_id"] = rid
        return cls(app.settings, app.clients, app.guard, app.hop_name, rid, state)

    @property
    def upstream(self) -> Upstream:
        return self.clients.upstream

    @property
    def fhir(self) -> httpx.AsyncClient:
        return self.clients.fhir

    def national_assertion(self) -> dict[str, str]:
        """ITI-40 XUA for this country's own registries: on the border, the HCP and treatment context of
        the NCP assertion the guard verified, re-signed by this NCP for its national infrastructure
        (docs/xua.md); signed once per request. Nothing without security or off the border."""
        state = self.request_state
        claims = getattr(state, "claims", None)
        xua = self.guard.xua
        if xua is None or state is None or claims is None or getattr(state, "peer", None) is None:
            return {}
        header: str | None = getattr(state, "xua_header", None)
        if header is None:
            context = XuaContext(
                claims.subject,
                claims.role,
                claims.organisation,
                claims.organisation_id,
                claims.facility,
                claims.purpose_of_use,
                claims.patient,
            )
            header = xua.header(context, audience=national_audience(self.settings.country))
            state.xua_header = header
        return {HEADER: header}

    def outbound_headers(
        self, request: Request, keep: frozenset[str], extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        """A fresh outbound header set: only ``keep`` from the inbound request, plus correlation."""
        headers = {k: v for k, v in request.headers.items() if k in keep}
        headers["x-request-id"] = self.request_id
        headers["x-forwarded-by"] = self.name
        headers.update(extra or {})
        return headers
