"""XCA-I over real HTTP: consumer --RAD-69--> Initiating Imaging Gateway --RAD-75--> Responding Imaging
Gateway (one per community) --RAD-69--> the region's PACS. Images arrive byte-identical, errors carry
the right codes and locations, a region down is reported per document, a source failing mid-stream
reaches the consumer as a broken message, and hostile input gets Faults."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pydicom
import pytest
import zeep
from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from xcai_support import (
    DE_HCID,
    DE_RLUID,
    FAILURE,
    FR_HCID,
    FR_RLUID,
    IG_HCID,
    PARTIAL,
    RLE,
    SUCCESS,
    Study,
    request,
)
from xds_support import SCHEMAS, assert_valid, post, post_raw
from zeep.wsa import WsAddressingPlugin

import ncp.pacs.rad69
from ncp.pacs.rad69 import PATH
from ncp.registry.xca.rad75 import (
    INITIATING_PATH,
    RESPONDING_PATH,
    gateway_app,
    initiating_routes,
    responding_routes,
)
from ncp.server import free_port
from ncp.soapcore import envelope_bytes
from ncp.xdsi import (
    RAD69_ACTION,
    RAD75_ACTION,
    RAD75_RESPONSE_ACTION,
    RETRIEVE_RESPONSE_ACTION,
    DocumentRequest,
)

FR = f"urn:oid:{FR_HCID}"
DE = f"urn:oid:{DE_HCID}"
SOAP_FAULT = "{http://www.w3.org/2003/05/soap-envelope}Fault"


@dataclass(frozen=True)
class Xcai:
    ig: str  # the consumer's RAD-69 endpoint
    fr_rg: str  # FR's RAD-75 endpoint
    de_rg: str


@pytest.fixture
def xcai(serve: Callable[..., str], fr_pacs: str, de_pacs: str) -> Xcai:
    fr_rg = serve(gateway_app(responding_routes(FR_HCID, {FR_RLUID: fr_pacs + PATH}))) + RESPONDING_PATH
    de_rg = serve(gateway_app(responding_routes(DE_HCID, {DE_RLUID: de_pacs + PATH}))) + RESPONDING_PATH
    ig = serve(gateway_app(initiating_routes(IG_HCID, {FR_HCID: fr_rg, DE_HCID: de_rg})))
    return Xcai(ig + INITIATING_PATH, fr_rg, de_rg)


def test_studies_of_two_communities_arrive_byte_identical_in_one_answer(
    xcai: Xcai, ct: Study, mr: Study, http: httpx.Client, schema: etree.XMLSchema
) -> None:
    body = request(ct.documents(FR, FR_RLUID) + mr.documents(DE, DE_RLUID))
    answer = post(http, xcai.ig, body, RAD69_ACTION)
    assert answer.status == 200 and answer.header("Action") == RETRIEVE_RESPONSE_ACTION
    assert_valid(schema, answer.body, answer.parts)
    assert answer.status_value == SUCCESS
    assert answer.documents() == {**ct.instances, **mr.instances}
    homes = {
        d.findtext("{urn:ihe:iti:xds-b:2007}DocumentUniqueId"): d.findtext(
            "{urn:ihe:iti:xds-b:2007}HomeCommunityId"
        )
        for d in answer.body.iterfind("{urn:ihe:iti:xds-b:2007}DocumentResponse")
    }
    assert homes == {**dict.fromkeys(ct.instances, FR), **dict.fromkeys(mr.instances, DE)}


def test_the_responding_gateway_answers_rad75_with_its_community_everywhere(
    xcai: Xcai, ct: Study, http: httpx.Client, schema: etree.XMLSchema
) -> None:
    docs = (
        *ct.documents(FR, FR_RLUID),
        DocumentRequest(ct.study, ct.series, FR, FR_RLUID, "2.25.404"),  # the PACS's error (location: uid)
        DocumentRequest(ct.study, ct.series, FR, DE_RLUID, "2.25.405"),  # not a source of this region
        DocumentRequest(ct.study, ct.series, DE, FR_RLUID, "2.25.406"),  # another community
    )
    body = request(docs)
    assert_valid(schema, body)
    answer = post(http, xcai.fr_rg, body, RAD75_ACTION)
    assert answer.header("Action") == RAD75_RESPONSE_ACTION
    assert_valid(schema, answer.body, answer.parts)
    assert answer.status_value == PARTIAL
    assert answer.documents() == ct.instances
    assert answer.document_field("HomeCommunityId") == {FR}
    # RAD75-005: every RegistryError's location is the Responding Gateway's homeCommunityId
    assert sorted((e["errorCode"], e["location"]) for e in answer.errors()) == [
        ("XDSDocumentUniqueIdError", FR),
        ("XDSUnknownCommunity", FR),
        ("XDSUnknownRepositoryId", FR),
    ]


def test_the_initiating_gateway_refuses_missing_and_unknown_communities(
    xcai: Xcai, ct: Study, http: httpx.Client, schema: etree.XMLSchema
) -> None:
    first = next(iter(ct.instances))
    docs = (
        DocumentRequest(ct.study, ct.series, FR, FR_RLUID, first),
        DocumentRequest(ct.study, ct.series, None, FR_RLUID, first),
        DocumentRequest(ct.study, ct.series, "urn:oid:2.999.999", FR_RLUID, first),
    )
    answer = post(http, xcai.ig, request(docs), RAD69_ACTION)
    assert_valid(schema, answer.body, answer.parts)
    assert answer.status_value == PARTIAL
    assert answer.documents() == {first: ct.instances[first]}
    assert [(e["errorCode"], e["location"]) for e in answer.errors()] == [
        ("XDSMissingHomeCommunityId", f"urn:oid:{IG_HCID}"),
        ("XDSUnknownCommunity", f"urn:oid:{IG_HCID}"),
    ]


def test_a_region_down_is_reported_for_its_documents_and_the_others_arrive(
    serve: Callable[..., str], fr_pacs: str, ct: Study, mr: Study, http: httpx.Client
) -> None:
    fr_rg = serve(gateway_app(responding_routes(FR_HCID, {FR_RLUID: fr_pacs + PATH}))) + RESPONDING_PATH
    nobody = f"http://127.0.0.1:{free_port()}{RESPONDING_PATH}"
    ig = serve(gateway_app(initiating_routes(IG_HCID, {FR_HCID: fr_rg, DE_HCID: nobody})))
    answer = post(
        http,
        ig + INITIATING_PATH,
        request(ct.documents(FR, FR_RLUID) + mr.documents(DE, DE_RLUID)),
        RAD69_ACTION,
    )
    assert answer.status_value == PARTIAL
    assert answer.documents() == ct.instances
    assert [e["errorCode"] for e in answer.errors()] == ["XDSUnavailableCommunity"] * len(mr.instances)
    only_down = post(http, ig + INITIATING_PATH, request(mr.documents(DE, DE_RLUID)), RAD69_ACTION)
    assert only_down.status == 200 and only_down.status_value == FAILURE and only_down.parts == {}


def test_a_source_answering_a_soap_fault_is_a_repository_error(
    serve: Callable[..., str], xcai: Xcai, ct: Study, http: httpx.Client
) -> None:
    """The FR gateway's RAD-75 endpoint as a "source": it answers our RAD-69 with a plain SOAP Fault."""
    rg = serve(gateway_app(responding_routes(FR_HCID, {FR_RLUID: xcai.fr_rg}))) + RESPONDING_PATH
    answer = post(http, rg, request(ct.documents(FR, FR_RLUID)), RAD75_ACTION)
    assert answer.status == 200 and answer.status_value == FAILURE and answer.parts == {}
    errors = answer.errors()
    assert {(e["errorCode"], e["location"]) for e in errors} == {("XDSRepositoryError", FR)}
    assert all("SOAP Fault" in e["codeContext"] for e in errors)


