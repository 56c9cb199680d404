"""The MHD facade of an XDS registry (ncp.registry.xds.mhd): FHIR in front, an XDS Document Consumer behind.

A recorder on the wire between the facade and the XDS.b registry + repository keeps every SOAP message
both ways: what the facade sends is validated against the official schemas, and the recorder injects
the XDS-side faults (a busy registry, a SOAP Fault, nothing listening). The documents are published
with ITI-41 straight to the XDS role, as an Imaging Document Source would.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from xds_support import (
    ALICE,
    CT,
    CT_REPORT,
    HCID,
    MR,
    PATIENT_ISSUER,
    REPOSITORY,
    assert_valid,
    post,
    study_documents,
    submission_request,
)

from ncp.codes import DCM, SCT
from ncp.mhd import HCID_EXTENSION
from ncp.registry.index import normalize_identifier
from ncp.registry.xds import iti18, iti41, iti43
from ncp.registry.xds.app import create_xds_app
from ncp.registry.xds.ebrim import RIM, RS
from ncp.registry.xds.mhd import BridgeSettings, create_xds_mhd_app
from ncp.registry.xds.settings import XdsSettings
from ncp.soapcore import NS

PATIENT = f"urn:oid:{PATIENT_ISSUER}|{ALICE.id}"
SOAP_BODY = f"{{{NS['s']}}}Body"
BUSY = f"""<query:AdhocQueryResponse xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
 xmlns:rs="{RS}" status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure">
 <rs:RegistryErrorList><rs:RegistryError errorCode="XDSRegistryBusy" codeContext="try later"
 severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"/></rs:RegistryErrorList>
