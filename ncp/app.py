"""The composition root: the only module that wires the role packages together.

A :class:`Plan` says where every role of a topology listens. ``build_role`` turns one role of the
plan into ASGI apps with their settings; :mod:`ncp.federation` runs them as processes or threads.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette

from ncp.errors import InvalidRequest
from ncp.gateway.app import create_border_app, create_gateway_app
from ncp.gateway.front import Front, socket_dir, socket_path
from ncp.gateway.proxy import DataPlane
from ncp.gateway.settings import GatewaySettings
from ncp.link.profile import FaultSpec, LinkProfile, parse_fault
from ncp.pacs.app import PacsSettings, create_pacs_app
from ncp.pacs.rad69 import PATH as RAD69_PATH
from ncp.portal import PortalSettings, create_portal_app, with_portal
from ncp.registry.app import RegistrySettings, create_registry_app
from ncp.registry.xca.initiating import create_initiating_app
from ncp.registry.xca.rad75 import RESPONDING_PATH, initiating_routes, responding_routes
from ncp.registry.xca.responding import create_responding_app
from ncp.registry.xca.settings import Community, InitiatingSettings
from ncp.registry.xds.mhd import BridgeSettings, create_mhd_facade_app, create_xds_mhd_app
from ncp.registry.xds.settings import XdsSettings, soap_endpoints
from ncp.security.pki import FederationPki
from ncp.security.tokens import ncp_id
from ncp.security.xua import national_audience
from ncp.server import free_port
from ncp.topology import (
    Country,
    CountryEndpoints,
    Endpoints,
    Registry,
    Topology,
    XdsEndpoints,
    builtin_topology,
    load_topology,
)

__all__ = [
    "Plan",
    "RelaySpec",
    "Role",
    "build_relay",
    "build_role",
    "link_role_id",
    "load_source",
    "make_plan",
    "xds_endpoints",
]


@dataclass(frozen=True)
class Role:
    """One server process: ``FR/gateway`` (two listeners), ``FR/registry/national``, ``FR/pacs/pacs-1``,
    or an emulated link's relay ``link/FR-AT`` (see :func:`link_role_id`)."""

    id: str
    ports: tuple[int, ...]

    @property
    def country(self) -> str:
        return self.id.split("/")[0]

    @property
    def kind(self) -> str:
        head, _, rest = self.id.partition("/")
        return head if head == "link" else rest.split("/")[0]

    @property
    def name(self) -> str:
        return self.id.split("/")[-1]

    @property
    def link_ends(self) -> tuple[str, str]:
        """A link relay's (country whose border it reaches, country whose gateway calls through it)."""
        to, _, caller = self.name.partition("-")
        return to, caller


def link_role_id(to: str, caller: str) -> str:
    """The relay that carries ``caller``'s connections to ``to``'s border: ``link/FR-AT`` for AT -> FR."""
    return f"link/{to}-{caller}"


@dataclass(frozen=True)
class Plan:
    source: str  # "builtin:<name>" or a topology file path
    run_dir: Path
    endpoints: Endpoints
    roles: tuple[Role, ...]
    host: str = "127.0.0.1"
    data_plane: DataPlane = "h1"
    secure: bool = True  # mTLS between NCPs, tokens on every request
    link_faults: Mapping[str, FaultSpec] = field(default_factory=dict)  # link role id -> injected fault
    # "nginx": nginx on the gateways' public ports carries the images (ncp.gateway.front); the gateways' unix
    # sockets for it are in ``sockets``, chosen once where the plan is made (ncp.gateway.front.socket_dir)
    front: Front = "none"
    sockets: Path | None = None

    def role(self, role_id: str) -> Role:
        role = next((r for r in self.roles if r.id == role_id), None)
        if role is None:
            raise KeyError(f"role {role_id!r} is not in the plan; known: {[r.id for r in self.roles]}")
        return role

    def endpoints_seen_from(self, code: str) -> Endpoints:
        """What ``code``'s gateway calls: a peer's border is the relay of their link when one is emulated
        (TCP only: TLS and its name checks pass through it untouched); its own endpoints stay real."""
        relays = {
            r.link_ends[0]: r.ports[0] for r in self.roles if r.kind == "link" and r.link_ends[1] == code
        }
        return Endpoints(
            {
                peer: replace(ep, border=_via(ep.border, self.host, relays[peer])) if peer in relays else ep
                for peer, ep in self.endpoints.countries.items()
            }
        )

    @property
    def pki_dir(self) -> Path | None:
        if not self.secure:
            return None
        return self.topology.pki_dir or self.run_dir / "pki"

    @property
    def topology(self) -> Topology:
        return load_source(self.source)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "run_dir": str(self.run_dir),
            "host": self.host,
            "countries": self.endpoints.to_json(),
            "roles": {r.id: list(r.ports) for r in self.roles},
            "data_plane": self.data_plane,
            "secure": self.secure,
            "front": self.front,
            **({"sockets": str(self.sockets)} if self.sockets else {}),
            **({"link_faults": {k: str(v) for k, v in self.link_faults.items()}} if self.link_faults else {}),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Plan:
        return cls(
            source=raw["source"],
            run_dir=Path(raw["run_dir"]),
            endpoints=Endpoints.from_json(raw["countries"]),
            roles=tuple(Role(k, tuple(v)) for k, v in raw["roles"].items()),
            host=raw.get("host", "127.0.0.1"),
            data_plane=raw.get("data_plane", "h1"),
            secure=raw.get("secure", True),
            link_faults={k: parse_fault(v) for k, v in raw.get("link_faults", {}).items()},
            front=raw.get("front", "none"),
            sockets=Path(raw["sockets"]) if raw.get("sockets") else None,
        )

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2))