@pytest.mark.parametrize("failing_call", [2, 3])
def test_a_source_failing_mid_stream_never_reaches_the_consumer_as_a_short_success(
    xcai: Xcai, ct: Study, http: httpx.Client, monkeypatch: pytest.MonkeyPatch, failing_call: int
) -> None:
    """Fault injection in the PACS: a conversion fails after its answer started (a part is sent once the
    next one is ready). Failing at the 2nd instance, the Responding Gateway breaks off before its first
    part is complete, so the Initiating Gateway, still reading envelopes, answers Failure with an error
    per document; failing at the 3rd, both gateways have sent their status line and the consumer gets a
    truncated message. Either way, never a complete-looking answer with fewer instances."""
    real, calls = ncp.pacs.rad69.transcode, []

    def failing(*args: object) -> bytes:
        calls.append(args)
        if len(calls) == failing_call:
            raise RuntimeError("injected: PACS disk gone")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(ncp.pacs.rad69, "transcode", failing)
    body = request(ct.documents(FR, FR_RLUID), RLE)
    if failing_call == 3:
        with pytest.raises(httpx.RemoteProtocolError):
            http.post(xcai.ig, content=envelope_bytes(body, action=RAD69_ACTION),
                      headers={"content-type": "application/soap+xml"})  # fmt: skip
        return
    answer = post(http, xcai.ig, body, RAD69_ACTION)
    assert answer.status_value == FAILURE and answer.parts == {}
    assert [e["errorCode"] for e in answer.errors()] == ["XDSUnavailableCommunity"] * len(ct.instances)


