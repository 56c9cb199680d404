"""XUA (ITI-40) on the XCA legs: the HCP and treatment context NCP-A verified travel, as a SAML 2.0 assertion
signed by NCP-A, in ``wsse:Security`` of every ITI-38 and ITI-39 message of the country's Initiating Gateway
and of every RAD-75 of its Initiating Imaging Gateway. A region's Responding Gateway with trust anchors takes
none of them without a valid assertion: missing, forged, expired, misaddressed or signed by another key is a
SOAP Fault with the WSS 1.1 subcode and no answer data, and its audit names the user of every message.
In the secure builtin:xca federation every ITI-38/39 message that reached a region carried the HCP.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree
from xca_support import COUNTRY, NORTH, SOUTH, Region, start_region
from xcai_support import SUCCESS, request
from xds_support import (
    ALICE,
    CT,
    CT_REPORT,
    IHE,
    MR,
    PATIENT_ISSUER,
    REPOSITORY,
    RIM,
    Answer,
    patient_params,
    read_answer,
    unique_ids,
)

from ncp.consumer.client import ImagingConsumer
from ncp.dicom.kos import to_part10
from ncp.federation import Federation
from ncp.publish import Published, seed_federation
from ncp.registry.xca import iti38, iti39
from ncp.registry.xca.initiating import create_initiating_app
from ncp.registry.xca.rad75 import (
    INITIATING_PATH,
    RESPONDING_PATH,
    gateway_app,
    initiating_routes,
    responding_routes,
)
from ncp.registry.xca.responding import create_responding_app
from ncp.registry.xca.settings import InitiatingSettings, query_url, retrieve_url
from ncp.registry.xds import iti18
from ncp.registry.xds.settings import XdsSettings
from ncp.security.audit import AuditRecord, AuditStore
from ncp.security.pki import FederationPki
from ncp.security.tokens import PatientRef
from ncp.security.xua import (
    HEADER,
    NS,
    RESOURCE_ID,
    XuaContext,
    XuaIssuer,
    XuaVerifier,
    national_audience,
    security_header,
)
from ncp.server import free_port
from ncp.soapcore import soap_message
from ncp.xdsi import RAD69_ACTION, RAD75_ACTION, DocumentRequest

FR_NCP = "urn:xcwado:ncp:FR"
AUDIENCE = national_audience("FR")
SAML = NS["saml"]
PATIENT = f"{PATIENT_ISSUER}|{ALICE.id}"
CONTEXT = XuaContext(
    subject="dr-curie",
    role="221",
    organisation="Hôpital Test",
    organisation_id="2.999.250.9",
    facility="Hospital",
    purpose_of_use="TREATMENT",
    patient=PatientRef(PATIENT_ISSUER, ALICE.id),
)
FHIR = "http://ig.example/fhir"
SEARCH = {"patient.identifier": f"urn:oid:{PATIENT_ISSUER}|{ALICE.id}", "status": "current"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> FederationPki:
    return FederationPki.create(tmp_path_factory.mktemp("pki"), ["FR", "AT"])


def signer(
    pki: FederationPki, country: str = "FR", issuer: str = FR_NCP, clock: Callable[[], float] = time.time
) -> XuaIssuer:
    """``country``'s NCP signing as ``issuer`` (its key and certificate from the federation PKI)."""
    pair = pki.client_credentials(country)
    return XuaIssuer.from_files(issuer, pair.key, pair.cert, clock=clock)


def valid(pki: FederationPki) -> etree._Element:
    return security_header(signer(pki).issue(CONTEXT, audience=AUDIENCE))


def send(
    http: httpx.Client, url: str, body: etree._Element, action: str, security: etree._Element | None
) -> Answer:
    message = soap_message(body, action=action, to=url, security=security)
    response = http.post(url, content=message.body, headers={"content-type": message.content_type})
    assert response.status_code < 500, response.text
    return read_answer(response)


