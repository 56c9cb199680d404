"""A country on XCA-I, architecture B (builtin:xca): France's two regions are communities of their own, each
an XCA Responding Gateway over an XDS.b registry + repository seeded with ITI-41; NCP-A asks the country's
Initiating Gateway (MHD facade). Austria's consumers reach every region through both gateways, security on."""

from __future__ import annotations

import asyncio
import json
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
from xcai_support import SUCCESS, request
from xds_support import post_raw

from ncp.consumer.client import ImagingConsumer
from ncp.dicom.kos import to_part10
from ncp.errors import InvalidTopology
from ncp.federation import Federation
from ncp.model import PatientRecord
from ncp.publish import Published, seed_federation
from ncp.registry.xca.rad75 import INITIATING_PATH
from ncp.registry.xca.settings import query_url
from ncp.security.pki import FederationPki
from ncp.security.tokens import ncp_id
from ncp.security.xua import XuaContext, XuaIssuer, national_audience, security_header
from ncp.soapcore import soap_message
from ncp.synth import render_pdf
from ncp.topology import Country, parse_topology
from ncp.xdsi import RAD69_ACTION, DocumentRequest


@dataclass
class XcaFederation:
    fed: Federation
    fr: Published

    @property
    def france(self) -> Country:
        return self.fed.topology.country("FR")

    def consumer_for(self, patient: PatientRecord) -> ImagingConsumer:
        """A health professional of Austria with a treatment context for a French patient."""
        consumer = ImagingConsumer(self.fed.plan.endpoints["AT"].gateway)
        consumer.authenticate()
        consumer.identify(patient.issuer, patient.id)
        consumer.open_treatment_context(patient.issuer, patient.id)
        return consumer

    def regions_of(self, patient: PatientRecord) -> set[str]:
        return {self.region_of(s.study_instance_uid) for s in self.fr.data.studies if s.patient == patient}

    def region_of(self, study_uid: str) -> str:
        study = next(s for s in self.fr.data.studies if s.study_instance_uid == study_uid)
        return self.france.registry_of(study.series[0].retrieve_location_uid)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XcaFederation]:
    run_dir: Path = tmp_path_factory.mktemp("xca-federation")
    with Federation("builtin:xca", run_dir, mode="thread", secure=True) as fed:
        published = asyncio.run(seed_federation(fed.topology, fed.plan.endpoints))
        yield XcaFederation(fed, published["FR"])


def _raw(raw: dict[str, Any], registries: list[dict[str, str]], architecture: str = "B") -> dict[str, Any]:
    raw["countries"]["FR"] |= {"architecture": architecture, "registries": registries}
    return raw


def test_xca_regions_are_an_architecture_b_country_whose_registries_are_all_communities() -> None:
    raw = tomllib.loads((resources.files("ncp.topologies") / "xca.toml").read_text())
    fr = parse_topology(raw).country("FR")
    assert [fr.community_of(r.id) for r in fr.registries] == ["2.999.250.1.1", "2.999.250.1.2"]
    own = [
        {"id": "north", "kind": "xca", "home_community_id": "2.999.250.77"},
        {"id": "south", "kind": "xca"},
    ]
    assert parse_topology(_raw(raw, own)).country("FR").community_of("north") == "2.999.250.77"
    refused = [
        ([{"id": "north", "kind": "xca"}, {"id": "south"}], "B", "every registry of kind xca"),
        ([{"id": "national", "kind": "xca"}], "A", "need architecture B"),
        ([{"id": "north", "home_community_id": "2.999.250.77"}, {"id": "south"}], "B", "only an xca region"),
        ([{"id": "north", "kind": "xca", "home_community_id": "2.999.40.1"}, {"id": "south", "kind": "xca"}],
         "B", "home_community_id must be unique"),
        ([{"id": "north", "kind": "xcb"}, {"id": "south"}], "B", "must be mhd, xds or xca"),
    ]  # fmt: skip
    for registries, architecture, message in refused:
        raw = tomllib.loads((resources.files("ncp.topologies") / "xca.toml").read_text())
        with pytest.raises(InvalidTopology, match=message):
            parse_topology(_raw(raw, registries, architecture))


def test_ncp_a_asks_one_initiating_gateway_and_the_state_names_every_community(
    federation: XcaFederation,
) -> None:
    endpoints = federation.fed.plan.endpoints["FR"]
    assert list(endpoints.registries) == ["xca"]
    assert sorted(endpoints.communities) == ["2.999.250.1.1", "2.999.250.1.2"]
    health = httpx.get(endpoints.registries["xca"].removesuffix("/fhir") + "/health").json()
    assert health["communities"] == {"north": "2.999.250.1.1", "south": "2.999.250.1.2"}
    state = federation.fed.plan.endpoints.to_json()["FR"]
    assert state["communities"] == dict(endpoints.communities)
    for hcid, base in endpoints.communities.items():
        assert httpx.get(f"{base}/health").json()["home_community_id"] == hcid
        assert httpx.post(query_url(base), content=b"<x/>").status_code == 415  # a SOAP endpoint, no 5xx


