"""A team's own XDS.b registry + repository behind our NCP-A, declared by URL (docs/xds.md, "Your own XDS.b
registry behind our NCP-A").

An independent XDS.b role plays the team's registry: its own store, its own TLS listener with a
certificate of the shared test PKI, and XUA required with France's NCP certificate as the only trust anchor.
The federation's topology declares France's registry as ``{ kind = "xds", url = "https://..." }``: France's
registry role is then the MHD facade alone, calling that registry over mutual TLS; Austria's consumers find
France's documents through both gateways, and every SOAP message the registry took carried a valid assertion.
"""

from __future__ import annotations

import asyncio
import json
import tomllib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree
from xds_support import assert_valid

from ncp.consumer.client import ImagingConsumer
from ncp.errors import InvalidTopology
from ncp.federation import Federation
from ncp.model import StudyRecord
from ncp.publish import Published, seed_federation
from ncp.registry.xds import iti18, iti41, iti43
from ncp.registry.xds.app import create_xds_app
from ncp.registry.xds.settings import XdsSettings
from ncp.scenario.runner import load_scenarios, run_scenarios
from ncp.security.audit import AuditRecord, AuditStore
from ncp.security.pki import FederationPki
from ncp.security.tokens import ncp_id
from ncp.security.xua import national_audience
from ncp.server import free_port, serve_in_thread
from ncp.soapcore import parse_message
from ncp.synth import render_pdf
from ncp.topology import parse_topology

XDS_TOML = resources.files("ncp.topologies") / "xds.toml"
REPOSITORY = "2.999.250.1.77"  # the team's repository OID, not our rule's <hcid>.10.<n>


class Wire:
    """ASGI middleware keeping every request body the team's registry received, with its Content-Type."""

    def __init__(self, app: Any, messages: list[tuple[str, bytes]]) -> None:
        self.app, self.messages = app, messages

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        content_type = dict(scope["headers"]).get(b"content-type", b"").decode()
        chunks: list[bytes] = []

        async def recorded() -> Any:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                self.messages.append((content_type, b"".join(chunks)))
            return message

        await self.app(scope, recorded, send)


class TeamRegistry:
    """The team's XDS.b registry + repository on an https listener that can be stopped and started again
    on the same port, keeping its SQLite file (an outage, not a new registry)."""

    def __init__(self, pki: FederationPki, folder: Path) -> None:
        self.pki, self.port = pki, free_port("127.0.0.1")
        self.audit_db = folder / "audit.sqlite"
        self.settings = XdsSettings(
            db_path=folder / "xds.sqlite",
            home_community_id="2.999.250.1",
            repository_unique_id=REPOSITORY,
            patient_id_domain="2.999.250.2",
            xua_trust=((ncp_id("FR"), pki.client_credentials("FR").cert),),
            xua_audience=national_audience("FR"),
            xua_system_submissions=True,  # the testbed's publisher seeds it as a Document Source
            audit_db=self.audit_db,
        )
        self.base = f"https://127.0.0.1:{self.port}"
        self.wire: list[tuple[str, bytes]] = []  # every SOAP message received, across restarts
        self._running: ExitStack | None = None

    def start(self) -> None:
        stack = ExitStack()
        app = create_xds_app(self.settings)
        stack.callback(app.state.xds.close)
        wire = Wire(app, self.wire)
        stack.enter_context(serve_in_thread(wire, port=self.port, **self.pki.uvicorn_options("FR")))
        self._running = stack

    @property
    def running(self) -> bool:
        return self._running is not None

    def stop(self) -> None:
        assert self._running is not None
        self._running.close()
        self._running = None

    def health(self) -> dict[str, Any]:
        tls = self.pki.client_ssl_context("FR")
        return dict(httpx.get(f"{self.base}/health", verify=tls, timeout=10).json())

    def records(self) -> list[AuditRecord]:
        return list(AuditStore(self.audit_db).records())


