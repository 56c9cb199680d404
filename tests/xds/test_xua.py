"""XUA (ITI-40): SAML 2.0 assertions in WS-Security on the national SOAP legs.

The assertions NCP-A issues are SAML 2.0 (official OASIS schema), carried in a WSS 1.0/1.1 ``wsse:Security``
header (official OASIS schema), and their XML signature verifies with xmlsec1, an implementation that
shares nothing with signxml. An XDS role that names XUA trust anchors takes no ITI-18/41/43 message
without a valid one: missing, forged, expired, misaddressed, foreign, wrapped are SOAP Faults with the
WSS 1.1 subcode, nothing is stored, and the audit trail says who was refused. In the secure builtin:xds
federation every national SOAP message carries the HCP and patient of the cross-border request.
"""

from __future__ import annotations

import asyncio
import copy
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from lxml import etree
from xds_support import (
    ALICE,
    CT,
    HCID,
    PATIENT_ISSUER,
    REPOSITORY,
    SCHEMAS,
    patient_params,
    read_answer,
    study_documents,
    submission_request,
    unique_ids,
)

from ncp.consumer.client import ImagingConsumer
from ncp.federation import Federation
from ncp.publish import Published, seed_federation
from ncp.registry.xds import iti18, iti41, iti43
from ncp.registry.xds.mhd import BridgeSettings, create_xds_mhd_app
from ncp.registry.xds.settings import XdsSettings
from ncp.security.audit import AuditStore
from ncp.security.pki import FederationPki
from ncp.security.tokens import PatientRef
from ncp.security.xua import (
    HEADER,
    NS,
    PURPOSE_OF_USE,
    RESOURCE_ID,
    ROLE,
    SUBJECT_ID,
    XuaContext,
    XuaIssuer,
    XuaVerifier,
    national_audience,
    security_header,
)
from ncp.soapcore import soap_message