</query:AdhocQueryResponse>"""
RECEIVER_FAULT = f"""<s:Fault xmlns:s="{NS["s"]}"><s:Code><s:Value>s:Receiver</s:Value></s:Code>
<s:Reason><s:Text xml:lang="en">down</s:Text></s:Reason></s:Fault>"""


@dataclass
class Wire:
    """What crossed the wire between the facade and the XDS role, and the fault to answer instead."""

    requests: list[tuple[str, bytes]] = field(default_factory=list)  # (content type, body)
    fault: Callable[[], Response] | None = None

    def actions_and_bodies(self) -> list[tuple[str, etree._Element]]:
        out = []
        for content_type, body in self.requests:
            assert content_type.startswith("application/soap+xml"), content_type
            envelope = etree.fromstring(body)
            action = envelope.findtext(f"{{{NS['s']}}}Header/{{{NS['wsa']}}}Action")
            out.append((str(action), envelope.find(SOAP_BODY)[0]))  # type: ignore[index]
        return out

    def stored_query_ids(self) -> list[str]:
        return [
            str(body.find(f"{{{RIM}}}AdhocQuery").get("id"))  # type: ignore[union-attr]
            for action, body in self.actions_and_bodies()
            if action == iti18.ACTION
        ]


def recorder(target: str, wire: Wire) -> Starlette:
    """Forwards every POST to ``target`` (same path), keeping the request; or answers ``wire.fault``."""

    async def forward(request: Request) -> Response:
        body = await request.body()
        wire.requests.append((request.headers.get("content-type", ""), body))
        if wire.fault is not None:
            return wire.fault()
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                f"{target}{request.url.path}",
                content=body,
                headers={"content-type": request.headers["content-type"]},
            )
        return Response(
            answer.content, answer.status_code, headers={"content-type": answer.headers["content-type"]}
        )

    return Starlette(routes=[Route("/{path:path}", forward, methods=["POST"])])


@dataclass
class Bridge:
    fhir: str
    wire: Wire
    documents: dict[str, bytes]  # uniqueId -> bytes as published


def _settings(tmp_path: Path, name: str) -> XdsSettings:
    return XdsSettings(tmp_path / name / "xds.sqlite", HCID, REPOSITORY, PATIENT_ISSUER)


@pytest.fixture
def bridge(serve: Callable[..., str], tmp_path: Path) -> Bridge:
    """An XDS role holding a CT (manifest + report) and an MR of Alice, a recorder in front of it, and the
    facade asking the recorder (its own mounted XDS role stays empty: it is not the one asked)."""
    xds = serve(create_xds_app(_settings(tmp_path, "source")))
    documents: dict[str, bytes] = {}
    with httpx.Client(timeout=30) as http:
        for docs in (study_documents(CT, CT_REPORT), study_documents(MR)):
            body, parts = submission_request(docs)
            answer = post(http, f"{xds}/xds/repository", body, iti41.ACTION, parts)
            assert answer.body.get("status", "").endswith(":Success"), answer.errors()
            documents |= {entry.unique_id: data for entry, data in docs}
    wire = Wire()
    relay = serve(recorder(xds, wire))
    facade = BridgeSettings("http://facade.example/fhir", f"{relay}/xds/registry", f"{relay}/xds/repository")
    fhir = serve(create_xds_mhd_app(_settings(tmp_path, "facade"), facade)) + "/fhir"
    return Bridge(fhir, wire, documents)


def search(bridge: Bridge, **params: str) -> dict[str, Any]:
    response = httpx.get(
        f"{bridge.fhir}/DocumentReference",
        params={"patient.identifier": PATIENT, "status": "current", **params},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def study_uids(bundle: dict[str, Any]) -> list[str]:
    return sorted(
        normalize_identifier("", r["identifier"]["value"])[1]
        for e in bundle.get("entry", [])
        for r in e["resource"]["context"]["related"]
        if r["type"] == "ImagingStudy"
    )


# -- ITI-67 onto ITI-18 ------------------------------------------------------------------------------
def test_a_patient_search_is_find_documents_and_answers_mhd_document_references(bridge: Bridge) -> None:
    bundle = search(bridge)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    assert bundle["total"] == 3  # CT manifest + report, MR manifest
    manifest = next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["masterIdentifier"]["value"].endswith(CT.manifest_sop_instance_uid)
    )
    assert manifest["status"] == "current"
    assert manifest["subject"]["identifier"] == {"system": f"urn:oid:{PATIENT_ISSUER}", "value": ALICE.id}
    assert {"url": HCID_EXTENSION, "valueOid": f"urn:oid:{HCID}"} in manifest["extension"]
    attachment = manifest["content"][0]["attachment"]
    assert attachment["contentType"] == "application/dicom"
    assert attachment["url"] == f"http://facade.example/fhir/Binary/{manifest['id']}"
    events = {(c["system"], c["code"]) for ev in manifest["context"]["event"] for c in ev["coding"]}
    assert {(DCM, "CT"), (SCT, CT.anatomical_region.code)} <= events
    assert bridge.wire.stored_query_ids() == [iti18.FIND_DOCUMENTS]


def test_level_one_keys_are_pushed_into_the_event_code_list(bridge: Bridge) -> None:
    bundle = search(
        bridge, modality=f"{DCM}|MR", **{"anatomical-region": f"{SCT}|{MR.anatomical_region.code}"}
    )
    assert study_uids(bundle) == [MR.study_instance_uid]
    ((_, query),) = bridge.wire.actions_and_bodies()
    slots = [s for s in query.iter(f"{{{RIM}}}Slot") if s.get("name") == "$XDSDocumentEntryEventCodeList"]
    assert len(slots) == 2  # modality AND region, each a slot (ITI TF-2a 3.18.4.1.2.3.6)


def test_targeted_keys_are_find_documents_by_reference_id(bridge: Bridge) -> None:
    by_study = search(
        bridge, **{"study-instance-uid": CT.study_instance_uid}, type="http://loinc.org|18748-4"
    )
    assert study_uids(by_study) == [CT.study_instance_uid]
    accession = MR.requests[1]
    by_accession = search(
        bridge, **{"accession-number": f"urn:oid:{accession.accession_issuer}|{accession.accession_number}"}
    )
    assert study_uids(by_accession) == [MR.study_instance_uid]
    assert bridge.wire.stored_query_ids() == [iti18.FIND_DOCUMENTS_BY_REFERENCE_ID] * 2


def test_what_xds_cannot_say_is_filtered_on_the_mapped_resources(bridge: Bridge) -> None:
    """Content type, document identifier and dates are not stored-query parameters here: the facade asks
    for the patient's documents and applies every parameter to the DocumentReferences, with the MHD
    registry's semantics; paging is the facade's."""
    assert search(bridge, contenttype="application/pdf")["total"] == 1
    kos_uid = f"urn:ietf:rfc:3986|urn:oid:{CT.manifest_sop_instance_uid}"
    assert study_uids(search(bridge, identifier=kos_uid)) == [CT.study_instance_uid]
    assert search(bridge, period="2024-01-15")["total"] == 3
    assert search(bridge, period="lt2024-01-15")["total"] == 0
    paged = search(bridge, _count="2")
    assert len(paged["entry"]) == 2 and paged["total"] == 3
    assert any(link["relation"] == "next" for link in paged["link"])
    for _, query in bridge.wire.actions_and_bodies():
        slots = {s.get("name") for s in query.iter(f"{{{RIM}}}Slot")}
        assert slots == {"$XDSDocumentEntryPatientId", "$XDSDocumentEntryStatus"}


# -- ITI-68 onto ITI-43 ------------------------------------------------------------------------------
def test_binary_is_get_documents_then_retrieve_document_set_byte_identical(bridge: Bridge) -> None:
    for entry in search(bridge)["entry"]:
        resource = entry["resource"]
        unique_id = resource["masterIdentifier"]["value"].removeprefix("urn:oid:")
        content_type = resource["content"][0]["attachment"]["contentType"]
        response = httpx.get(f"{bridge.fhir}/Binary/{resource['id']}", headers={"Accept": content_type})
        assert response.status_code == 200
        assert response.headers["content-type"] == content_type
        assert (
            hashlib.sha256(response.content).hexdigest()
            == hashlib.sha256(bridge.documents[unique_id]).hexdigest()
        )
    actions = [action for action, _ in bridge.wire.actions_and_bodies()]
    assert actions == [iti18.ACTION] + [iti18.ACTION, iti43.ACTION] * 3
    assert bridge.wire.stored_query_ids()[1:] == [iti18.GET_DOCUMENTS] * 3


def test_the_document_reference_is_read_by_its_entry_uuid(bridge: Bridge) -> None:
    found = search(bridge, **{"study-instance-uid": MR.study_instance_uid})["entry"][0]["resource"]
    read = httpx.get(f"{bridge.fhir}/DocumentReference/{found['id']}")
    assert read.status_code == 200
    assert read.json() == found
    assert {"use": "official", "system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{found['id']}"} in found[
        "identifier"
    ]


def test_accept_and_unknown_ids_are_answered_as_the_mhd_registry_does(bridge: Bridge) -> None:
    manifest = search(bridge, modality=f"{DCM}|CT", type="http://loinc.org|18748-4")["entry"][0]["resource"]
    refused = httpx.get(f"{bridge.fhir}/Binary/{manifest['id']}", headers={"Accept": "application/pdf"})
    assert refused.status_code == 406 and refused.json()["resourceType"] == "OperationOutcome"
    for unknown in ("00000000-0000-0000-0000-000000000000", "not-an-entry-uuid"):
        for path in ("Binary", "DocumentReference"):
            response = httpx.get(f"{bridge.fhir}/{path}/{unknown}")
            assert response.status_code == 404, (path, unknown)
            assert response.json()["resourceType"] == "OperationOutcome"


# -- PDQm from what XDS knows ------------------------------------------------------------------------
def test_a_patient_is_known_from_its_documents_with_the_source_patient_info(bridge: Bridge) -> None:
    found = httpx.get(f"{bridge.fhir}/Patient", params={"identifier": PATIENT}).json()
    assert found["total"] == 1
    patient = found["entry"][0]["resource"]
    assert patient["identifier"][0]["value"] == ALICE.id
    assert patient["name"] == [{"family": ALICE.family, "given": [ALICE.given]}]
    assert patient["birthDate"] == "1970-01-02" and patient["gender"] == "female"
    nobody = httpx.get(f"{bridge.fhir}/Patient", params={"identifier": f"urn:oid:{PATIENT_ISSUER}|NOBODY"})
    assert nobody.status_code == 200 and nobody.json()["total"] == 0


# -- the messages on the wire ------------------------------------------------------------------------
def test_every_message_the_facade_sends_validates_against_the_official_schemas(
    bridge: Bridge, schema: etree.XMLSchema
) -> None:
    search(bridge, **{"study-instance-uid": CT.study_instance_uid})
    entry = search(bridge, modality=f"{DCM}|CT")["entry"][0]["resource"]
    httpx.get(f"{bridge.fhir}/Binary/{entry['id']}")
    httpx.get(f"{bridge.fhir}/Patient", params={"identifier": PATIENT})
    sent = bridge.wire.actions_and_bodies()
    assert {action for action, _ in sent} == {iti18.ACTION, iti43.ACTION}
    for _, body in sent:
        assert_valid(schema, body)


# -- faults of the XDS side and hostile input: an OperationOutcome, never a 500 ----------------------
def test_xds_faults_become_operation_outcomes(bridge: Bridge) -> None:
    cases: list[tuple[Callable[[], Response], int]] = [
        (lambda: _soap(BUSY), 503),
        (lambda: _soap(RECEIVER_FAULT, 500), 502),
        (lambda: Response(b"<html>proxy error</html>", 502, media_type="text/html"), 502),
    ]
    for fault, status in cases:
        bridge.wire.fault = fault
        params = {"patient.identifier": PATIENT, "status": "current"}
        response = httpx.get(f"{bridge.fhir}/DocumentReference", params=params)
        assert response.status_code == status, response.text
        assert response.json()["resourceType"] == "OperationOutcome"


def test_an_unreachable_registry_is_502(serve: Callable[..., str], tmp_path: Path) -> None:
    closed = "http://127.0.0.1:9"  # discard: nothing answers
    settings = BridgeSettings(
        "http://facade.example/fhir", f"{closed}/xds/registry", f"{closed}/xds/repository"
    )
    fhir = serve(create_xds_mhd_app(_settings(tmp_path, "alone"), settings)) + "/fhir"
    response = httpx.get(
        f"{fhir}/DocumentReference", params={"patient.identifier": PATIENT, "status": "current"}
    )
    assert response.status_code == 502
    assert "unreachable" in response.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    "params",
    [
        {"status": "current"},  # no patient
        {"patient.identifier": ALICE.id, "status": "current"},  # no issuer: XDS needs id^^^&issuer&ISO
        {"patient": "Patient/pat-1", "status": "current"},  # a reference: XDS knows no Patient ids
        {"patient.identifier": PATIENT, "status": "current", "colour": "red"},  # unknown parameter
        {"patient.identifier": f"urn:oid:{PATIENT_ISSUER}|A^B", "status": "current"},  # HL7 delimiters
        {"patient.identifier": PATIENT, "status": "current", "_count": "-1"},
    ],
)
def test_hostile_searches_are_400_and_reach_no_registry(bridge: Bridge, params: dict[str, str]) -> None:
    response = httpx.get(f"{bridge.fhir}/DocumentReference", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert bridge.wire.requests == []


def _soap(body: str, status: int = 200) -> Response:
    envelope = (
        f'<s:Envelope xmlns:s="{NS["s"]}" xmlns:wsa="{NS["wsa"]}"><s:Header>'
        f"<wsa:Action>{iti18.RESPONSE_ACTION}</wsa:Action></s:Header><s:Body>{body}</s:Body></s:Envelope>"
    )
    return Response(envelope.encode(), status, media_type="application/soap+xml")


def test_what_the_mhd_registry_refuses_the_facade_refuses_alike(bridge: Bridge) -> None:
    search = {"patient.identifier": PATIENT, "status": "current"}
    cases = [
        ("GET", "DocumentReference", {**search, "_format": "xml"}, None, 406),
        ("POST", "DocumentReference/_search", {}, b"<xml/>", 415),
        ("PUT", "DocumentReference", search, None, 405),
        ("GET", "Patient", {"family": "Martin"}, None, 400),
        ("GET", "Patient/pat-1", {}, None, 404),
        ("GET", "Binary/a.b", {}, None, 404),
        ("GET", "Library", {}, None, 404),
    ]
    for method, path, params, body, status in cases:
        response = httpx.request(method, f"{bridge.fhir}/{path}", params=params, content=body)
        assert response.status_code == status, (method, path, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
    assert bridge.wire.requests == []
    form = httpx.post(f"{bridge.fhir}/DocumentReference/_search", data=search)
    assert form.status_code == 200 and form.json()["total"] == 3