def topology_text(pki_dir: Path, registry: str) -> str:
    """builtin:xds with the shared PKI and France's registry entry replaced."""
    text = XDS_TOML.read_text().replace("security = true", f'security = true\npki_dir = "{pki_dir}"')
    return text.replace('registries = [{ id = "national", kind = "xds" }]', f"registries = [{registry}]")


@dataclass
class World:
    fed: Federation
    team: TeamRegistry
    fr: Published

    def consumer_for(self, study: StudyRecord) -> ImagingConsumer:
        consumer = ImagingConsumer(self.fed.plan.endpoints["AT"].gateway)
        consumer.authenticate(subject="dr-team")
        consumer.identify(study.patient.issuer, study.patient.id)
        consumer.open_treatment_context(study.patient.issuer, study.patient.id)
        return consumer


@contextmanager
def team_topology(folder: Path) -> Iterator[tuple[TeamRegistry, Path]]:
    """A running team registry, empty, and a topology declaring it France's registry (seed = true)."""
    pki = FederationPki.create(folder / "pki", ["FR", "AT"])
    team = TeamRegistry(pki, folder / "team")
    team.start()
    entry = (
        f'{{ id = "national", kind = "xds", url = "{team.base}", '
        f'repository_unique_id = "{REPOSITORY}", seed = true }}'
    )
    (folder / "topology.toml").write_text(topology_text(pki.directory, entry))
    try:
        yield team, folder / "topology.toml"
    finally:
        if team.running:
            team.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("xds-external")
    with (
        team_topology(folder) as (team, topology),
        Federation(str(topology), folder / "run", mode="thread", secure=True) as fed,
    ):
        published = asyncio.run(seed_federation(fed.topology, fed.plan.endpoints))
        yield World(fed, team, published["FR"])


def test_france_runs_only_the_mhd_facade_in_front_of_the_team_s_registry(world: World) -> None:
    plan = world.fed.plan
    assert [r.id for r in plan.roles if r.id.startswith("FR/registry")] == ["FR/registry/national"]
    assert not list((plan.run_dir / "FR").glob("xds-*.sqlite")), "no XDS role of ours, no store"
    xds = plan.endpoints["FR"].xds["national"]
    assert (xds.registry, xds.repository, xds.repository_unique_id) == (
        f"{world.team.base}/xds/registry",
        f"{world.team.base}/xds/repository",
        REPOSITORY,
    )
    facade = httpx.get(plan.endpoints["FR"].registries["national"].removesuffix("/fhir") + "/health").json()
    assert (facade["registry"], facade["repository"]) == (xds.registry, xds.repository)
    # seeded through our publisher by ITI-41 at the URL (seed = true): every manifest and report
    assert world.team.health()["documents"] == len(world.fr.data.studies) + len(world.fr.reports)


def test_at_finds_every_french_study_and_retrieves_kos_and_report_through_both_gateways(world: World) -> None:
    for study in world.fr.data.studies:
        consumer = world.consumer_for(study)
        patient = study.patient
        found = consumer.find(patient.issuer, patient.id, study_uid=study.study_instance_uid)
        kinds = sorted(e.kind for e in found)
        published_report = study.study_instance_uid in world.fr.reports
        assert kinds == (["manifest", "report"] if published_report else ["manifest"])
        manifest = next(e for e in found if e.kind == "manifest")
        assert manifest.home_community_id == "2.999.250.1"
        assert (
            consumer.retrieve_document(manifest, "application/dicom")
            == world.fr.manifests[study.study_instance_uid]
        )
        if published_report:
            report = next(e for e in found if e.kind == "report")
            expected = render_pdf(world.fr.data.report(study))  # type: ignore[arg-type]
            assert consumer.retrieve_document(report, "application/pdf") == expected


