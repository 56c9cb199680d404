"""Container deployment: a plan whose roles are compose services, and the compose file for it.

Each role runs in its own container with the image's entrypoint ``xcwado serve-role``, the code
path ``xcwado up`` uses for its processes. The plan is mounted read-only; so is the topology.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ncp.app import Plan, Role, load_source
from ncp.errors import InvalidTopology
from ncp.link import LinkProfile
from ncp.topology import CountryEndpoints, Endpoints

__all__ = ["PORTS", "compose_document", "compose_plan", "to_yaml"]

PORTS = {"gateway": 8080, "border": 8443, "registry": 8081, "pacs": 8042}
_IMAGE = "xcwado-testbed:latest"
TOPOLOGY_IN_CONTAINER = "/etc/xcwado/topology.toml"
_ORTHANC_IMAGE = "orthancteam/orthanc:24.1.2"


def _service(role_id: str) -> str:
    return role_id.lower().replace("/", "-")


def compose_plan(source: str) -> Plan:
    """Like :func:`ncp.app.make_plan`, with service names for hosts and fixed container ports."""
    topology = load_source(source)
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
        registries = {}
        for reg in country.registries:
            role = Role(f"{code}/registry/{reg.id}", (PORTS["registry"],))
            roles.append(role)
            registries[reg.id] = f"http://{_service(role.id)}:{PORTS['registry']}/fhir"
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
            border=f"http://{gw}:{PORTS['border']}",
            registries=registries,
            pacs=pacs,
        )
    # In the containers the topology is the mounted file, so editing it needs no rebuild.
    return Plan(
        TOPOLOGY_IN_CONTAINER, Path("/var/lib/xcwado"), Endpoints(endpoints), tuple(roles), host="0.0.0.0"
    )


def compose_document(plan: Plan, source: str, topology_file: str) -> dict[str, Any]:
    """The compose file: one service per role, Orthanc for ``orthanc`` PACS, Locust under ``load``."""
    topology = load_source(source)
    services: dict[str, Any] = {}
    volumes = [
        "./plan.json:/etc/xcwado/plan.json:ro",
        f"{topology_file}:{TOPOLOGY_IN_CONTAINER}:ro",
        "state:/var/lib/xcwado",
    ]
    for role in plan.roles:
        port = role.ports[0]
        services[_service(role.id)] = {
            "image": _IMAGE,
            "build": {"context": "..", "dockerfile": "docker/Dockerfile"},
            "command": ["serve-role", "--plan", "/etc/xcwado/plan.json", "--role", role.id],
            "volumes": volumes,
            "environment": {"XCWADO_LOG_LEVEL": "${XCWADO_LOG_LEVEL:-WARNING}"},
            "depends_on": {"pki": {"condition": "service_completed_successfully"}},
            "healthcheck": {
                "test": [
                    "CMD",
                    "python",
                    "-c",
                    f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/health')",
                ],
                "interval": "5s",
                "timeout": "3s",
                "retries": 12,
            },
        }
    for code, country in topology.countries.items():
        for p in country.pacs:
            if p.backend != "embedded":
                services[_service(f"{code}/orthanc/{p.id}")] = {
                    "image": _ORTHANC_IMAGE,
                    "environment": {
                        "ORTHANC__HTTP_PORT": str(PORTS["pacs"]),
                        "ORTHANC__HTTP_COMPRESSION_ENABLED": "false",
                        "ORTHANC__DICOM_SERVER_ENABLED": "false",
                        "ORTHANC__AUTHENTICATION_ENABLED": "false",
                        "DICOM_WEB_PLUGIN_ENABLED": "true",
                    },
                }
        services[_service(f"{code}/gateway")]["ports"] = [
            f"127.0.0.1:{_host_port(code, plan)}:{PORTS['gateway']}"
        ]
    services["pki"] = {
        "image": _IMAGE,
        "build": {"context": "..", "dockerfile": "docker/Dockerfile"},
        "command": ["pki", "--plan", "/etc/xcwado/plan.json"],
        "volumes": volumes,
    }
    services["seed"] = {
        "image": _IMAGE,
        "command": ["seed", "--plan", "/etc/xcwado/plan.json", "--state", "/var/lib/xcwado/state.json"],
        "volumes": volumes,
        "depends_on": {
            name: {"condition": "service_healthy"}
            for name in services
            if name != "seed" and "orthanc" not in name
        },
    }
    services["locust-master"] = {
        "image": _IMAGE,
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
        "image": _IMAGE,
        "profiles": ["load"],
        "entrypoint": ["locust"],
        "command": ["-f", "/app/loadtests/locustfile.py", "--worker", "--master-host", "locust-master"],
        "environment": {"XCWADO_STATE": "/var/lib/xcwado/state.json"},
        "volumes": ["state:/var/lib/xcwado"],
        "deploy": {"replicas": 2},
        "depends_on": ["locust-master"],
    }
    return {"services": services, "volumes": {"state": {}}}


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