def load_source(source: str) -> Topology:
    return (
        builtin_topology(source.removeprefix("builtin:"))
        if source.startswith("builtin:")
        else load_topology(source)
    )


def make_plan(
    source: str,
    run_dir: Path,
    host: str = "127.0.0.1",
    data_plane: DataPlane = "h1",
    secure: bool | None = None,
    link_faults: Mapping[str, FaultSpec] | None = None,
    base_port: int | None = None,
    front: Front = "none",
) -> Plan:
    """Pick a free loopback port for every role (``base_port``: consecutive ports from it, in the order
    of the roles); ``secure`` overrides the topology's ``security``; ``link_faults`` (link role id ->
    fault) break links, unshaped ones included (they get a relay). Paths in the plan are absolute: the
    state file hands them to processes started from any folder."""
    source = source if source.startswith("builtin:") else os.path.abspath(source)
    run_dir = Path(os.path.abspath(run_dir))
    topology = load_source(source)
    ports = _Ports(host, base_port)
    secure = topology.security if secure is None else secure
    scheme = "https" if secure else "http"
    roles: list[Role] = []
    endpoints: dict[str, CountryEndpoints] = {}
    for code, country in topology.countries.items():
        if country.external:  # an NCP under test, running elsewhere: nothing to start
            endpoints[code] = _external_endpoints(country)
            continue
        gw, border = ports.take(f"{code}/gateway"), ports.take(f"{code}/gateway border")
        roles.append(Role(f"{code}/gateway", (gw, border)))
        registries, communities, xds = {}, {}, {}
        for reg in country.registries:
            port = ports.take(f"{code}/registry/{reg.id}")
            roles.append(Role(f"{code}/registry/{reg.id}", (port,)))
            if reg.kind == "xca":  # a region's Responding Gateway: NCP-A asks the Initiating Gateway
                communities[country.community_of(reg.id)] = f"http://{host}:{port}"
            else:
                registries[reg.id] = f"http://{host}:{port}/fhir"
            if reg.kind != "mhd":
                xds[reg.id] = xds_endpoints(country, reg, f"http://{host}:{port}")
        if communities:  # the country's XCA Initiating Gateway, NCP-A's one registry (docs/xca.md)
            port = ports.take(f"{code}/{XCA_ROLE}")
            roles.append(Role(f"{code}/{XCA_ROLE}", (port,)))
            registries[XCA_ROLE] = f"http://{host}:{port}/fhir"
        pacs = {}
        for p in country.pacs:
            if p.backend in ("embedded", "orthanc"):  # "orthanc": a managed Orthanc from Debian
                kind = "pacs" if p.backend == "embedded" else "orthanc"
                port = ports.take(f"{code}/{kind}/{p.id}")
                roles.append(Role(f"{code}/{kind}/{p.id}", (port,)))
                pacs[p.retrieve_location_uid] = f"http://{host}:{port}/dicom-web/"
            else:
                pacs[p.retrieve_location_uid] = _base(p.backend)
        endpoints[code] = CountryEndpoints(
            home_community_id=country.home_community_id,
            patient_id_issuer=country.patient_id_issuer,
            gateway=f"http://{host}:{gw}",
            border=f"{scheme}://{host}:{border}",
            registries=registries,
            pacs=pacs,
            public=country.public_url or "",
            communities=communities,
            xds=xds,
        )
    faults = dict(link_faults or {})
    roles += [Role(rid, (ports.take(rid),)) for rid in _relayed_links(topology, faults)]
    sockets = socket_dir(run_dir) if front == "nginx" else None
    return Plan(
        source, run_dir, Endpoints(endpoints), tuple(roles), host, data_plane, secure, faults, front, sockets
    )