def test_an_upstream_part_its_envelope_does_not_announce_breaks_the_answer(
    serve: Callable[..., str], ct: Study, http: httpx.Client
) -> None:
    """A lying source (a real server written for the test): announces one part, sends another."""
    sop = next(iter(ct.instances))
    envelope = envelope_bytes(
        etree.fromstring(
            '<xdsb:RetrieveDocumentSetResponse xmlns:xdsb="urn:ihe:iti:xds-b:2007" '
            'xmlns:rs="urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0" xmlns:xop="http://www.w3.org/2004/08/xop/include">'
            f'<rs:RegistryResponse status="{SUCCESS}"/><xdsb:DocumentResponse>'
            f"<xdsb:RepositoryUniqueId>{FR_RLUID}</xdsb:RepositoryUniqueId><xdsb:DocumentUniqueId>{sop}"
            "</xdsb:DocumentUniqueId><xdsb:mimeType>application/dicom</xdsb:mimeType><xdsb:Document>"
            '<xop:Include href="cid:announced@x"/></xdsb:Document></xdsb:DocumentResponse>'
            "</xdsb:RetrieveDocumentSetResponse>"
        ),
        action=RETRIEVE_RESPONSE_ACTION,
    )
    lying = (
        b'--b\r\nContent-Type: application/xop+xml; type="application/soap+xml"\r\n'
        b"Content-ID: <root@x>\r\n\r\n"
        + envelope
        + b"\r\n--b\r\nContent-Type: application/dicom\r\nContent-ID: <other@x>\r\n\r\nDICM\r\n--b--\r\n"
    )

    async def source(request: Request) -> Response:
        content_type = 'multipart/related; type="application/xop+xml"; boundary="b"; start="<root@x>"'
        return Response(lying, headers={"content-type": content_type})

    liar = serve(Starlette(routes=[Route("/rad69", source, methods=["POST"])]))
    rg = serve(gateway_app(responding_routes(FR_HCID, {FR_RLUID: liar + "/rad69"}))) + RESPONDING_PATH
    body = envelope_bytes(request(ct.documents(FR, FR_RLUID)[:1]), action=RAD75_ACTION)
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(rg, content=body, headers={"content-type": "application/soap+xml"})


# -- hostile input -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("where", "action"), [("ig", RAD75_ACTION), ("fr_rg", RAD69_ACTION)])
def test_the_other_gateways_action_is_not_supported(
    xcai: Xcai, ct: Study, http: httpx.Client, where: str, action: str
) -> None:
    answer = post(http, getattr(xcai, where), request(ct.documents(FR, FR_RLUID)), action)
    assert answer.status == 400 and answer.body.tag == SOAP_FAULT
    assert answer.fault_subcode() == "wsa:ActionNotSupported"


@pytest.mark.parametrize("where", ["ig", "fr_rg"])
def test_external_entities_are_never_resolved(xcai: Xcai, http: httpx.Client, where: str) -> None:
    xxe = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>&e;</s:Body></s:Envelope>'
    )
    answer = post_raw(http, getattr(xcai, where), xxe, "application/soap+xml")
    assert answer.status == 400 and answer.body.tag == SOAP_FAULT
    assert b"root:" not in etree.tostring(answer.envelope)


def test_zeep_runs_rad75_against_the_responding_gateway(xcai: Xcai, ct: Study) -> None:
    client = zeep.Client(str(SCHEMAS / "rad75.wsdl"), plugins=[WsAddressingPlugin()])
    try:
        service = client.create_service(
            "{urn:ihe:rad:xdsi-b:2009}RespondingGateway_Binding_Soap12", xcai.fr_rg
        )
        docs = [
            {"HomeCommunityId": FR, "RepositoryUniqueId": FR_RLUID, "DocumentUniqueId": s}
            for s in ct.instances
        ]
        answer = service.RespondingGateway_CrossGatewayRetrieveImagingDocumentSet(
            StudyRequest=[
                {
                    "studyInstanceUID": ct.study,
                    "SeriesRequest": [{"seriesInstanceUID": ct.series, "DocumentRequest": docs}],
                }
            ],
            TransferSyntaxUIDList={"TransferSyntaxUID": ["1.2.840.10008.1.2.1"]},
        )
    finally:
        client.transport.session.close()
    assert answer.RegistryResponse.status == SUCCESS
    got = {d.DocumentUniqueId: d.Document for d in answer.DocumentResponse}
    assert got == ct.instances
    assert {pydicom.dcmread(io.BytesIO(b)).SOPInstanceUID for b in got.values()} == set(ct.instances)
