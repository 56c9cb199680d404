"""Container deployment: the compose files, and what each role's container runs.

Each role runs in its own container with the image's entrypoint ``xcwado serve-role``, the code
path ``xcwado up`` uses for its processes. Two deployments:

* **bridge** (``docker/compose.yaml``, :func:`compose_plan`, :func:`compose_document`): one network
  namespace per container, services reach each other by name on fixed container ports; the plan and the
  topology are mounted read-only, the PKI and the state file live in the ``state`` volume.
* **host** (:func:`host_plan`, :func:`role_containers`, :func:`host_compose_document`): every container
  shares the host's network and binds 127.0.0.1 on the plan's ports (no bridge, no traffic off loopback);
  the run directory and the topology file are mounted at their host paths, so the state file, the PKI
  and the logs it names are valid on the host too. ``xcwado up --runtime docker`` (``ncp.containers``)
  starts the same containers through the Docker SDK.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ncp.app import XCA_ROLE, Plan, Role, build_relay, load_source, make_plan, xds_endpoints
from ncp.errors import InvalidTopology
from ncp.gateway.front import Front, front_root
from ncp.link import LinkProfile
from ncp.topology import CountryEndpoints, Endpoints

__all__ = [
    "IMAGE",
    "ORTHANC_IMAGE",
    "PORTS",
    "ContainerSpec",
    "absolute_source",
    "compose_document",
    "compose_plan",
    "host_compose_document",
    "host_mounts",
    "host_plan",
    "load_plan",
    "ports_taken",
    "role_containers",
    "to_yaml",
    "write_host_compose",
]

PORTS = {"gateway": 8080, "border": 8443, "registry": 8081, "pacs": 8042}
IMAGE = "xcwado-testbed:latest"
ORTHANC_IMAGE = "xcwado-orthanc:latest"  # Debian's Orthanc + DICOMweb plugin (docker/orthanc.Dockerfile)
TOPOLOGY_IN_CONTAINER = "/etc/xcwado/topology.toml"
# The image's own user (docker/Dockerfile): containers run as it when the host user is root.
CONTAINER_UID = 10001
_ENV = {"HOME": "/tmp", "PYTHONUNBUFFERED": "1"}  # HOME: the host's uid may have no home in the image


def _service(role_id: str) -> str:
    return role_id.lower().replace("/", "-")


def compose_plan(source: str) -> Plan:
    """Like :func:`ncp.app.make_plan`, with service names for hosts and fixed container ports."""
    topology = load_source(source)
    scheme = "https" if topology.security else "http"
    shaped = [link for link in topology.links if LinkProfile.from_topology(link).shaped]
    if shaped:
        raise InvalidTopology(
            f"links between {shaped[0].a} and {shaped[0].b}: emulated links run with `xcwado up`; in Docker, "
            "leave them unshaped and shape the containers' network (tc netem) instead"
        )
    roles: list[Role] = []
    endpoints: dict[str, CountryEndpoints] = {}
    for code, country in topology.countries.items():
        gw = _service(f"{code}/gateway")
        roles.append(Role(f"{code}/gateway", (PORTS["gateway"], PORTS["border"])))
        registries, communities, xds = {}, {}, {}
        for reg in country.registries:
            role = Role(f"{code}/registry/{reg.id}", (PORTS["registry"],))
            roles.append(role)
            if reg.kind == "xca":  # as make_plan: NCP-A asks the Initiating Gateway, not the regions
                communities[country.community_of(reg.id)] = f"http://{_service(role.id)}:{PORTS['registry']}"
            else:
                registries[reg.id] = f"http://{_service(role.id)}:{PORTS['registry']}/fhir"
            if reg.kind != "mhd":
                xds[reg.id] = xds_endpoints(country, reg, f"http://{_service(role.id)}:{PORTS['registry']}")
        if communities:
            role = Role(f"{code}/{XCA_ROLE}", (PORTS["registry"],))
            roles.append(role)
            registries[XCA_ROLE] = f"http://{_service(role.id)}:{PORTS['registry']}/fhir"
        pacs = {}
        for p in country.pacs:
            kind = "pacs" if p.backend == "embedded" else "orthanc"
            role = Role(f"{code}/{kind}/{p.id}", (PORTS["pacs"],))
            if kind == "pacs":
                roles.append(role)
            pacs[p.retrieve_location_uid] = f"http://{_service(role.id)}:{PORTS['pacs']}/dicom-web/"
        endpoints[code] = CountryEndpoints(
            country.home_community_id,
            country.patient_id_issuer,
            gateway=f"http://{gw}:{PORTS['gateway']}",
            border=f"{scheme}://{gw}:{PORTS['border']}",
            registries=registries,
            pacs=pacs,
            communities=communities,
            xds=xds,
        )
    # In the containers the topology is the mounted file, so editing it needs no rebuild.
    return Plan(
        TOPOLOGY_IN_CONTAINER,
        Path("/var/lib/xcwado"),
        Endpoints(endpoints),
        tuple(roles),
        host="0.0.0.0",
        secure=topology.security,
    )


def compose_document(plan: Plan, source: str, topology_file: str) -> dict[str, Any]:
    """The bridge compose file: one service per role, Orthanc for ``orthanc`` PACS, Locust under ``load``.

    The images come from ``make docker`` (its build context is staged, not the checkout)."""
    topology = load_source(source)
    services: dict[str, Any] = {}
    volumes = [
        "./plan.json:/etc/xcwado/plan.json:ro",
        f"{topology_file}:{TOPOLOGY_IN_CONTAINER}:ro",
        "state:/var/lib/xcwado",
    ]
    for role in plan.roles:
        services[_service(role.id)] = {
            "image": IMAGE,
            "init": True,
            "command": ["serve-role", "--plan", "/etc/xcwado/plan.json", "--role", role.id],
            "volumes": volumes,
            "environment": {
                "XCWADO_LOG_LEVEL": "${XCWADO_LOG_LEVEL:-WARNING}",
                "XCWADO_HEALTH_URL": f"http://127.0.0.1:{role.ports[0]}/health",
            },
            "depends_on": {"pki": {"condition": "service_completed_successfully"}},
        }
    for code, country in topology.countries.items():
        for p in country.pacs:
            if p.backend != "embedded":
                name = _service(f"{code}/orthanc/{p.id}")
                services[name] = {
                    "image": ORTHANC_IMAGE,
                    "init": True,
                    "volumes": ["state:/var/lib/xcwado"],
                    "environment": {
                        "XCWADO_ORTHANC_PORT": str(PORTS["pacs"]),
                        "XCWADO_ORTHANC_STORAGE": f"/var/lib/xcwado/{code}/orthanc-{p.id}",
                        "XCWADO_ORTHANC_HOST": f"{name}:{PORTS['pacs']}",
                        "XCWADO_ORTHANC_REMOTE": "true",
                        "XCWADO_HEALTH_URL": f"http://127.0.0.1:{PORTS['pacs']}/system",
                    },
                }
        services[_service(f"{code}/gateway")]["ports"] = [
            f"127.0.0.1:{_host_port(code, plan)}:{PORTS['gateway']}"
        ]
    services["pki"] = {
        "image": IMAGE,
        "command": ["pki", "--plan", "/etc/xcwado/plan.json"],
        "volumes": volumes,
    }
    services["seed"] = {
        "image": IMAGE,
        "command": ["seed", "--plan", "/etc/xcwado/plan.json", "--state", "/var/lib/xcwado/state.json"],
        "volumes": volumes,
        "depends_on": {name: {"condition": "service_healthy"} for name in services if name != "pki"},
    }
    services["locust-master"] = {
        "image": IMAGE,
        "profiles": ["load"],
        "entrypoint": ["locust"],
        "command": [
            "-f",
            "/app/loadtests/locustfile.py",
            "--master",
            "--headless",
            "-u",
            "16",
            "-r",
            "4",
            "-t",
            "2m",
            "--expect-workers",
            "2",
            "--csv",
            "/var/lib/xcwado/load",
        ],
        "environment": {"XCWADO_STATE": "/var/lib/xcwado/state.json"},
        "volumes": ["state:/var/lib/xcwado"],
        "depends_on": {"seed": {"condition": "service_completed_successfully"}},
    }
    services["locust-worker"] = {
        "image": IMAGE,
        "profiles": ["load"],
        "entrypoint": ["locust"],
        "command": ["-f", "/app/loadtests/locustfile.py", "--worker", "--master-host", "locust-master"],
        "environment": {"XCWADO_STATE": "/var/lib/xcwado/state.json"},
        "volumes": ["state:/var/lib/xcwado"],
        "deploy": {"replicas": 2},
        "depends_on": ["locust-master"],
    }
    return {"services": services, "volumes": {"state": {}}}


# -- host networking ------------------------------------------------------------------------------------


def host_plan(source: str, run_dir: Path, *, base_port: int | None = None, front: Front = "none") -> Plan:
    """A plan for containers on the host's network: :func:`ncp.app.make_plan`'s free loopback ports, with the
    run directory and a topology file at absolute paths (the containers mount them at the same paths)."""
    return make_plan(absolute_source(source), run_dir.resolve(), base_port=base_port, front=front)


def absolute_source(source: str) -> str:
    """A topology file as an absolute path (containers mount it at that path); a builtin name unchanged."""
    if source.startswith("builtin:"):
        return source
    path = Path(source).resolve()
    if not path.is_file():
        raise InvalidTopology(f"topology file {source} does not exist")
    return str(path)


@dataclass(frozen=True)
class ContainerSpec:
    """One container of a host-network deployment, as compose and the Docker SDK both start it."""

    name: str  # the compose service; the SDK prefixes it with the run's name
    role: str  # the plan's role id, or "pki" / "seed" for the one-shots
    image: str
    command: list[str]
    entrypoint: list[str] | None = None
    environment: dict[str, str] = field(default_factory=dict)
    mounts: dict[str, str] = field(default_factory=dict)  # host path -> "rw" | "ro", mounted at that path
    health_url: str | None = None
    ports: tuple[int, ...] = ()


def role_containers(
    plan: Plan,
    *,
    image: str = IMAGE,
    orthanc_image: str = ORTHANC_IMAGE,
    shim: Path | None = None,
) -> list[ContainerSpec]:
    """Every role of ``plan`` as a container on the host's network (links and Orthanc included).

    ``shim`` is the loopback ``bind()`` shim for Orthanc (:func:`ncp.orthanc.build_loopback_shim`), required
    when the plan has an Orthanc role: Orthanc 1.10 binds every address otherwise."""
    run_dir = plan.run_dir
    plan_file = str(run_dir / "plan.json")
    mounts = host_mounts(plan)
    env = dict(_ENV)
    specs = []
    for role in plan.roles:
        name = _service(role.id)
        if role.kind == "link":
            relay = build_relay(plan, role.id)
            entrypoint = ["python3", "-m", "ncp.link.relay"]
            specs.append(
                ContainerSpec(name, role.id, image, relay.argv(), entrypoint, env, mounts, ports=role.ports)
            )
        elif role.kind == "orthanc":
            if shim is None:
                raise InvalidTopology(f"{role.id}: Orthanc on the host's network needs the loopback shim")
            port = role.ports[0]
            orthanc_env = {
                **env,
                "XCWADO_ORTHANC_PORT": str(port),
                "XCWADO_ORTHANC_STORAGE": str(run_dir / role.country / f"orthanc-{role.name}"),
                "XCWADO_ORTHANC_HOST": f"{plan.host}:{port}",
                "XCWADO_ORTHANC_NAME": f"xcwado-{role.country.lower()}-{role.name}",
                "LD_PRELOAD": str(shim),
            }
            health = f"http://{plan.host}:{port}/system"
            specs.append(
                ContainerSpec(
                    name,
                    role.id,
                    orthanc_image,
                    [],
                    environment={**orthanc_env, "XCWADO_HEALTH_URL": health},
                    mounts={**mounts, str(shim): "ro"},
                    health_url=health,
                    ports=role.ports,
                )
            )
        else:
            health = f"http://{plan.host}:{role.ports[0]}/health"
            command = ["serve-role", "--plan", plan_file, "--role", role.id]
            spec = ContainerSpec(
                name,
                role.id,
                image,
                command,
                environment={**env, "XCWADO_HEALTH_URL": health},
                mounts=mounts,
                health_url=health,
                ports=role.ports,
            )
            specs += _fronted(plan, role, spec) if role.kind == "gateway" and plan.sockets else [spec]
    return specs


def _fronted(plan: Plan, role: Role, gateway: ContainerSpec) -> list[ContainerSpec]:
    """A gateway's container, and its nginx front's beside it (``xcwado serve-role --front``: it writes its
    configuration from the plan, then becomes nginx). The gateway writes its sockets into the plan's sockets
    folder; nginx only connects to them, which works on a read-only mount, and sees the run folder read-only
    but for its own folder (ncp.gateway.front.front_root)."""
    assert plan.sockets is not None
    sockets = str(plan.sockets)
    root = str(front_root(plan.run_dir, role.country))
    front = replace(
        gateway,
        name=f"{gateway.name}-front",
        role=f"{gateway.role}/front",
        command=[*gateway.command, "--front"],
        mounts={**{path: "ro" for path in gateway.mounts}, root: "rw", sockets: "ro"},
    )
    return [replace(gateway, mounts={**gateway.mounts, sockets: "rw"}), front]


def host_mounts(plan: Plan) -> dict[str, str]:
    """Host paths a container of the plan mounts at the same path: the run directory, the topology file and a
    PKI folder the topology keeps elsewhere."""
    mounts = {str(plan.run_dir): "rw"}
    if not plan.source.startswith("builtin:"):
        mounts[plan.source] = "ro"
    if plan.pki_dir is not None and not plan.pki_dir.resolve().is_relative_to(plan.run_dir):
        mounts[str(plan.pki_dir.resolve())] = "rw"
    return mounts


def _one_shots(plan: Plan, image: str) -> tuple[ContainerSpec, ContainerSpec]:
    plan_file = str(plan.run_dir / "plan.json")
    state = str(plan.run_dir / "state.json")
    mounts = host_mounts(plan)
    env = dict(_ENV)
    seed = ["seed", "--plan", plan_file, "--state", state]
    return (
        ContainerSpec("pki", "pki", image, ["pki", "--plan", plan_file], None, env, mounts),
        ContainerSpec("seed", "seed", image, seed, None, env, mounts),
    )


def _volumes(mounts: dict[str, str]) -> list[str]:
    return [f"{path}:{path}:{mode}" for path, mode in mounts.items()]


def host_compose_document(
    plan: Plan,
    *,
    user: str,
    image: str = IMAGE,
    orthanc_image: str = ORTHANC_IMAGE,
    shim: Path | None = None,
) -> dict[str, Any]:
    """The host-network compose file: the ``pki`` one-shot, every role, then ``seed``, which writes
    ``<run_dir>/state.json`` once every role is healthy. No network, no volume, no published port."""
    pki, seed = _one_shots(plan, image)
    services: dict[str, Any] = {}

    def service(spec: ContainerSpec) -> dict[str, Any]:
        body: dict[str, Any] = {"image": spec.image, "network_mode": "host", "init": True, "user": user}
        body["labels"] = {"org.xcwado.run": str(plan.run_dir), "org.xcwado.role": spec.role}
        if spec.entrypoint:
            body["entrypoint"] = spec.entrypoint
        if spec.command:
            body["command"] = spec.command
        body["volumes"] = _volumes(spec.mounts)
        body["environment"] = spec.environment
        return body

    services["pki"] = service(pki)
    for spec in role_containers(plan, image=image, orthanc_image=orthanc_image, shim=shim):
        services[spec.name] = {
            **service(spec),
            "depends_on": {"pki": {"condition": "service_completed_successfully"}},
        }
    services["seed"] = {
        **service(seed),
        "depends_on": {
            name: {"condition": "service_healthy" if name != "pki" else "service_completed_successfully"}
            for name in services
        },
    }
    return {"services": services}


def write_host_compose(
    plan: Plan,
    *,
    user: str,
    image: str = IMAGE,
    orthanc_image: str = ORTHANC_IMAGE,
    shim: Path | None = None,
) -> Path:
    """Write ``compose.yaml`` and ``plan.json`` of a host-network deployment into the plan's run directory;
    returns the compose file (``ncp.containers.write_compose`` picks the user and builds the shim)."""
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    plan.write(plan.run_dir / "plan.json")
    document = host_compose_document(plan, user=user, image=image, orthanc_image=orthanc_image, shim=shim)
    compose = plan.run_dir / "compose.yaml"
    header = "# Generated for this run directory (host networking, 127.0.0.1 only); regenerate, don't edit.\n"
    compose.write_text(header + to_yaml(document) + "\n")
    return compose


def ports_taken(plan: Plan) -> list[tuple[str, int]]:
    """The plan's (role, port) pairs that something on the host already listens on."""
    taken = []
    for role in plan.roles:
        for port in role.ports:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((plan.host, port))
                except OSError:
                    taken.append((role.id, port))
    return taken


def load_plan(run_dir: Path) -> Plan:
    """The plan written into a run directory."""
    return Plan.from_json(json.loads((run_dir / "plan.json").read_text()))


def _host_port(code: str, plan: Plan) -> int:
    return 18080 + sorted(plan.endpoints.countries).index(code)


def to_yaml(value: Any, indent: int = 0) -> str:
    """A small YAML emitter for compose documents (mappings, lists, scalars as JSON strings)."""
    import json

    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        lines = []
        for k, v in value.items():
            if isinstance(v, dict | list) and v:
                lines.append(f"{pad}{k}:\n{to_yaml(v, indent + 1)}")
            else:
                lines.append(f"{pad}{k}: {to_yaml(v, 0)}")
        return "\n".join(lines)
    if isinstance(value, list):
        if not value:
            return "[]"
        return "\n".join(
            f"{pad}- {json.dumps(v) if not isinstance(v, dict | list) else to_yaml(v, indent + 1).lstrip()}"
            for v in value
        )
    return json.dumps(value)