class _Ports:
    """Where roles listen: any free port, or consecutive ports from ``base`` (addresses that a firewall
    rule or another team's configuration can name in advance), each checked free before anything starts."""

    def __init__(self, host: str, base: int | None) -> None:
        self.host, self.base, self.next = host, base, base

    def take(self, what: str) -> int:
        if self.next is None:
            return free_port(self.host)
        port, self.next = self.next, self.next + 1
        if not 0 < port < 65536:
            raise InvalidRequest(f"base port {self.base}: {what} would need port {port}, outside 1-65535")
        if not _bindable(self.host, port):
            raise InvalidRequest(
                f"base port {self.base}: port {port} ({what}) on {self.host} is in use; "
                "pick another base port"
            )
        return port


def _bindable(host: str, port: int) -> bool:
    # SO_REUSEADDR as uvicorn binds: a port left in TIME_WAIT by a previous run is free, a listener is not
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _relayed_links(topology: Topology, faults: Mapping[str, FaultSpec]) -> list[str]:
    """Relay role ids, one per direction of every shaped or faulted link whose caller runs here; an
    unshaped link gets none, so the default topologies pay nothing."""
    wanted = set(faults)
    for link in topology.links:
        if LinkProfile.from_topology(link).shaped:
            wanted |= {link_role_id(link.a, link.b), link_role_id(link.b, link.a)}
    relayed = []
    for rid in sorted(wanted):
        to, caller = Role(rid, ()).link_ends
        if not rid.startswith("link/") or to == caller or not {to, caller} <= set(topology.countries):
            raise ValueError(f"{rid!r} is not a link between two countries of the topology (link/FR-AT)")
        if not topology.country(caller).external:
            relayed.append(rid)
        elif rid in faults:
            raise ValueError(f"{rid!r}: {caller} runs elsewhere, its gateway cannot be sent through a relay")
    return relayed


def _external_endpoints(country: Country) -> CountryEndpoints:
    assert country.border is not None
    return CountryEndpoints(
        home_community_id=country.home_community_id,
        patient_id_issuer=country.patient_id_issuer,
        gateway=country.gateway or "",
        border=country.border,
        registries={},
        pacs={p.retrieve_location_uid: _base(p.backend) for p in country.pacs},
    )


def xds_endpoints(country: Country, reg: Registry, listener: str) -> XdsEndpoints:
    """A registry's XDS.b endpoints: a team's own from the topology, else on our XDS role's listener."""
    if reg.registry_url and reg.repository_url:
        return XdsEndpoints(reg.registry_url, reg.repository_url, country.repository_of(reg.id))
    return XdsEndpoints(*soap_endpoints(listener), country.repository_of(reg.id))


