"""RAD-69 Retrieve Imaging Document Set at the embedded PACS (the Imaging Document Source, XDS-I.b):
every instance byte-identical to WADO-RS, per-document errors, the transfer-syntax rule, a stream cut
when an instance fails after the answer started, Faults for what is not a RAD-69 request, and zeep
driven by IHE's WSDL."""

from __future__ import annotations

import io
from collections.abc import Callable

import httpx
import pydicom
import pytest
import zeep
from lxml import etree
from xcai_support import (
    DE_RLUID,
    EXPLICIT_LE,
    FAILURE,
    FR_HCID,
    FR_RLUID,
    JPEG_BASELINE,
    PARTIAL,
    RLE,
    SUCCESS,
    Study,
    request,
)
from xds_support import SCHEMAS, assert_valid, post, post_raw, read_answer
from zeep.wsa import WsAddressingPlugin

import ncp.pacs.rad69
from ncp.dicom.multipart import MultipartDecoder
from ncp.pacs.rad69 import PATH
from ncp.soapcore import envelope_bytes
from ncp.xdsi import RAD69_ACTION, RAD75_ACTION, RETRIEVE_RESPONSE_ACTION, DocumentRequest


def wado_instances(http: httpx.Client, pacs: str, study: Study) -> dict[str, bytes]:
    """The study by WADO-RS (RAD-107), as stored (``transfer-syntax=*``), by SOP Instance UID."""
    response = http.get(
        f"{pacs}/dicom-web/studies/{study.study}",
        headers={"accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    assert response.status_code == 200
    decoder = MultipartDecoder(response.headers["content-type"])
    parts = decoder.feed(response.content)
    decoder.close()
    return {pydicom.dcmread(io.BytesIO(p.body)).SOPInstanceUID: p.body for p in parts}


def test_a_study_is_retrieved_byte_identical_to_wado_rs(
    fr_pacs: str, ct: Study, http: httpx.Client, schema: etree.XMLSchema
) -> None:
    body = request(ct.documents(f"urn:oid:{FR_HCID}", FR_RLUID))
    assert_valid(schema, body)
    answer = post(http, fr_pacs + PATH, body, RAD69_ACTION)
    assert answer.status == 200
    assert answer.header("Action") == RETRIEVE_RESPONSE_ACTION
    assert answer.status_value == SUCCESS
    assert_valid(schema, answer.body, answer.parts)
    assert answer.documents() == wado_instances(http, fr_pacs, ct) == ct.instances
    assert answer.document_field("RepositoryUniqueId") == {FR_RLUID}
    assert answer.document_field("HomeCommunityId") == {f"urn:oid:{FR_HCID}"}
    assert answer.document_field("mimeType") == {"application/dicom"}


def test_unknown_documents_are_errors_naming_them_and_the_rest_is_partial_success(
    fr_pacs: str, ct: Study, http: httpx.Client, schema: etree.XMLSchema
) -> None:
    first, second, _ = ct.instances
    docs = (
        DocumentRequest(ct.study, ct.series, None, FR_RLUID, first),
        DocumentRequest(ct.study, ct.series, None, FR_RLUID, "2.25.404"),
        DocumentRequest(ct.study, ct.series, None, DE_RLUID, second),
        DocumentRequest(ct.study, ct.series, "urn:oid:2.999.1", FR_RLUID, second),
        DocumentRequest(ct.study, ct.series, None, FR_RLUID, "not a uid"),
    )
    answer = post(http, fr_pacs + PATH, request(docs), RAD69_ACTION)
    assert_valid(schema, answer.body, answer.parts)
    assert answer.status_value == PARTIAL
    assert answer.documents() == {first: ct.instances[first]}
    # RAD69-016: an error's location is the DocumentUniqueId it is about
    assert [(e["errorCode"], e["location"]) for e in answer.errors()] == [
        ("XDSDocumentUniqueIdError", "2.25.404"),
        ("XDSUnknownRepositoryId", second),
        ("XDSUnknownCommunity", second),
        ("XDSDocumentUniqueIdError", "not a uid"),
    ]


def test_nothing_found_is_a_failure_without_documents(fr_pacs: str, ct: Study, http: httpx.Client) -> None:
    docs = (DocumentRequest(ct.study, "2.25.9", None, FR_RLUID, next(iter(ct.instances))),)
    answer = post(http, fr_pacs + PATH, request(docs), RAD69_ACTION)
    assert answer.status == 200 and answer.status_value == FAILURE
    assert answer.parts == {} and answer.documents() == {}
    assert [e["errorCode"] for e in answer.errors()] == ["XDSDocumentUniqueIdError"]


def test_a_listed_stored_syntax_wins_else_the_first_producible_one(
    fr_pacs: str, ct: Study, http: httpx.Client
) -> None:
    kept = post(http, fr_pacs + PATH, request(ct.documents(None, FR_RLUID), RLE, EXPLICIT_LE), RAD69_ACTION)
    assert kept.documents() == ct.instances  # stored as Explicit VR LE, which is listed: unchanged
    converted = post(
        http, fr_pacs + PATH, request(ct.documents(None, FR_RLUID), JPEG_BASELINE, RLE), RAD69_ACTION
    )
    assert converted.status_value == SUCCESS
    for sop, data in converted.documents().items():
        ds, original = pydicom.dcmread(io.BytesIO(data)), pydicom.dcmread(io.BytesIO(ct.instances[sop]))
        assert ds.file_meta.TransferSyntaxUID == RLE  # JPEG baseline cannot hold 16-bit CT
        assert (ds.pixel_array == original.pixel_array).all()


def test_no_producible_syntax_is_an_error_per_document(fr_pacs: str, ct: Study, http: httpx.Client) -> None:
    answer = post(http, fr_pacs + PATH, request(ct.documents(None, FR_RLUID), JPEG_BASELINE), RAD69_ACTION)
    assert answer.status_value == FAILURE
    assert {e["errorCode"] for e in answer.errors()} == {"XDSRepositoryError"}
    assert all(JPEG_BASELINE in e["codeContext"] for e in answer.errors())


def test_an_instance_failing_after_the_answer_started_cuts_the_stream(
    fr_pacs: str, ct: Study, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: the second conversion fails. The first part was ready before the 200; the
    client must see a broken message, never a complete-looking answer with fewer parts."""
    real, calls = ncp.pacs.rad69.transcode, []

    def failing(*args: object) -> bytes:
        calls.append(args)
        if len(calls) == 2:
            raise RuntimeError("injected: disk gone")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(ncp.pacs.rad69, "transcode", failing)
    body = envelope_bytes(request(ct.documents(None, FR_RLUID), RLE), action=RAD69_ACTION)
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(fr_pacs + PATH, content=body, headers={"content-type": "application/soap+xml"})
    assert len(calls) == 2


# -- what is not a RAD-69 request -------------------------------------------------------------------
def _fault(answer: object) -> None:
    assert answer.status == 400  # type: ignore[attr-defined]
    assert answer.body.tag == "{http://www.w3.org/2003/05/soap-envelope}Fault"  # type: ignore[attr-defined]


def test_another_action_is_action_not_supported(fr_pacs: str, ct: Study, http: httpx.Client) -> None:
    answer = post(http, fr_pacs + PATH, request(ct.documents(None, FR_RLUID)), RAD75_ACTION)
    _fault(answer)
    assert answer.fault_subcode() == "wsa:ActionNotSupported"


def test_missing_action_is_a_fault(fr_pacs: str, ct: Study, http: httpx.Client) -> None:
    envelope = envelope_bytes(request(ct.documents(None, FR_RLUID)), action="").replace(
        b'<wsa:Action s:mustUnderstand="true"></wsa:Action>', b""
    )
    answer = post_raw(http, fr_pacs + PATH, envelope, "application/soap+xml")
    _fault(answer)
    assert answer.fault_subcode() == "wsa:MessageAddressingHeaderRequired"


@pytest.mark.parametrize(
    "content",
    [
        b"<not xml",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>&e;</s:Body></s:Envelope>',
        b'<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><x>&c;</x>',
    ],
    ids=["malformed", "xxe", "entity-bomb"],
)
def test_hostile_xml_is_a_sender_fault(fr_pacs: str, http: httpx.Client, content: bytes) -> None:
    answer = post_raw(http, fr_pacs + PATH, content, "application/soap+xml")
    _fault(answer)
    assert b"root:" not in etree.tostring(answer.envelope)


def test_a_body_that_is_not_a_rad69_request_is_a_fault(fr_pacs: str, http: httpx.Client) -> None:
    _fault(post(http, fr_pacs + PATH, etree.Element("{urn:x}Other"), RAD69_ACTION))


def test_an_mtom_request_whose_xop_include_names_no_part_is_a_fault(fr_pacs: str, http: httpx.Client) -> None:
    body = etree.Element("{urn:ihe:rad:xdsi-b:2009}RetrieveImagingDocumentSetRequest")
    etree.SubElement(body, "{http://www.w3.org/2004/08/xop/include}Include", href="cid:missing@x")
    envelope = envelope_bytes(body, action=RAD69_ACTION)
    content = (
        b'--b\r\nContent-Type: application/xop+xml; type="application/soap+xml"\r\nContent-ID: <r@x>\r\n\r\n'
        + envelope
        + b"\r\n--b--\r\n"
    )
    answer = post_raw(
        http,
        fr_pacs + PATH,
        content,
        'multipart/related; type="application/xop+xml"; boundary=b; start="<r@x>"',
    )
    _fault(answer)
    assert "names no MIME part" in (
        answer.body.findtext(".//{http://www.w3.org/2003/05/soap-envelope}Text") or ""
    )


def test_an_oversized_request_is_413(fr_pacs: str, http: httpx.Client) -> None:
    answer = post_raw(http, fr_pacs + PATH, b" " * (2 << 20), "application/soap+xml")
    assert answer.status == 413


def test_a_pacs_without_retrieve_location_uid_serves_no_rad69(
    serve: Callable[..., str], tmp_path: object, http: httpx.Client
) -> None:
    from ncp.pacs.app import PacsSettings, create_pacs_app

    base = serve(create_pacs_app(PacsSettings(storage_dir=tmp_path / "plain")))  # type: ignore[operator]
    assert http.post(base + PATH, content=b"").status_code == 404


# -- zeep ----------------------------------------------------------------------------------------------
def test_zeep_retrieves_the_study_with_the_ihe_wsdl(fr_pacs: str, ct: Study) -> None:
    """zeep, unmodified, with IPF's copy of the IHE RAD-69 WSDL, resolves the MTOM answer itself."""
    client = zeep.Client(str(SCHEMAS / "rad69.wsdl"), plugins=[WsAddressingPlugin()])
    try:
        service = client.create_service(
            "{urn:ihe:rad:xdsi-b:2009}DocumentRepository_Binding_Soap12", fr_pacs + PATH
        )
        answer = service.DocumentRepository_RetrieveImagingDocumentSet(
            StudyRequest=[
                {
                    "studyInstanceUID": ct.study,
                    "SeriesRequest": [
                        {
                            "seriesInstanceUID": ct.series,
                            "DocumentRequest": [
                                {"RepositoryUniqueId": FR_RLUID, "DocumentUniqueId": sop}
                                for sop in ct.instances
                            ],
                        }
                    ],
                }
            ],
            TransferSyntaxUIDList={"TransferSyntaxUID": [EXPLICIT_LE]},
        )
    finally:
        client.transport.session.close()
    assert answer.RegistryResponse.status == SUCCESS
    assert {d.DocumentUniqueId: d.Document for d in answer.DocumentResponse} == ct.instances


def test_read_answer_refuses_a_truncated_message() -> None:
    """The test client's own check: a multipart answer without its closing delimiter fails."""
    content_type = 'multipart/related; type="application/xop+xml"; boundary="b"'
    with pytest.raises(AssertionError):
        content = b"--b\r\nContent-Type: application/xop+xml\r\n\r\n<x/>\r\n--b\r\n"
        read_answer(httpx.Response(200, headers={"content-type": content_type}, content=content))
