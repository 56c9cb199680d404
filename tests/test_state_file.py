"""The state file of ``xcwado up`` (docs/state-file.md, contract): what a federation writes follows
docs/state-file.schema.json, ``ncp.state`` reads it back, and a file that breaks the contract is refused
by both, the loader naming the key at fault."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from ncp.federation import Federation
from ncp.registry.xds.settings import soap_endpoints
from ncp.state import FederationState, StateFileError, load_state
from ncp.synth import catalogue_json, synthesize

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs" / "state-file.schema.json").read_text())

# A country under test from outside (border, PACS by URL, no consumer gateway) beside a simulated one.
EXTERNAL = """
name = "external"
security = false
[countries.FR]
home_community_id = "2.999.250.1"
patient_id_issuer = "2.999.250.2"
registries = [{ id = "national" }]
pacs = [{ id = "pacs-1", retrieve_location_uid = "2.25.249112837101579105183278066551769719101" }]
[countries.AT]
home_community_id = "2.999.40.1"
patient_id_issuer = "2.999.40.2"
border = "https://ncp.example.at:8443"
registries = [{ id = "national" }]
pacs = [{ id = "vna", retrieve_location_uid = "2.25.124730087464102372658485198995786580382", backend = "https://pacs.example.at/dicom-web" }]
"""  # noqa: E501

# France's documents in a team's own XDS.b registry + repository, declared by URL (docs/xds.md)
EXTERNAL_XDS = """
name = "external-xds"
security = false
[countries.FR]
home_community_id = "2.999.250.1"
patient_id_issuer = "2.999.250.2"
registries = [{ id = "national", kind = "xds", url = "http://xds.example.fr:8080/base", repository_unique_id = "2.999.250.77" }]
pacs = [{ id = "pacs-1", retrieve_location_uid = "2.25.249112837101579105183278066551769719101" }]
[countries.AT]
home_community_id = "2.999.40.1"
patient_id_issuer = "2.999.40.2"
registries = [{ id = "national" }]
pacs = [{ id = "vna", retrieve_location_uid = "2.25.124730087464102372658485198995786580382" }]
"""  # noqa: E501


def up_state(run: Path, source: str) -> dict[str, Any]:
    """What ``xcwado up`` writes for ``source`` once seeded, as read back from disk; nothing is started:
    the catalogue is the synthesis that seeding publishes (ncp.publish.publish_country)."""
    fed = Federation(source, run / "run", mode="thread")
    fed.catalogue = {
        "patients": [
            patient
            for code, country in fed.topology.countries.items()
            if not country.external  # an NCP under test holds its own data
            for patient in catalogue_json(
                synthesize(fed.topology, code, retrieve_urls=fed.plan.endpoints[code].pacs)
            )
        ]
    }
    fed.write_state(run / "state.json")
    return dict(json.loads((run / "state.json").read_text()))


@pytest.fixture(
    params=[
        "builtin:default",
        "builtin:three-country",
        "builtin:wan",
        "builtin:xds",
        "builtin:xca",
        "external",
        "external-xds",
    ]
)
def written(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    source = str(request.param)
    return up_state(tmp_path, _file(tmp_path, source) if not source.startswith("builtin:") else source)


def _file(folder: Path, name: str) -> str:
    """One of the topologies above, written as a file."""
    path = folder / f"{name}.toml"
    path.write_text({"external": EXTERNAL, "external-xds": EXTERNAL_XDS}[name])
    return str(path)


def test_the_schema_is_valid_json_schema_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_what_xcwado_up_writes_follows_the_schema(written: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(written)


def test_xcwado_up_writes_every_key_of_the_contract(written: dict[str, Any]) -> None:
    """The schema's optional keys are optional for hand-written files only: xcwado up leaves none out."""
    assert set(written) == set(SCHEMA["properties"])
    for country in written["countries"].values():
        assert set(country) == set(SCHEMA["$defs"]["country"]["properties"])
    for patient in written["catalogue"]["patients"]:
        for study in patient["studies"]:
            assert set(SCHEMA["$defs"]["study"]["properties"]) <= set(study)
            for series in study["series"]:
                assert set(SCHEMA["$defs"]["series"]["properties"]) <= set(series)