def trusting_fr(pki: FederationPki, audit: Path) -> dict[str, Any]:
    """XdsSettings of a region that trusts FR's NCP, as ncp.app gives it with security on."""
    trust = ((FR_NCP, pki.client_credentials("FR").cert),)
    return {"xua_trust": trust, "xua_audience": AUDIENCE, "xua_system_submissions": True, "audit_db": audit}


def audit(tmp_path: Path, region: str) -> list[AuditRecord]:
    return AuditStore(tmp_path / f"{region}-audit.sqlite").records()


@pytest.fixture
def secured(
    serve: Callable[..., str], tmp_path: Path, http: httpx.Client, pki: FederationPki
) -> tuple[Region, Region]:
    """North (Alice's CT, manifest + report) and south (her MR), both trusting FR's NCP, seeded by ITI-41
    as a system (no assertion)."""
    north = start_region(
        serve, tmp_path, http, NORTH, [(CT, CT_REPORT)], **trusting_fr(pki, tmp_path / "north-audit.sqlite")
    )
    south = start_region(
        serve, tmp_path, http, SOUTH, [(MR, None)], **trusting_fr(pki, tmp_path / "south-audit.sqlite")
    )
    return north, south


def query(region: Region) -> tuple[str, etree._Element, str]:
    return (
        query_url(region.direct),
        iti38.request(region.home, iti18.FIND_DOCUMENTS, patient_params()),
        iti38.ACTION,
    )


def retrieval(region: Region) -> tuple[str, etree._Element, str]:
    body = iti39.request(region.home, REPOSITORY, CT.manifest_sop_instance_uid)
    return retrieve_url(region.direct), body, iti39.ACTION


def answered_data(answer: Answer) -> bool:
    found = [*answer.envelope.iter(f"{{{RIM}}}ExtrinsicObject"), *answer.envelope.iter(f"{{{IHE}}}Document")]
    return bool(found or answer.parts)


# -- the Responding Gateway with trust anchors ------------------------------------------------------------
def test_iti38_and_iti39_with_a_valid_assertion_are_answered_and_audited_with_its_hcp(
    secured: tuple[Region, Region], http: httpx.Client, pki: FederationPki, tmp_path: Path
) -> None:
    north, _ = secured
    found = send(http, *query(north), valid(pki))
    assert found.status == 200 and sorted(unique_ids(found)) == sorted(north.documents)
    manifest = CT.manifest_sop_instance_uid
    retrieved = send(http, *retrieval(north), valid(pki))
    assert retrieved.status == 200 and retrieved.documents() == {manifest: north.documents[manifest]}
    records = [r for r in audit(tmp_path, "north") if r.transaction.startswith("ITI-3")]
    assert [(r.transaction, r.outcome, r.status) for r in records] == [
        ("ITI-38", "0", 200),
        ("ITI-39", "0", 200),
    ]
    assert {(r.user, r.user_issuer, r.user_role, r.purpose_of_use, r.patient) for r in records} == {
        ("dr-curie", FR_NCP, "221", "TREATMENT", PATIENT)
    }


def _forged(pki: FederationPki) -> etree._Element:
    assertion = signer(pki).issue(CONTEXT, audience=AUDIENCE)
    value = assertion.find(f".//{{{SAML}}}Attribute[@Name='{RESOURCE_ID}']/{{{SAML}}}AttributeValue")
    assert value is not None
    value.text = f"FR-0002^^^&{PATIENT_ISSUER}&ISO"  # another patient, after signing
    return security_header(assertion)


REFUSALS: dict[str, tuple[Callable[[FederationPki], etree._Element | None], str]] = {
    "missing": (lambda pki: None, "wsse:InvalidSecurity"),
    "forged": (_forged, "wsse:FailedCheck"),
    "expired": (
        lambda pki: security_header(
            signer(pki, clock=lambda: time.time() - 3600).issue(CONTEXT, audience=AUDIENCE)
        ),
        "wsse:FailedAuthentication",
    ),
    "wrong audience": (
        lambda pki: security_header(signer(pki).issue(CONTEXT, audience=national_audience("AT"))),
        "wsse:FailedAuthentication",
    ),
    "untrusted signer": (  # AT's NCP key, claiming to be FR's NCP
        lambda pki: security_header(signer(pki, "AT").issue(CONTEXT, audience=AUDIENCE)),
        "wsse:FailedAuthentication",
    ),
}
MESSAGES = {"ITI-38": query, "ITI-39": retrieval}