def test_every_soap_message_the_team_s_registry_took_carried_a_valid_assertion(world: World) -> None:
    study = world.fr.data.studies[0]
    consumer = world.consumer_for(study)
    patient = study.patient
    found = consumer.find(patient.issuer, patient.id, study_uid=study.study_instance_uid, kind="manifest")
    assert consumer.retrieve_document(found[0], "application/dicom")
    records = world.team.records()
    national = [r for r in records if r.transaction in ("ITI-18", "ITI-43")]
    assert {r.transaction for r in national} == {"ITI-18", "ITI-43"}
    assert {(r.outcome, r.user_issuer, r.user_role) for r in national} == {("0", ncp_id("FR"), "2211")}
    assert "dr-team" in {r.user for r in national}
    seeded = [r for r in records if r.transaction == "ITI-41"]
    assert seeded and {(r.outcome, r.user) for r in seeded} == {("0", None)}  # the system publisher
    assert all(r.outcome == "0" for r in records), "nothing was refused: no message without XUA"


def test_every_message_on_the_wire_to_the_team_validates_against_the_official_schemas(
    world: World, schema: etree.XMLSchema
) -> None:
    study = world.fr.data.studies[-1]
    consumer = world.consumer_for(study)
    patient = study.patient
    found = consumer.find(patient.issuer, patient.id, study_uid=study.study_instance_uid, kind="manifest")
    assert consumer.retrieve_document(found[0], "application/dicom")
    envelopes = [
        parse_message(ct, body, max_part_bytes=len(body), security=True) for ct, body in world.team.wire
    ]
    assert {env.action for env in envelopes} == {iti41.ACTION, iti18.ACTION, iti43.ACTION}
    for env in envelopes:
        assert_valid(schema, env.body, env.attachments)
        assert (env.security is not None) == (env.action != iti41.ACTION)  # XUA on every query and retrieve


def test_the_team_s_registry_down_is_a_502_operation_outcome_through_both_gateways(world: World) -> None:
    study = world.fr.data.studies[0]
    consumer = world.consumer_for(study)
    gateway = world.fed.plan.endpoints["AT"].gateway
    params = {"patient.identifier": f"urn:oid:{study.patient.issuer}|{study.patient.id}", "status": "current"}
    world.team.stop()
    try:
        response = httpx.get(
            f"{gateway}/fhir/DocumentReference", params=params, headers=consumer.headers, timeout=30
        )
    finally:
        world.team.start()
    assert response.status_code == 502
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "unreachable" in str(outcome), outcome
    consumer = world.consumer_for(study)  # the team's registry is back: the same search answers again
    assert consumer.find(study.patient.issuer, study.patient.id, study_uid=study.study_instance_uid)


# Scenarios that run on the topology given, with the manifests the team's registry holds (MADO): one
# seeding only, since a second one (MCWG) would resubmit the same uniqueIds to the same registry.
ON_THE_TOPOLOGY_GIVEN = [sc.id for sc in load_scenarios() if sc.topology is None and sc.encoding != "MCWG"]


def test_the_scenario_catalogue_passes_with_the_team_s_registry_behind_ncp_a(tmp_path: Path) -> None:
    with team_topology(tmp_path) as (team, topology):
        status = run_scenarios(
            ON_THE_TOPOLOGY_GIVEN,
            None,
            str(topology),
            junit=None,
            json_path=tmp_path / "report.json",
            html=None,
            console=None,
        )
        records = team.records()
    report = json.loads((tmp_path / "report.json").read_text())
    not_passed = {
        r["id"]: (r["outcome"], r["message"]) for r in report["scenarios"] if r["outcome"] != "passed"
    }
    assert not_passed == {} and status == 0
    assert sorted(r["id"] for r in report["scenarios"]) == sorted(ON_THE_TOPOLOGY_GIVEN)
    assert {"ITI-18", "ITI-43"} <= {r.transaction for r in records}  # France's documents came from the team


# -- the topology ------------------------------------------------------------------------------------
def registry_of(raw_entry: str, pki_dir: Path | None) -> Any:
    """France's national registry as parsed from builtin:xds with ``raw_entry`` (and ``pki_dir``)."""
    text = topology_text(pki_dir or Path("/nonexistent"), raw_entry)
    if pki_dir is None:
        text = text.replace('pki_dir = "/nonexistent"\n', "")
    return parse_topology(tomllib.loads(text)).country("FR").registries[0]


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    return FederationPki.create(folder, ["FR", "AT"]).directory


