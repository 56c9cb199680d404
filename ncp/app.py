"""The composition root: the only module that wires the role packages together.

A :class:`Plan` says where every role of a topology listens. ``build_role`` turns one role of the
plan into ASGI apps with their settings; :mod:`ncp.federation` runs them as processes or threads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ncp.gateway.app import create_border_app, create_gateway_app
from ncp.gateway.settings import GatewaySettings
from ncp.pacs.app import PacsSettings, create_pacs_app
from ncp.registry.app import RegistrySettings, create_registry_app
from ncp.security.pki import FederationPki
from ncp.server import free_port
from ncp.topology import Country, CountryEndpoints, Endpoints, Topology, builtin_topology, load_topology

__all__ = ["Plan", "Role", "build_role", "load_source", "make_plan"]


@dataclass(frozen=True)
class Role:
    """One server process: ``FR/gateway`` (two listeners), ``FR/registry/national``, ``FR/pacs/pacs-1``."""

    id: str
    ports: tuple[int, ...]

    @property
    def country(self) -> str:
        return self.id.split("/")[0]

    @property
    def kind(self) -> str:
        return self.id.split("/")[1]

    @property
    def name(self) -> str:
        return self.id.split("/")[-1]


@dataclass(frozen=True)
class Plan:
    source: str  # "builtin:<name>" or a topology file path
    run_dir: Path
    endpoints: Endpoints
    roles: tuple[Role, ...]
    host: str = "127.0.0.1"
    data_plane: Literal["aiohttp", "httpx"] = "aiohttp"
    secure: bool = True  # mTLS between NCPs, tokens on every request

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
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Plan:
        return cls(
            source=raw["source"],
            run_dir=Path(raw["run_dir"]),
            endpoints=Endpoints.from_json(raw["countries"]),
            roles=tuple(Role(k, tuple(v)) for k, v in raw["roles"].items()),
            host=raw.get("host", "127.0.0.1"),
            data_plane=raw.get("data_plane", "aiohttp"),
            secure=raw.get("secure", True),
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
    data_plane: Literal["aiohttp", "httpx"] = "aiohttp",
    secure: bool | None = None,
) -> Plan:
    """Pick a free loopback port for every role; ``secure`` overrides the topology's ``security``."""
    topology = load_source(source)
    secure = topology.security if secure is None else secure
    scheme = "https" if secure else "http"
    roles: list[Role] = []
    endpoints: dict[str, CountryEndpoints] = {}
    for code, country in topology.countries.items():
        if country.external:  # an NCP under test, running elsewhere: nothing to start
            endpoints[code] = _external_endpoints(country)
            continue
        gw, border = free_port(host), free_port(host)
        roles.append(Role(f"{code}/gateway", (gw, border)))
        registries = {}
        for reg in country.registries:
            port = free_port(host)
            roles.append(Role(f"{code}/registry/{reg.id}", (port,)))
            registries[reg.id] = f"http://{host}:{port}/fhir"
        pacs = {}
        for p in country.pacs:
            if p.backend in ("embedded", "orthanc"):  # "orthanc": a managed Orthanc from Debian
                port = free_port(host)
                kind = "pacs" if p.backend == "embedded" else "orthanc"
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
        )
    return Plan(source, run_dir, Endpoints(endpoints), tuple(roles), host, data_plane, secure)


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


def _base(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def build_role(plan: Plan, role_id: str) -> list[tuple[Any, int, dict[str, Any]]]:
    """The ASGI apps of one role, each with its port and uvicorn options (TLS for a secure border)."""
    role = next((r for r in plan.roles if r.id == role_id), None)
    if role is None:
        raise KeyError(f"role {role_id!r} is not in the plan; known: {[r.id for r in plan.roles]}")
    topology = plan.topology
    country = topology.country(role.country)
    state_dir = plan.run_dir / role.country
    state_dir.mkdir(parents=True, exist_ok=True)
    if role.kind == "gateway":
        settings = GatewaySettings(
            topology,
            role.country,
            plan.endpoints,
            data_plane=plan.data_plane,
            pki_dir=plan.pki_dir,
            audit_db=state_dir / "audit.sqlite",
        )
        tls = FederationPki.load(plan.pki_dir).uvicorn_options(role.country) if plan.pki_dir else {}
        return [
            (create_gateway_app(settings), role.ports[0], {}),
            (create_border_app(settings), role.ports[1], tls),
        ]
    if role.kind == "registry":
        registry = RegistrySettings(
            db_path=state_dir / f"registry-{role.name}.sqlite",
            public_base_url=plan.endpoints[role.country].registries[role.name],
            home_community_id=country.home_community_id,
        )
        return [(create_registry_app(registry), role.ports[0], {})]
    if role.kind == "pacs":
        pacs = PacsSettings(
            storage_dir=state_dir / f"pacs-{role.name}",
            agent=f"pacs-{role.country.lower()}-{role.name}",
            partial_as_ok=country.faults.partial_as_ok,
        )
        return [(create_pacs_app(pacs), role.ports[0], {})]
    raise KeyError(f"unknown role kind {role.kind!r}")