@pytest.mark.parametrize("transaction", list(MESSAGES))
@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_assertion_is_a_wss_fault_without_answer_data(
    secured: tuple[Region, Region],
    http: httpx.Client,
    pki: FederationPki,
    tmp_path: Path,
    case: str,
    transaction: str,
) -> None:
    north, _ = secured
    make, subcode = REFUSALS[case]
    answer = send(http, *MESSAGES[transaction](north), make(pki))
    assert answer.status == 400 and answer.body.tag == "{http://www.w3.org/2003/05/soap-envelope}Fault"
    assert answer.fault_subcode() == subcode
    assert answer.body.nsmap.get("wsse") == NS["wsse"]  # the subcode's prefix is declared on the Fault
    assert not answered_data(answer)
    refused = audit(tmp_path, "north")[-1]
    assert (refused.transaction, refused.outcome, refused.status, refused.user) == (
        transaction,
        "4",
        400,
        None,
    )
    assert refused.detail


# -- the Initiating Gateway carries it ----------------------------------------------------------------------
def test_the_initiating_gateway_puts_the_callers_assertion_into_every_iti38_and_iti39(
    secured: tuple[Region, Region], serve: Callable[..., str], http: httpx.Client, pki: FederationPki
) -> None:
    north, south = secured
    settings = InitiatingSettings(FHIR, COUNTRY, (north.community(), south.community()))
    fhir = serve(create_initiating_app(settings)) + "/fhir"
    issued = signer(pki).header(CONTEXT, audience=AUDIENCE)
    bundle = http.get(f"{fhir}/DocumentReference", params=SEARCH, headers={HEADER: issued}).json()
    assert [e["search"]["mode"] for e in bundle["entry"]] == ["match"] * 3  # no region refused
    report = next(
        e["resource"]
        for e in bundle["entry"]
        if "pdf" in e["resource"]["content"][0]["attachment"]["contentType"]
    )
    binary = http.get(f"{fhir}/Binary/{report['id']}", headers={HEADER: issued, "accept": "application/pdf"})
    assert binary.status_code == 200
    assert binary.content == north.documents[report["masterIdentifier"]["value"].removeprefix("urn:oid:")]
    exchanges = north.wire.exchanges + south.wire.exchanges
    assert {e.action for e in exchanges} == {iti38.ACTION, iti39.ACTION}
    verifier = XuaVerifier.from_files({FR_NCP: pki.client_credentials("FR").cert}, AUDIENCE)
    assertion_id = etree.fromstring(base64.b64decode(issued)).get("ID")
    for exchange in exchanges:
        verified = verifier.verify(exchange.security)  # raises XuaError when missing or invalid
        assert (verified.assertion_id, verified.context) == (assertion_id, CONTEXT)


def test_without_the_callers_assertion_every_region_refuses_and_an_unreadable_one_is_asked_of_nobody(
    secured: tuple[Region, Region], serve: Callable[..., str], http: httpx.Client
) -> None:
    north, south = secured
    settings = InitiatingSettings(FHIR, COUNTRY, (north.community(), south.community()))
    fhir = serve(create_initiating_app(settings)) + "/fhir"
    bare = http.get(f"{fhir}/DocumentReference", params=SEARCH)
    assert bare.status_code == 502 and bare.text.count("wsse:Security") == 2  # each region's Fault reason
    sent = len(north.wire.exchanges) + len(south.wire.exchanges)
    garbage = http.get(f"{fhir}/DocumentReference", params=SEARCH, headers={HEADER: "PHNhbWw+"})
    assert garbage.status_code == 400 and garbage.json()["resourceType"] == "OperationOutcome"
    assert len(north.wire.exchanges) + len(south.wire.exchanges) == sent