def test_every_study_of_every_region_is_found_from_at_and_retrieved_as_published(
    federation: XcaFederation,
) -> None:
    regions = set()
    for patient in federation.fr.data.patients:
        consumer = federation.consumer_for(patient)
        studies = [s for s in federation.fr.data.studies if s.patient == patient]
        manifests = consumer.find(patient.issuer, patient.id, kind="manifest")
        assert sorted(e.study_instance_uid or "" for e in manifests) == sorted(
            s.study_instance_uid for s in studies
        )
        for entry in manifests:
            uid = entry.study_instance_uid or ""
            regions.add(federation.region_of(uid))
            assert entry.home_community_id == federation.france.home_community_id
            assert consumer.retrieve_document(entry, "application/dicom") == federation.fr.manifests[uid]
        for report in consumer.find(patient.issuer, patient.id, kind="report"):
            study = next(s for s in studies if s.study_instance_uid == report.study_instance_uid)
            assert report.study_instance_uid in federation.fr.reports
            assert consumer.retrieve_document(report, "application/pdf") == render_pdf(
                federation.fr.data.report(study)
            )
    assert regions == {"north", "south"}


def test_images_of_a_study_found_through_xca_arrive_complete(federation: XcaFederation) -> None:
    study = federation.fr.data.studies[0]
    consumer = federation.consumer_for(study.patient)
    (entry,) = consumer.find(
        study.patient.issuer, study.patient.id, study_uid=study.study_instance_uid, kind="manifest"
    )
    retrieval = consumer.retrieve_images(entry.home_community_id or "", consumer.retrieve_manifest(entry))
    assert retrieval.complete, (retrieval.instances, retrieval.expected)


def test_one_region_down_is_partial_success_naming_its_community_through_both_gateways(
    federation: XcaFederation,
) -> None:
    down = "south"
    hcid = federation.france.community_of(down)
    patient = next(p for p in federation.fr.data.patients if len(federation.regions_of(p)) == 2)
    alive = sorted(
        s.study_instance_uid
        for s in federation.fr.data.studies
        if s.patient == patient and federation.region_of(s.study_instance_uid) != down
    )
    consumer = federation.consumer_for(patient)
    with federation.fed.role_down(f"FR/registry/{down}"):
        response = httpx.get(
            f"{federation.fed.plan.endpoints['AT'].gateway}/fhir/DocumentReference",
            headers={**consumer.headers, "Accept": "application/fhir+json"},
            params={
                "patient.identifier": f"urn:oid:{patient.issuer}|{patient.id}",
                "status": "current",
                "type": "http://loinc.org|18748-4",
            },
            timeout=60,
        )
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    found = sorted(
        r["identifier"]["value"].removeprefix("urn:oid:")
        for e in entries if e["search"]["mode"] == "match"
        for r in e["resource"]["context"]["related"] if r["type"] == "ImagingStudy"
    )  # fmt: skip
    assert found == alive
    outcomes = [e["resource"] for e in entries if e["search"]["mode"] == "outcome"]
    assert [o["resourceType"] for o in outcomes] == ["OperationOutcome"]
    assert hcid in json.dumps(outcomes) and f"'{down}'" in json.dumps(outcomes)


def test_a_national_consumer_retrieves_a_study_by_xca_i_through_both_gateways(
    federation: XcaFederation,
) -> None:
    """XCA-I inside France: RAD-69 to the Initiating Gateway, RAD-75 to the study's region, RAD-69 at its
    PACS; every instance arrives as the publisher stored it, each DocumentResponse naming the region. With
    security on the region requires XUA on RAD-75: the consumer presents an assertion of FR's NCP, which
    the Initiating Gateway passes on (tests/xca/test_xca_xua.py)."""
    study = next(
        s for s in federation.fr.data.studies if len({x.retrieve_location_uid for x in s.series}) == 1
    )
    region = federation.region_of(study.study_instance_uid)
    home = f"urn:oid:{federation.france.community_of(region)}"
    documents = tuple(
        DocumentRequest(
            study.study_instance_uid, s.series_instance_uid, home, s.retrieve_location_uid, i.sop_instance_uid
        )
        for s in study.series
        for i in s.instances
    )
    initiating = federation.fed.plan.endpoints["FR"].registries["xca"].removesuffix("/fhir") + INITIATING_PATH
    assert federation.fed.plan.pki_dir is not None
    pair = FederationPki.load(federation.fed.plan.pki_dir).client_credentials("FR")
    fr_ncp = XuaIssuer.from_files(ncp_id("FR"), pair.key, pair.cert)
    user = fr_ncp.issue(XuaContext("dr-fr", purpose_of_use="TREATMENT"), audience=national_audience("FR"))
    message = soap_message(
        request(documents), action=RAD69_ACTION, to=initiating, security=security_header(user)
    )
    with httpx.Client(timeout=60) as http:
        answer = post_raw(http, initiating, message.body, message.content_type)
    assert answer.status == 200 and answer.status_value == SUCCESS, answer.errors()
    expected = {str(ds.SOPInstanceUID): to_part10(ds) for ds in federation.fr.data.instances(study)}
    assert answer.documents() == expected
    assert answer.document_field("HomeCommunityId") == {home}