FR_NCP = "urn:xcwado:ncp:FR"
AUDIENCE = national_audience("FR")
SAML, DS = NS["saml"], NS["ds"]
CONTEXT = XuaContext(
    subject="dr-curie",
    role="221",
    organisation="Hôpital Test",
    organisation_id="2.999.250.9",
    facility="Hospital",
    purpose_of_use="TREATMENT",
    patient=PatientRef(PATIENT_ISSUER, ALICE.id),
)
XSPA_NAMES = {
    SUBJECT_ID,
    "urn:oasis:names:tc:xspa:1.0:subject:organization",
    "urn:oasis:names:tc:xspa:1.0:subject:organization-id",
    ROLE,
    PURPOSE_OF_USE,
    RESOURCE_ID,
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> FederationPki:
    return FederationPki.create(tmp_path_factory.mktemp("pki"), ["FR", "AT"])


def signer(
    pki: FederationPki, country: str, issuer: str = FR_NCP, clock: Callable[[], float] = time.time
) -> XuaIssuer:
    """``country``'s NCP signing as ``issuer`` (its key and certificate from the federation PKI)."""
    pair = pki.client_credentials(country)
    return XuaIssuer.from_files(issuer, pair.key, pair.cert, clock=clock)


@pytest.fixture(scope="module")
def fr(pki: FederationPki) -> XuaIssuer:
    return signer(pki, "FR")


def saml_schema() -> etree.XMLSchema:
    """OASIS SAML 2.0 assertion and WSS 1.0 secext schemas (with XML-DSig, XML-Enc, WSS utility)."""
    folder = SCHEMAS / "schema" / "xua"
    driver = (
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">'
        f'<xs:import namespace="{SAML}" schemaLocation="saml-schema-assertion-2.0.xsd"/>'
        f'<xs:import namespace="{NS["wsse"]}" schemaLocation="oasis-200401-wss-wssecurity-secext-1.0.xsd"/>'
        "</xs:schema>"
    )
    return etree.XMLSchema(etree.XML(driver.encode(), base_url=str(folder / "driver.xsd")))


# -- the assertion ------------------------------------------------------------------------------------
def test_an_assertion_is_saml_2_0_in_a_wss_header_with_the_ehdsi_attributes(fr: XuaIssuer) -> None:
    schema = saml_schema()
    assertion = fr.issue(CONTEXT, audience=AUDIENCE)
    assert schema.validate(assertion), schema.error_log
    header = security_header(copy.deepcopy(assertion))
    assert schema.validate(header), schema.error_log
    names = {a.get("Name") for a in assertion.iter(f"{{{SAML}}}Attribute")}
    assert names >= XSPA_NAMES
    assert assertion.findtext(f"{{{SAML}}}Subject/{{{SAML}}}NameID") == "dr-curie"
    assert assertion.findtext(f".//{{{SAML}}}Audience") == AUDIENCE
    resource = assertion.find(f".//{{{SAML}}}Attribute[@Name='{RESOURCE_ID}']/{{{SAML}}}AttributeValue")
    assert resource is not None and resource.text == f"{ALICE.id}^^^&{PATIENT_ISSUER}&ISO"
    signature = assertion[1]  # SAML core 5.4.1: right after the Issuer, enveloped, the assertion's ID
    assert signature.tag == f"{{{DS}}}Signature"
    assert signature.find(f".//{{{DS}}}Reference").get("URI") == f"#{assertion.get('ID')}"  # type: ignore[union-attr]
    algorithms = {e.get("Algorithm") for e in signature.iter() if e.get("Algorithm")}
    assert "http://www.w3.org/2001/10/xml-exc-c14n#" in algorithms
    assert "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256" in algorithms


def xmlsec1_verifies(pki: FederationPki, document: bytes, tmp_path: Path) -> bool:
    xmlsec1 = shutil.which("xmlsec1")
    assert xmlsec1, "xmlsec1 (Debian package xmlsec1, `make system-deps`) is the independent verifier"
    path = tmp_path / "assertion.xml"
    path.write_bytes(document)
    command = [xmlsec1, "--verify", "--trusted-pem", str(pki.ca_file)]
    command += ["--id-attr:ID", f"{SAML}:Assertion", str(path)]
    return subprocess.run(command, capture_output=True, timeout=30).returncode == 0


def test_xmlsec1_verifies_the_signature_and_refuses_a_changed_assertion(
    pki: FederationPki, fr: XuaIssuer, tmp_path: Path
) -> None:
    assertion = fr.issue(CONTEXT, audience=AUDIENCE)
    assert xmlsec1_verifies(pki, etree.tostring(assertion), tmp_path)
    assertion.find(f".//{{{SAML}}}NameID").text = "dr-mallory"  # type: ignore[union-attr]
    assert not xmlsec1_verifies(pki, etree.tostring(assertion), tmp_path)


def test_the_verifier_gives_back_the_context_that_was_signed(pki: FederationPki, fr: XuaIssuer) -> None:
    verifier = XuaVerifier.from_files({FR_NCP: pki.client_credentials("FR").cert}, AUDIENCE)
    verified = verifier.verify(security_header(fr.issue(CONTEXT, audience=AUDIENCE)))
    assert verified.context == CONTEXT and verified.issuer == FR_NCP


# -- the XDS role requiring XUA -------------------------------------------------------------------------
@dataclass
class Secured:
    base: str
    audit: Path

    def health(self, http: httpx.Client) -> dict[str, object]:
        answer: dict[str, object] = http.get(f"{self.base}/health").json()
        return answer


@pytest.fixture
def secured(start_xds: Callable[..., str], pki: FederationPki, tmp_path: Path) -> Secured:
    audit = tmp_path / "xds-audit.sqlite"
    trust = ((FR_NCP, pki.client_credentials("FR").cert),)
    return Secured(start_xds(xua_trust=trust, xua_audience=AUDIENCE, audit_db=audit), audit)


def send(
    http: httpx.Client, url: str, body: etree._Element, action: str, security: etree._Element | None
) -> httpx.Response:
    message = soap_message(body, action=action, to=url, security=security)
    return http.post(url, content=message.body, headers={"content-type": message.content_type})


def submission() -> etree._Element:
    body, parts = submission_request(study_documents(CT), mtom=False)
    assert not parts
    return body


def test_a_message_with_a_valid_assertion_is_served_and_its_user_audited(
    http: httpx.Client, secured: Secured, fr: XuaIssuer
) -> None:
    def header() -> etree._Element:
        return security_header(fr.issue(CONTEXT, audience=AUDIENCE))

    stored = send(http, f"{secured.base}/xds/repository", submission(), iti41.ACTION, header())
    assert stored.status_code == 200 and read_answer(stored).body.get("status", "").endswith(":Success")
    query = iti18.stored_query_request(iti18.FIND_DOCUMENTS, patient_params())
    found = read_answer(send(http, f"{secured.base}/xds/registry", query, iti18.ACTION, header()))
    assert unique_ids(found) == [CT.manifest_sop_instance_uid]
    request = iti43.retrieve_request([(None, REPOSITORY, CT.manifest_sop_instance_uid)])
    retrieved = send(http, f"{secured.base}/xds/repository", request, iti43.ACTION, header())
    assert retrieved.status_code == 200 and read_answer(retrieved).parts
    records = AuditStore(secured.audit).records()
    assert [r.transaction for r in records] == ["ITI-41", "ITI-18", "ITI-43"]
    assert {(r.outcome, r.user, r.user_role, r.purpose_of_use, r.patient) for r in records} == {
        ("0", "dr-curie", "221", "TREATMENT", f"{PATIENT_ISSUER}|{ALICE.id}")
    }


def _forged(fr: XuaIssuer, pki: FederationPki) -> etree._Element:
    assertion = fr.issue(CONTEXT, audience=AUDIENCE)
    value = assertion.find(f".//{{{SAML}}}Attribute[@Name='{RESOURCE_ID}']/{{{SAML}}}AttributeValue")
    assert value is not None
    value.text = f"FR-0002^^^&{PATIENT_ISSUER}&ISO"  # another patient, after signing
    return security_header(assertion)


def _wrapped(fr: XuaIssuer, pki: FederationPki) -> etree._Element:
    """Signature wrapping: the genuine signed assertion plus an unsigned one naming another patient."""
    genuine = fr.issue(CONTEXT, audience=AUDIENCE)
    evil = copy.deepcopy(genuine)
    evil.remove(evil[1])
    evil.set("ID", "_evil")
    header = security_header(evil)
    header.append(genuine)
    return header


REFUSALS: dict[str, tuple[Callable[[XuaIssuer, FederationPki], etree._Element | None], str]] = {
    "missing": (lambda fr, pki: None, "wsse:InvalidSecurity"),
    "empty": (lambda fr, pki: etree.Element(f"{{{NS['wsse']}}}Security"), "wsse:InvalidSecurity"),
    "forged": (_forged, "wsse:FailedCheck"),
    "expired": (
        lambda fr, pki: security_header(
            signer(pki, "FR", clock=lambda: time.time() - 3600).issue(CONTEXT, audience=AUDIENCE)
        ),
        "wsse:FailedAuthentication",
    ),
    "not yet valid": (
        lambda fr, pki: security_header(
            signer(pki, "FR", clock=lambda: time.time() + 3600).issue(CONTEXT, audience=AUDIENCE)
        ),
        "wsse:FailedAuthentication",
    ),
    "wrong audience": (
        lambda fr, pki: security_header(fr.issue(CONTEXT, audience=national_audience("AT"))),
        "wsse:FailedAuthentication",
    ),
    "untrusted signer": (
        lambda fr, pki: security_header(signer(pki, "AT").issue(CONTEXT, audience=AUDIENCE)),
        "wsse:FailedAuthentication",
    ),
    "untrusted issuer": (
        lambda fr, pki: security_header(
            signer(pki, "AT", "urn:xcwado:ncp:AT").issue(CONTEXT, audience=AUDIENCE)
        ),
        "wsse:FailedAuthentication",
    ),
    "signature wrapping": (_wrapped, "wsse:InvalidSecurity"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_assertion_is_a_wss_fault_and_nothing_is_stored(
    http: httpx.Client, secured: Secured, fr: XuaIssuer, pki: FederationPki, case: str
) -> None:
    make, subcode = REFUSALS[case]
    before = secured.health(http)
    response = send(http, f"{secured.base}/xds/repository", submission(), iti41.ACTION, make(fr, pki))
    assert response.status_code == 400
    answer = read_answer(response)
    assert answer.body.tag == "{http://www.w3.org/2003/05/soap-envelope}Fault"
    value = answer.fault_subcode()
    assert value is not None
    prefix, _, local = value.partition(":")
    assert answer.body.nsmap.get(prefix) == NS["wsse"] or answer.envelope.nsmap.get(prefix) == NS["wsse"]
    assert f"wsse:{local}" == subcode
    assert secured.health(http) == before
    (record,) = AuditStore(secured.audit).records()
    assert (record.transaction, record.outcome, record.status) == ("ITI-41", "4", 400) and record.detail


def test_queries_and_retrievals_need_an_assertion_too(http: httpx.Client, secured: Secured) -> None:
    query = iti18.stored_query_request(iti18.FIND_DOCUMENTS, patient_params())
    request = iti43.retrieve_request([(None, REPOSITORY, CT.manifest_sop_instance_uid)])
    for url, body, action in (
        (f"{secured.base}/xds/registry", query, iti18.ACTION),
        (f"{secured.base}/xds/repository", request, iti43.ACTION),
    ):
        answer = read_answer(send(http, url, body, action, None))
        assert answer.status == 400 and answer.fault_subcode() == "wsse:InvalidSecurity"


def test_without_trust_anchors_a_must_understand_security_header_is_still_not_understood(
    http: httpx.Client, xds: str, fr: XuaIssuer
) -> None:
    header = security_header(fr.issue(CONTEXT, audience=AUDIENCE))
    answer = read_answer(send(http, f"{xds}/xds/repository", submission(), iti41.ACTION, header))
    code = answer.body.findtext("{http://www.w3.org/2003/05/soap-envelope}Code/{*}Value")
    assert answer.status == 400 and code == "s:MustUnderstand"
    assert http.get(f"{xds}/health").json()["documents"] == 0


# -- the MHD facade carries it ---------------------------------------------------------------------
def test_the_facade_puts_the_callers_assertion_into_every_soap_message_it_sends(
    http: httpx.Client, secured: Secured, fr: XuaIssuer, serve: Callable[..., str], tmp_path: Path
) -> None:
    stored = send(
        http,
        f"{secured.base}/xds/repository",
        submission(),
        iti41.ACTION,
        security_header(fr.issue(CONTEXT, audience=AUDIENCE)),
    )
    assert read_answer(stored).body.get("status", "").endswith(":Success")
    own = XdsSettings(tmp_path / "facade" / "xds.sqlite", HCID, REPOSITORY, PATIENT_ISSUER)
    bridge = BridgeSettings(
        "http://facade.example/fhir", f"{secured.base}/xds/registry", f"{secured.base}/xds/repository"
    )
    fhir = serve(create_xds_mhd_app(own, bridge)) + "/fhir"
    search = {"patient.identifier": f"urn:oid:{PATIENT_ISSUER}|{ALICE.id}", "status": "current"}
    with_xua = {HEADER: fr.header(CONTEXT, audience=AUDIENCE)}
    bundle = http.get(f"{fhir}/DocumentReference", params=search, headers=with_xua)
    assert bundle.status_code == 200 and bundle.json()["total"] == 1
    doc_id = bundle.json()["entry"][0]["resource"]["id"]
    binary = http.get(f"{fhir}/Binary/{doc_id}", headers={**with_xua, "accept": "application/dicom"})
    assert binary.status_code == 200 and binary.content == study_documents(CT)[0][1]
    assert [r.transaction for r in AuditStore(secured.audit).records()] == [
        "ITI-41",
        "ITI-18",
        "ITI-18",
        "ITI-43",
    ]
    # without the header the XDS role refuses (502 at the facade); an unreadable one is the caller's 400
    assert http.get(f"{fhir}/DocumentReference", params=search).status_code == 502
    garbage = http.get(f"{fhir}/DocumentReference", params=search, headers={HEADER: "PHNhbWw+"})
    assert garbage.status_code == 400 and garbage.json()["resourceType"] == "OperationOutcome"


# -- the federation ---------------------------------------------------------------------------------
@dataclass
class XuaFederation:
    fed: Federation
    fr: Published

    @property
    def audit(self) -> AuditStore:
        """The audit trail of France's XDS role (ncp.app: ``<run>/FR/xds-<registry>-audit.sqlite``)."""
        return AuditStore(self.fed.plan.run_dir / "FR" / "xds-national-audit.sqlite")


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XuaFederation]:
    run_dir = tmp_path_factory.mktemp("xua-federation")
    with Federation("builtin:xds", run_dir, mode="thread", secure=True) as fed:
        yield XuaFederation(fed, asyncio.run(seed_federation(fed.topology, fed.plan.endpoints))["FR"])


def test_every_national_soap_message_of_a_cross_border_request_carries_the_hcp_and_patient(
    federation: XuaFederation,
) -> None:
    study = federation.fr.data.studies[0]
    patient = study.patient
    consumer = ImagingConsumer(federation.fed.plan.endpoints["AT"].gateway)
    consumer.authenticate(subject="dr-xua")
    consumer.identify(patient.issuer, patient.id)
    consumer.open_treatment_context(patient.issuer, patient.id)
    found = consumer.find(patient.issuer, patient.id, study_uid=study.study_instance_uid, kind="manifest")
    assert consumer.retrieve_document(found[0], "application/dicom")
    national = [r for r in federation.audit.records() if r.transaction in ("ITI-18", "ITI-43")]
    assert {r.transaction for r in national} == {"ITI-18", "ITI-43"}
    assert {(r.outcome, r.user, r.user_issuer, r.user_role) for r in national} == {
        ("0", "dr-xua", FR_NCP, "2211")
    }
    # identification (ITI-78) runs before any treatment context: its ITI-18 names the HCP only
    assert {r.patient for r in national} == {None, f"{patient.issuer}|{patient.id}"}
    assert all(r.purpose_of_use == "TREATMENT" for r in national if r.patient)


def test_the_national_xds_role_of_the_federation_refuses_a_message_without_xua(
    federation: XuaFederation,
) -> None:
    seeded = [r for r in federation.audit.records() if r.transaction == "ITI-41"]
    assert seeded and {(r.outcome, r.user) for r in seeded} == {("0", None)}  # the system publisher
    registry = federation.fed.plan.endpoints["FR"].registries["national"].removesuffix("/fhir")
    query = iti18.stored_query_request(iti18.FIND_DOCUMENTS, patient_params())
    with httpx.Client(timeout=30) as http:
        answer = read_answer(send(http, f"{registry}/xds/registry", query, iti18.ACTION, None))
    assert answer.status == 400 and answer.fault_subcode() == "wsse:InvalidSecurity"
