"""What a portal needs to know: its country, its own gateway's consumer-facing URL, the federation."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from ncp.topology import Topology

__all__ = ["PortalSettings"]


@dataclass(frozen=True)
class PortalSettings:
    country: str
    gateway: str  # this NCP's gateway listener as the portal reaches it (never shown to a browser)
    countries: tuple[tuple[str, str, str], ...]  # (code, name, patient-ID issuer) an identifier may come from
    secure_cookie: bool = False  # the portal is served over HTTPS (a public_url https://...)
    public_host: str = ""  # host[:port] of the country's public_url: a form posted there is same-origin too
    cors_origins: tuple[str, ...] = ()  # browser viewers that may call the WIA facade (the gateway's list)

    @classmethod
    def from_topology(cls, topology: Topology, country: str, gateway: str) -> PortalSettings:
        me = topology.country(country)
        return cls(
            country=country,
            gateway=gateway,
            countries=tuple((c.code, c.name, c.patient_id_issuer) for c in topology.countries.values()),
            secure_cookie=(me.public_url or "").startswith("https://"),
            public_host=urlsplit(me.public_url or "").netloc,
            cors_origins=me.cors_origins,
        )