# -- RAD-75 ---------------------------------------------------------------------------------------------
def test_a_region_s_responding_imaging_gateway_requires_the_assertion_the_initiating_one_passes_on(
    serve: Callable[..., str], tmp_path: Path, http: httpx.Client, pki: FederationPki
) -> None:
    """The region's imaging source is down: an accepted RAD-75 answers XDSRepositoryError, which shows the
    message got past the XUA check; a refused one never reaches the source question."""
    rluid, nobody = "2.25.7501", f"http://127.0.0.1:{free_port()}/xdsi/rad69"
    settings = XdsSettings(
        tmp_path / "rg.sqlite",
        NORTH,
        REPOSITORY,
        PATIENT_ISSUER,
        **trusting_fr(pki, tmp_path / "rg-audit.sqlite"),
    )
    rad75 = responding_routes(NORTH, {rluid: nobody}, guarded=True)
    rg = serve(create_responding_app(settings, extra_routes=rad75)) + RESPONDING_PATH
    ig = serve(gateway_app(initiating_routes(COUNTRY, {NORTH: rg}))) + INITIATING_PATH
    body = request((DocumentRequest("2.25.7502", "2.25.7503", f"urn:oid:{NORTH}", rluid, "2.25.7504"),))

    missing = send(http, rg, body, RAD75_ACTION, None)
    assert missing.status == 400 and missing.fault_subcode() == "wsse:InvalidSecurity"
    forged = send(http, rg, body, RAD75_ACTION, _forged(pki))
    assert forged.status == 400 and forged.fault_subcode() == "wsse:FailedCheck"
    through = send(http, ig, body, RAD69_ACTION, valid(pki))  # the consumer's assertion, passed on
    assert through.status == 200 and [e["errorCode"] for e in through.errors()] == ["XDSRepositoryError"]
    refused = send(http, ig, body, RAD69_ACTION, None)
    assert [e["errorCode"] for e in refused.errors()] == ["XDSUnavailableCommunity"]
    assert "wsse:Security" in refused.errors()[0]["codeContext"]
    records = AuditStore(tmp_path / "rg-audit.sqlite").records()
    assert [(r.transaction, r.outcome, r.user) for r in records] == [
        ("RAD-75", "4", None),
        ("RAD-75", "4", None),
        ("RAD-75", "0", "dr-curie"),
        ("RAD-75", "4", None),
    ]


# -- the federation ---------------------------------------------------------------------------------------
@dataclass
class SecureXca:
    fed: Federation
    fr: Published

    def audit(self, region: str) -> list[AuditRecord]:
        """A region's audit trail (ncp.app: ``<run>/FR/xds-<region>-audit.sqlite``)."""
        return AuditStore(self.fed.plan.run_dir / "FR" / f"xds-{region}-audit.sqlite").records()

    def region_of(self, study_uid: str) -> str:
        study = next(s for s in self.fr.data.studies if s.study_instance_uid == study_uid)
        return self.fed.topology.country("FR").registry_of(study.series[0].retrieve_location_uid)

    def fr_ncp(self) -> XuaIssuer:
        """FR's NCP signer, as a national consumer inside France presents it (the regions trust it)."""
        assert self.fed.plan.pki_dir is not None
        return signer(FederationPki.load(self.fed.plan.pki_dir))


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureXca]:
    with Federation("builtin:xca", tmp_path_factory.mktemp("xca-xua"), mode="thread", secure=True) as fed:
        yield SecureXca(fed, asyncio.run(seed_federation(fed.topology, fed.plan.endpoints))["FR"])


