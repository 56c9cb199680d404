"""Per-request view of a gateway hop: its settings, clients and correlation id."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import httpx
from starlette.requests import Request

from ncp.gateway.proxy import Upstream
from ncp.gateway.settings import GatewaySettings

__all__ = ["Clients", "Hop"]


@dataclass
class Clients:
    """Upstream clients owned by one app's lifespan (never module-level: several NCPs share a process)."""

    fhir: httpx.AsyncClient
    upstream: Upstream

    async def aclose(self) -> None:
        await self.fhir.aclose()
        await self.upstream.aclose()


@dataclass(frozen=True)
class Hop:
    settings: GatewaySettings
    clients: Clients
    name: str  # e.g. "ncp-at-gateway" (Server-Timing metric name, audit source)
    request_id: str

    @classmethod
    def of(cls, request: Request) -> Hop:
        state = request.app.state
        rid = request.headers.get("x-request-id") or str(uuid.uuid4())
        if len(rid) > 128 or not rid.isprintable():
            rid = str(uuid.uuid4())
        return cls(state.settings, state.clients, state.hop_name, rid)

    @property
    def upstream(self) -> Upstream:
        return self.clients.upstream

    @property
    def fhir(self) -> httpx.AsyncClient:
        return self.clients.fhir

    def outbound_headers(self, request: Request, keep: frozenset[str]) -> dict[str, str]:
        """A fresh outbound header set: only ``keep`` from the inbound request, plus correlation."""
        headers = {k: v for k, v in request.headers.items() if k in keep}
        headers["x-request-id"] = self.request_id
        headers["x-forwarded-by"] = self.name
        return headers