def test_a_hand_written_file_needs_only_the_required_keys() -> None:
    """What a team writes for its own NCP under test: the topology, and per country its identifiers, its
    consumer gateway and its PACS; everything else takes a default."""
    minimal = {
        "topology": "builtin:default",
        "countries": {
            "FR": {
                "home_community_id": "2.999.250.1",
                "patient_id_issuer": "2.999.250.2",
                "gateway": "https://ncp.example.fr",
                "pacs": {"2.25.249112837101579105183278066551769719101": "https://pacs.example.fr/rs"},
            }
        },
    }
    jsonschema.Draft202012Validator(SCHEMA).validate(minimal)
    state = FederationState.from_json(minimal)
    fr = state.countries["FR"]
    assert (fr.public, fr.border, dict(fr.registries)) == ("https://ncp.example.fr", "", {})
    assert fr.pacs_base("2.25.249112837101579105183278066551769719101") == "https://pacs.example.fr/rs/"
    assert (state.run_dir, state.patients, state.security.enabled, dict(state.links)) == (None, (), False, {})


def test_ncp_state_reads_back_what_xcwado_up_writes(written: dict[str, Any]) -> None:
    state = FederationState.from_json(written)
    assert state.topology == written["topology"]
    assert state.endpoints().to_json() == written["countries"], "the endpoints survive the round trip"
    assert [(p.country, p.id, len(p.studies)) for p in state.patients] == [
        (p["country"], p["id"], len(p["studies"])) for p in written["catalogue"]["patients"]
    ]
    study = state.patients[0].studies[0]
    assert study.instance_count == sum(
        s["instances"] for s in written["catalogue"]["patients"][0]["studies"][0]["series"]
    )
    assert state.security.enabled == written["security"]["enabled"]
    assert sorted(state.links) == sorted(written["links"])


def test_a_secure_federation_names_its_pki_and_token_recipes(tmp_path: Path) -> None:
    state = FederationState.from_json(up_state(tmp_path, "builtin:default"))
    assert state.security.ca_file is not None and state.security.ca_file.is_file()
    assert all(cert.is_file() and key.is_file() for cert, key in state.security.client_credentials.values())
    at = state.countries["AT"]
    assert at.hcp_token is not None and at.hcp_token.url == f"{at.gateway}/idp/token"
    assert at.treatment_token is not None and "Authorization" in at.treatment_token.headers


def test_an_ncp_under_test_has_a_border_but_no_gateway(tmp_path: Path) -> None:
    (tmp_path / "external.toml").write_text(EXTERNAL)
    state = FederationState.from_json(up_state(tmp_path, str(tmp_path / "external.toml")))
    at = state.countries["AT"]
    assert (at.gateway, at.public, at.border) == ("", "", "https://ncp.example.at:8443")
    assert (
        at.pacs_base("2.25.124730087464102372658485198995786580382") == "https://pacs.example.at/dicom-web/"
    )
    assert {p.country for p in state.patients} == {"FR"}


def test_load_state_takes_a_path_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    up_state(tmp_path, "builtin:default")
    assert load_state(tmp_path / "state.json").countries.keys() == {"FR", "AT"}
    monkeypatch.setenv("XCWADO_STATE", str(tmp_path / "state.json"))
    assert load_state().countries.keys() == {"FR", "AT"}
    monkeypatch.delenv("XCWADO_STATE")
    with pytest.raises(StateFileError, match="XCWADO_STATE"):
        load_state()