def test_every_iti38_and_iti39_that_reached_a_region_carried_the_hcp_of_the_cross_border_request(
    federation: SecureXca,
) -> None:
    patient = next(
        p
        for p in federation.fr.data.patients
        if len(
            {federation.region_of(s.study_instance_uid) for s in federation.fr.data.studies if s.patient == p}
        )
        == 2
    )
    consumer = ImagingConsumer(federation.fed.plan.endpoints["AT"].gateway)
    consumer.authenticate(subject="dr-xua")
    consumer.identify(patient.issuer, patient.id)
    consumer.open_treatment_context(patient.issuer, patient.id)
    for entry in consumer.find(patient.issuer, patient.id, kind="manifest"):
        assert consumer.retrieve_document(entry, "application/dicom")
    for region in ("north", "south"):
        records = [r for r in federation.audit(region) if r.transaction in ("ITI-38", "ITI-39")]
        assert {r.transaction for r in records} == {"ITI-38", "ITI-39"}, region
        assert {(r.outcome, r.user, r.user_issuer, r.user_role) for r in records} == {
            ("0", "dr-xua", FR_NCP, "2211")
        }, region
        # identification (ITI-78) runs before any treatment context: its ITI-38 names the HCP only
        assert {r.patient for r in records} == {None, f"{patient.issuer}|{patient.id}"}, region
        assert all(r.purpose_of_use == "TREATMENT" for r in records if r.patient)
        assert {(r.transaction, r.user) for r in federation.audit(region) if r.transaction == "ITI-41"} == {
            ("ITI-41", None)  # the publisher seeds as the national Document Source, a system
        }


def test_a_region_of_the_federation_refuses_cross_gateway_messages_without_xua(federation: SecureXca) -> None:
    for hcid, base in federation.fed.plan.endpoints["FR"].communities.items():
        home = f"urn:oid:{hcid}"
        with httpx.Client(timeout=30) as http:
            found = send(
                http,
                query_url(base),
                iti38.request(home, iti18.FIND_DOCUMENTS, patient_params()),
                iti38.ACTION,
                None,
            )
            fetched = send(
                http, retrieve_url(base), iti39.request(home, REPOSITORY, "2.25.1"), iti39.ACTION, None
            )
        for answer in (found, fetched):
            assert answer.status == 400 and answer.fault_subcode() == "wsse:InvalidSecurity"


def test_xca_i_in_the_federation_takes_images_only_under_an_assertion_the_region_trusts(
    federation: SecureXca,
) -> None:
    """RAD-69 to FR's Initiating Imaging Gateway, RAD-75 to the study's region (which requires XUA), RAD-69 at
    its PACS: with FR's NCP assertion every instance arrives; without, the region refuses (unavailable)."""
    study = next(
        s for s in federation.fr.data.studies if len({x.retrieve_location_uid for x in s.series}) == 1
    )
    region = federation.region_of(study.study_instance_uid)
    home = f"urn:oid:{federation.fed.topology.country('FR').community_of(region)}"
    documents = tuple(
        DocumentRequest(
            study.study_instance_uid, s.series_instance_uid, home, s.retrieve_location_uid, i.sop_instance_uid
        )
        for s in study.series
        for i in s.instances
    )
    url = federation.fed.plan.endpoints["FR"].registries["xca"].removesuffix("/fhir") + INITIATING_PATH
    header = security_header(federation.fr_ncp().issue(CONTEXT, audience=AUDIENCE))
    with httpx.Client(timeout=60) as http:
        refused = send(http, url, request(documents), RAD69_ACTION, None)
        answer = send(http, url, request(documents), RAD69_ACTION, header)
    assert {e["errorCode"] for e in refused.errors()} == {"XDSUnavailableCommunity"} and not refused.parts
    assert answer.status == 200 and answer.status_value == SUCCESS, answer.errors()
    expected = {str(ds.SOPInstanceUID): to_part10(ds) for ds in federation.fr.data.instances(study)}
    assert answer.documents() == expected
    rad75 = [(r.outcome, r.user) for r in federation.audit(region) if r.transaction == "RAD-75"]
    assert rad75 == [("4", None), ("0", "dr-curie")]