def test_url_gives_both_endpoints_by_our_rule_and_explicit_urls_override_it(pki_dir: Path) -> None:
    reg = registry_of('{ id = "national", kind = "xds", url = "http://xds.example.fr/base/" }', None)
    assert (reg.registry_url, reg.repository_url, reg.repository_unique_id, reg.seed) == (
        "http://xds.example.fr/base/xds/registry",
        "http://xds.example.fr/base/xds/repository",
        None,
        False,
    )
    reg = registry_of(
        '{ id = "national", kind = "xds", url = "https://x.example", '
        'repository_url = "https://repo.example/iti43" }',
        pki_dir,
    )
    assert (reg.registry_url, reg.repository_url) == (
        "https://x.example/xds/registry",
        "https://repo.example/iti43",
    )
    reg = registry_of(
        '{ id = "national", kind = "xds", registry_url = "http://r.example/q", '
        'repository_url = "http://r.example/d" }',
        None,
    )
    assert (reg.registry_url, reg.repository_url) == ("http://r.example/q", "http://r.example/d")


BAD = {
    "url on an mhd registry": (
        '{ id = "national", url = "http://x.example" }',
        r"field 'countries\.FR\.registries\[0\]\.url': only a registry of kind xds is declared by URL",
    ),
    "url on an xca region": (
        '{ id = "national", kind = "xca", url = "http://x.example" }',
        r"registries\[0\]\.url': only a registry of kind xds",
    ),
    "a url that is not http(s)": (
        '{ id = "national", kind = "xds", url = "ftp://x.example" }',
        r"registries\[0\]\.url' must be an http\(s\) URL, not 'ftp://x\.example'",
    ),
    "one explicit endpoint without url": (
        '{ id = "national", kind = "xds", registry_url = "http://x.example/q" }',
        r"registries\[0\]\.url' is required unless both registry_url and repository_url are",
    ),
    "a repository OID with urn:oid:": (
        '{ id = "national", kind = "xds", url = "http://x.example", repository_unique_id = "urn:oid:1.2" }',
        r"registries\[0\]\.repository_unique_id' 'urn:oid:1\.2' is not a bare OID",
    ),
    "seed without a url": (
        '{ id = "national", kind = "xds", seed = true }',
        r"registries\[0\]\.url' is required",
    ),
    "a misspelt key": (
        '{ id = "national", kind = "xds", ulr = "http://x.example" }',
        r"unknown key 'countries\.FR\.registries\[0\]\.ulr' \(did you mean 'url'\?\)",
    ),
    "https without the shared PKI": (
        '{ id = "national", kind = "xds", url = "https://x.example" }',
        r"registries\[0\]': an https registry needs the topology's 'pki_dir'",
    ),
}


@pytest.mark.parametrize(("entry", "message"), BAD.values(), ids=BAD.keys())
def test_a_bad_registry_entry_is_refused_in_one_line_naming_the_key(entry: str, message: str) -> None:
    with pytest.raises(InvalidTopology, match=message) as refused:
        registry_of(entry, None)
    assert "\n" not in str(refused.value)


def test_a_registry_url_in_an_external_ncp_s_country_is_refused() -> None:
    raw = tomllib.loads(
        topology_text(Path("/nonexistent"), '{ id = "national", kind = "xds", url = "http://x.example" }')
    )
    del raw["pki_dir"]
    fr = raw["countries"]["FR"]
    fr["border"] = "https://ncp.example.fr"
    fr["pacs"] = [dict(p, backend="https://pacs.example.fr/rs") for p in fr["pacs"]]
    with pytest.raises(
        InvalidTopology, match=r"registries\[0\]': an external NCP's registry is not declared by URL here"
    ):
        parse_topology(raw)
