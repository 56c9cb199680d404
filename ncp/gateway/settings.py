"""The gateway's typed settings: one country's view of the topology and of where everything listens."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ncp.gateway.proxy import DataPlane, Timeouts
from ncp.topology import Country, CountryEndpoints, Endpoints, Topology

__all__ = ["AllowedBase", "GatewaySettings"]


@dataclass(frozen=True)
class AllowedBase:
    """An allowlisted WADO-RS base: scheme, host, port and path prefix (normalised)."""

    scheme: str
    host: str
    port: int
    path: str  # always ends with '/'

    @classmethod
    def parse(cls, url: str) -> AllowedBase:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        path = parts.path if parts.path.endswith("/") else parts.path + "/"
        return cls(parts.scheme, (parts.hostname or "").lower(), port, path)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.path}"


@dataclass(frozen=True)
class GatewaySettings:
    topology: Topology
    country: str
    endpoints: Endpoints
    data_plane: DataPlane = "h1"
    timeouts: Timeouts = field(default_factory=Timeouts)
    pki_dir: Path | None = None  # the federation's test PKI; None = security off (benchmarks only)
    audit_db: Path | None = None  # where this NCP's AuditEvents are kept
    front_sockets: Path | None = None  # behind the nginx front (ncp.gateway.front): its sockets' folder

    @property
    def me(self) -> Country:
        return self.topology.country(self.country)

    @property
    def my_endpoints(self) -> CountryEndpoints:
        return self.endpoints[self.country]

    @property
    def agent(self) -> str:
        return f"ncp-{self.country.lower()}"

    def pacs_base(self, rluid: str) -> str | None:
        """Retrieve Location UID -> WADO-RS base of one of this country's PACS (MADO 6.X.2.14 lookup)."""
        if self.me.faults.ignore_retrieve_location_uid:  # deliberately broken, for scenario self-tests
            return next(iter(self.my_endpoints.pacs.values()), None)
        return self.my_endpoints.pacs.get(rluid)

    def names_public_base(self, rluid: str) -> bool:
        """Whether the PACS behind ``rluid`` names the public base it is told (``Forwarded``,
        ``X-Forwarded-Prefix``) in its part headers (PS3.18 8.7.3 ``Content-Location``) itself: the embedded
        PACS does (ncp/pacs/context.py); Orthanc and other PACS name themselves."""
        if self.me.faults.ignore_retrieve_location_uid:
            return False
        return any(p.retrieve_location_uid == rluid and p.backend == "embedded" for p in self.me.pacs)

    def allowed_bases(self) -> tuple[AllowedBase, ...]:
        return tuple(AllowedBase.parse(u) for u in self.my_endpoints.pacs.values())