@pytest.mark.parametrize(
    ("content", "reason"),
    [("", "not JSON"), ("[]", "must be a JSON object"), ('{"countries": {}}', "'topology' is missing")],
)
def test_an_unusable_file_is_refused_in_one_line(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(StateFileError, match=reason):
        FederationState.from_path(path)
    with pytest.raises(StateFileError, match="cannot read state file"):
        FederationState.from_path(tmp_path / "missing.json")


Breakage = Callable[[dict[str, Any]], None]


def _series(doc: dict[str, Any]) -> dict[str, Any]:
    return dict(doc["catalogue"]["patients"][0]["studies"][0]["series"][0])


def _set(path: str, value: Any) -> Breakage:
    """Set the value at a dotted path (``countries.FR.border``); list items by index."""

    def apply(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value

    return apply


def _drop(path: str) -> Breakage:
    def apply(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[last]

    return apply


SERIES = "catalogue.patients.0.studies.0.series.0"
BROKEN: dict[str, tuple[Breakage, str]] = {
    "a required key missing": (_drop("countries.FR.gateway"), r"'countries\.FR\.gateway' is missing"),
    "a misspelt key": (_set("countries.FR.broder", "https://x"), r"'countries\.FR\.broder' is not"),
    "an unknown top-level key": (_set("version", 2), r"'version' is not a state-file key"),
    "a path-traversal UID": (_set(f"{SERIES}.series_instance_uid", "../../etc"), "not a valid DICOM UID"),
    "a urn:oid: homeCommunityId": (_set("countries.FR.home_community_id", "urn:oid:2.999.1"), "not an OID"),
    "a non-http gateway": (_set("countries.FR.gateway", "ftp://127.0.0.1:1"), "not an http"),
    "a non-UID Retrieve Location key": (
        _set("countries.FR.pacs", {"x": "http://h/"}),
        "not a valid DICOM UID",
    ),
    "a relative run_dir": (_set("run_dir", "run"), "not an absolute path"),
    "a negative instance count": (_set(f"{SERIES}.instances", -1), "integer >= 0"),
    "a country code that is not ISO": (_set("catalogue.patients.0.country", "France"), "ISO 3166"),
    "security that does not say if enabled": (_drop("security.enabled"), r"'security\.enabled' is missing"),
}


@pytest.mark.parametrize("breakage", BROKEN.values(), ids=BROKEN.keys())
def test_schema_and_loader_refuse_the_same_broken_files(
    tmp_path: Path, breakage: tuple[Breakage, str]
) -> None:
    break_it, reason = breakage
    doc = copy.deepcopy(up_state(tmp_path, "builtin:default"))
    break_it(doc)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    with pytest.raises(StateFileError, match=reason):
        FederationState.from_json(doc)


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        (_set("countries.FR.registries", []), "must list the FHIR bases of 'registry_ids'"),
        (_set("security.tokens.XX", {}), "no country 'XX'"),
    ],
    ids=["registries that disagree with registry_ids", "tokens for a country that is not there"],
)
def test_the_loader_also_checks_what_json_schema_cannot_say(
    tmp_path: Path, breakage: Breakage, reason: str
) -> None:
    doc = copy.deepcopy(up_state(tmp_path, "builtin:default"))
    breakage(doc)
    with pytest.raises(StateFileError, match=reason):
        FederationState.from_json(doc)


def test_an_xds_registry_is_named_by_its_mhd_facade_and_its_xds_endpoints(tmp_path: Path) -> None:
    """FHIR clients use the facade's base; the XDS.b endpoints are keys of their own, here on the role's
    listener, with the repository OID of the rule ``<hcid>.10.<n>`` (docs/state-file.md)."""
    state = FederationState.from_json(up_state(tmp_path, "builtin:xds"))
    fr = state.countries["FR"]
    base = fr.registries["national"]
    assert base.endswith("/fhir")
    xds = fr.xds["national"]
    assert (xds.registry, xds.repository) == soap_endpoints(base)
    assert xds.repository_unique_id == "2.999.250.1.10.1"
    assert dict(state.countries["AT"].xds) == {}  # an MHD registry has no XDS endpoints


def test_a_team_s_own_xds_registry_is_named_by_the_urls_of_the_topology(tmp_path: Path) -> None:
    """Declared by URL, the registry keeps our facade (a FHIR base on a listener of ours) in front of the
    team's endpoints, which the state file names as the topology derives them from ``url``."""
    state = FederationState.from_json(up_state(tmp_path, _file(tmp_path, "external-xds")))
    fr = state.countries["FR"]
    assert fr.registries["national"].startswith("http://127.0.0.1:")
    xds = fr.xds["national"]
    assert (xds.registry, xds.repository, xds.repository_unique_id) == (
        "http://xds.example.fr:8080/base/xds/registry",
        "http://xds.example.fr:8080/base/xds/repository",
        "2.999.250.77",
    )


def test_every_region_on_xca_names_its_xds_endpoints_on_its_own_listener(tmp_path: Path) -> None:
    state = FederationState.from_json(up_state(tmp_path, "builtin:xca"))
    country = next(c for c in state.countries.values() if c.communities)
    registries = {ep.registry.removesuffix("/xds/registry") for ep in country.xds.values()}
    assert country.xds and registries == set(country.communities.values())


XDS = "countries.FR.xds.national"
XDS_BROKEN: dict[str, tuple[Breakage, str]] = {
    "an unknown key": (_set(f"{XDS}.wsdl", "http://h"), r"'countries\.FR\.xds\.national\.wsdl' is not"),
    "a non-http registry": (_set(f"{XDS}.registry", "tcp://h:1"), "not an http"),
    "a urn:oid: repository": (_set(f"{XDS}.repository_unique_id", "urn:oid:1.2"), "not an OID"),
    "a missing repository": (
        _drop(f"{XDS}.repository"),
        r"'countries\.FR\.xds\.national\.repository' is missing",
    ),
}


@pytest.mark.parametrize("breakage", XDS_BROKEN.values(), ids=XDS_BROKEN.keys())
def test_schema_and_loader_refuse_the_same_broken_xds_endpoints(
    tmp_path: Path, breakage: tuple[Breakage, str]
) -> None:
    break_it, reason = breakage
    doc = copy.deepcopy(up_state(tmp_path, "builtin:xds"))
    break_it(doc)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    with pytest.raises(StateFileError, match=reason):
        FederationState.from_json(doc)