def _base(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _via(url: str, host: str, port: int) -> str:
    return urlsplit(url)._replace(netloc=f"{host}:{port}").geturl()


@dataclass(frozen=True)
class RelaySpec:
    """One direction of an emulated link: a TCP relay from its loopback port to a peer's border."""

    listen: tuple[str, int]
    target: tuple[str, int]
    profile: LinkProfile

    def argv(self) -> list[str]:
        """The arguments of ``python -m ncp.link.relay`` that run this relay."""
        p = self.profile
        args = ["--listen", "{}:{}".format(*self.listen), "--target", "{}:{}".format(*self.target)]
        args += ["--rtt-ms", str(p.rtt_ms), "--bandwidth-mbit", str(p.bandwidth_mbit)]
        args += ["--jitter-ms", str(p.jitter_ms)]
        return args + (["--fault", str(p.fault)] if p.fault else [])


def build_relay(plan: Plan, role_id: str) -> RelaySpec:
    """The relay of a ``link/...`` role: the topology's link shape plus the plan's fault for it."""
    role = plan.role(role_id)
    to, caller = role.link_ends
    link = plan.topology.link(to, caller)
    fault = plan.link_faults.get(role_id)
    profile = LinkProfile.from_topology(link, fault) if link else LinkProfile(fault=fault)
    border = urlsplit(plan.endpoints[to].border)
    port = border.port or (443 if border.scheme == "https" else 80)
    return RelaySpec((plan.host, role.ports[0]), (border.hostname or plan.host, port), profile)


# A client pools its connections (h1 and aiohttp 15 s, httpx 5 s). A listener that closes an idle one no later
# than the client does (uvicorn's default is 5 s) races a client reusing it: the request crosses the FIN and
# is lost (seen as 502s between gateways over an emulated link, and as consumer ReadErrors in the soak).
# Both gateway listeners therefore keep idle connections longer than any client here pools them.
KEEP_ALIVE_S = 30
XCA_ROLE = "xca"  # role ``<CC>/xca``, the Initiating Gateway of an architecture-B country on XCA


def build_role(plan: Plan, role_id: str) -> list[tuple[Any, int, dict[str, Any]]]:
    """The ASGI apps of one role, each with its port and uvicorn options (TLS for a secure border)."""
    role = plan.role(role_id)
    if role.kind == "link":
        raise KeyError(f"{role_id!r} is a link relay, not an app: see build_relay")
    topology = plan.topology
    country = topology.country(role.country)
    state_dir = plan.run_dir / role.country
    state_dir.mkdir(parents=True, exist_ok=True)
    if role.kind == "gateway":
        settings = GatewaySettings(
            topology,
            role.country,
            plan.endpoints_seen_from(role.country),
            data_plane=plan.data_plane,
            pki_dir=plan.pki_dir,
            audit_db=state_dir / "audit.sqlite",
            front_sockets=plan.sockets,
        )
        tls = FederationPki.load(plan.pki_dir).uvicorn_options(role.country) if plan.pki_dir else {}
        # the clinician's portal and WIA facade share the consumer-facing listener (/portal, /wia)
        portal = PortalSettings.from_topology(topology, role.country, plan.endpoints[role.country].gateway)
        proxies = {"proxy_headers": True, "forwarded_allow_ips": list(country.trusted_proxies)}
        consumers = {"timeout_keep_alive": KEEP_ALIVE_S, **(proxies if country.trusted_proxies else {})}
        gateway = with_portal(exact(create_gateway_app(settings)), exact(create_portal_app(portal)))
        border = exact(create_border_app(settings))
        sockets = plan.sockets
        if sockets is not None:  # nginx holds the public ports and the border's TLS; only it reaches these
            behind = {"proxy_headers": True, "forwarded_allow_ips": "*", "timeout_keep_alive": KEEP_ALIVE_S}
            listeners = ((gateway, role.ports[0], "gateway"), (border, role.ports[1], "border"))
            return [
                (app, port, {**behind, "uds": str(socket_path(sockets, role.country, listener, "app"))})
                for app, port, listener in listeners
            ]
        return [
            (gateway, role.ports[0], consumers),
            (border, role.ports[1], {**tls, "timeout_keep_alive": KEEP_ALIVE_S}),
        ]
    if role.kind == XCA_ROLE:
        initiating = _initiating_settings(plan, country)
        rad75 = {c.home_community_id: c.base + RESPONDING_PATH for c in initiating.communities}
        routes = initiating_routes(country.home_community_id, rad75)  # XCA-I: RAD-69 in, RAD-75 out
        return [(exact(create_initiating_app(initiating, extra_routes=routes)), role.ports[0], {})]
    if role.kind == "registry" and _registry(country, role.name).kind == "xca":
        xds, _ = _xds_settings(plan, country, role, state_dir)
        sources = _region_sources(plan, country, role.name)
        routes = responding_routes(xds.home_community_id, sources, guarded=True)  # RAD-75: the region's XUA
        return [(exact(create_responding_app(xds, extra_routes=routes)), role.ports[0], {})]
    if role.kind == "registry" and _registry(country, role.name).external:
        facade = create_mhd_facade_app(_bridge_settings(plan, role), verify=_registry_tls(plan, country))
        return [(exact(facade), role.ports[0], {})]
    if role.kind == "registry" and _registry(country, role.name).kind == "xds":
        xds_role = create_xds_mhd_app(*_xds_settings(plan, country, role, state_dir))
        return [(exact(xds_role), role.ports[0], {})]
    if role.kind == "registry":
        registry = RegistrySettings(
            db_path=state_dir / f"registry-{role.name}.sqlite",
            public_base_url=plan.endpoints[role.country].registries[role.name],
            home_community_id=country.home_community_id,
        )
        return [(exact(create_registry_app(registry)), role.ports[0], {})]
    if role.kind == "pacs":
        rluid = next(p.retrieve_location_uid for p in country.pacs if p.id == role.name)
        pacs = PacsSettings(
            storage_dir=state_dir / f"pacs-{role.name}",
            agent=f"pacs-{role.country.lower()}-{role.name}",
            partial_as_ok=country.faults.partial_as_ok,
            # XDS-I.b RAD-69 (ncp.pacs.rad69): the source's RepositoryUniqueId is its Retrieve Location UID
            retrieve_location_uid=rluid,
            home_community_id=country.home_of(country.registry_of(rluid)),  # an xca region's own
        )
        return [(exact(create_pacs_app(pacs)), role.ports[0], {})]
    raise KeyError(f"unknown role kind {role.kind!r}")


def exact(app: Starlette) -> Starlette:
    """No redirect to the path without (or with) its trailing slash: a path a role does not serve is a
    404 in the role's own error format, never a 307 to another resource (a hostile ``/`` segment, even
    percent-encoded, once earned one at the gateway)."""
    app.router.redirect_slashes = False
    return app


def _registry(country: Country, reg_id: str) -> Registry:
    return next(r for r in country.registries if r.id == reg_id)


def _xds_settings(
    plan: Plan, country: Country, role: Role, state_dir: Path
) -> tuple[XdsSettings, BridgeSettings]:
    """An XDS affinity domain per registry: the country's patient issuer, its homeCommunityId (an xca
    region: its own), and a repository OID under it (``<hcid>.10.<n>``, n-th registry of the country)."""
    xds = XdsSettings(
        db_path=state_dir / f"xds-{role.name}.sqlite",
        home_community_id=country.home_of(role.name),
        repository_unique_id=country.repository_of(role.name),
        patient_id_domain=country.patient_id_issuer,
        **(_xua_settings(plan, country, role, state_dir) if plan.pki_dir else {}),
    )
    return xds, _bridge_settings(plan, role)


def _bridge_settings(plan: Plan, role: Role) -> BridgeSettings:
    """The MHD facade of an xds registry (an xca region's has none: its base is the listener's ``/fhir``),
    calling the XDS.b endpoints the plan names, ours or a team's own."""
    endpoints = plan.endpoints[role.country]
    xds = endpoints.xds[role.name]
    fhir_base = endpoints.registries.get(role.name, f"http://{plan.host}:{role.ports[0]}/fhir")
    return BridgeSettings(fhir_base, xds.registry, xds.repository)


def _registry_tls(plan: Plan, country: Country) -> ssl.SSLContext | bool:
    """A team's own https registry is trusted as an external NCP is: the federation CA of the topology's
    ``pki_dir``, the country's NCP client certificate (mutual TLS); plain http needs neither."""
    pki_dir = plan.topology.pki_dir
    return FederationPki.load(pki_dir).client_ssl_context(country.code) if pki_dir else True


def _xua_settings(plan: Plan, country: Country, role: Role, state_dir: Path) -> dict[str, Any]:
    """Security on: the XDS role (an xca region: also its Responding Gateway, ITI-38/39 and RAD-75) requires
    XUA (ITI-40) signed by its country's NCP (docs/xua.md)."""
    assert plan.pki_dir is not None
    certificate = FederationPki.load(plan.pki_dir).client_credentials(country.code).cert
    return {
        "xua_trust": ((ncp_id(country.code), certificate),),
        "xua_audience": national_audience(country.code),
        "xua_system_submissions": True,  # the publisher seeds ITI-41 as the national Document Source
        "audit_db": state_dir / f"xds-{role.name}-audit.sqlite",
    }


def _region_sources(plan: Plan, country: Country, region: str) -> dict[str, str]:
    """XCA-I RAD-75 -> RAD-69: the region's imaging document sources (its embedded PACS), each by its
    RepositoryUniqueId, which is its Retrieve Location UID (docs/xdsi.md)."""
    bases = plan.endpoints[country.code].pacs
    return {
        p.retrieve_location_uid: bases[p.retrieve_location_uid].removesuffix("/dicom-web/") + RAD69_PATH
        for p in country.pacs
        if p.backend == "embedded" and country.registry_of(p.retrieve_location_uid) == region
    }


def _initiating_settings(plan: Plan, country: Country) -> InitiatingSettings:
    """The Initiating Gateway knows each region by its homeCommunityId and listener (ITI TF-2b 3.38.4.1.1:
    the community -> Responding Gateway table is local configuration)."""
    endpoints = plan.endpoints[country.code]
    communities = tuple(
        Community(r.id, country.community_of(r.id), endpoints.communities[country.community_of(r.id)])
        for r in country.registries
    )
    return InitiatingSettings(endpoints.registries[XCA_ROLE], country.home_community_id, communities)
