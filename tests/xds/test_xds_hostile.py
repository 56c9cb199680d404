"""Bad input is a SOAP Fault (cannot be read as a request) or a registry response with the XDS error
code and ``location`` = our homeCommunityId (read, but refused); never a 5xx, never an outbound
connection caused by an entity, and nothing stored from a refused submission."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
import xml.sax
import xml.sax.handler
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from lxml import etree
from xds_support import (
    ALICE,
    HCID,
    MR,
    PATIENT_ISSUER,
    RS,
    SOAP,
    assert_valid,
    find,
    patient_params,
    post,
    read_answer,
    study_documents,
    submission_request,
)

from ncp.model import PatientRecord
from ncp.registry.xds import iti18, iti41, iti43
from ncp.registry.xds.ebrim import FAILURE
from ncp.registry.xds.iti18 import FIND_DOCUMENTS
from ncp.server import free_port
from ncp.soapcore import mtom_message

HOME = f"urn:oid:{HCID}"
QUERY = (
    '<query:AdhocQueryRequest xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0" '
    'xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"><query:ResponseOption returnType="LeafClass"/>'
    '<rim:AdhocQuery id="urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d">'
    '<rim:Slot name="$XDSDocumentEntryPatientId"><rim:ValueList><rim:Value>{value}</rim:Value>'
    "</rim:ValueList></rim:Slot></rim:AdhocQuery></query:AdhocQueryRequest>"
)


def envelope(body: str, *, action: str = iti18.ACTION, header: str = "", prolog: str = "") -> str:
    return (
        f'{prolog}<s:Envelope xmlns:s="{SOAP}" xmlns:wsa="http://www.w3.org/2005/08/addressing"><s:Header>'
        f"<wsa:Action>{action}</wsa:Action><wsa:MessageID>urn:uuid:0000-test</wsa:MessageID>{header}</s:Header>"
        f"<s:Body>{body}</s:Body></s:Envelope>"
    )


def send(
    http: httpx.Client, url: str, data: bytes, content_type: str = "application/soap+xml"
) -> httpx.Response:
    response = http.post(url, content=data, headers={"content-type": content_type})
    assert response.status_code < 500, response.text
    return response


def fault(response: httpx.Response) -> tuple[int, str, str | None]:
    """(HTTP status, Code value, Subcode value) of a SOAP 1.2 Fault answer."""
    answer = read_answer(response)
    assert answer.body.tag == f"{{{SOAP}}}Fault", response.text
    code = answer.body.findtext(f"{{{SOAP}}}Code/{{{SOAP}}}Value")
    assert code is not None
    return response.status_code, code, answer.fault_subcode()


def stored(http: httpx.Client, base: str) -> int:
    count: int = http.get(f"{base}/health").json()["documents"]
    return count


@pytest.fixture
def canary() -> Iterator[tuple[str, list[bytes]]]:
    """A TCP listener that records every connection made to it: an XXE target that must stay silent."""
    port = free_port()
    seen: list[bytes] = []
    with socket.create_server(("127.0.0.1", port)) as server:
        server.settimeout(0.1)
        stop = threading.Event()

        def accept() -> None:
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                with conn:
                    seen.append(conn.recv(1024) or b"(connected)")

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{port}", seen
        stop.set()
        thread.join(timeout=5)


# -- the XML parser --------------------------------------------------------------------------------
def test_canary_sees_a_parser_that_does_fetch_external_entities(canary: tuple[str, list[bytes]]) -> None:
    """The canary is not blind: an XML parser told to load external entities (the standard library's SAX
    parser with feature_external_ges) connects to it."""
    target, seen = canary
    parser = xml.sax.make_parser()
    parser.setFeature(xml.sax.handler.feature_external_ges, True)
    with contextlib.suppress(Exception):  # the canary answers nothing
        parser.parse(
            io.BytesIO(f'<!DOCTYPE x [<!ENTITY xxe SYSTEM "{target}/entity">]><x>&xxe;</x>'.encode())
        )
    assert seen and seen[0].startswith(b"GET /entity")


def test_local_file_entity_is_refused_and_not_echoed(xds: str, http: httpx.Client, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-MARKER")
    prolog = f'<!DOCTYPE s:Envelope [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>'
    response = send(
        http, f"{xds}/xds/registry", envelope(QUERY.format(value="&xxe;"), prolog=prolog).encode()
    )
    assert fault(response)[:2] == (400, "s:Sender")
    assert b"TOP-SECRET-MARKER" not in response.content


@pytest.mark.parametrize(
    "encoding_and_padding",
    [("utf-8", ""), ("utf-8", "<!--" + "x" * 70000 + "-->"), ("utf-16", "")],
    ids=["plain", "doctype-after-70k-comment", "utf-16"],
)
def test_external_entity_is_refused_without_any_connection(
    xds: str, http: httpx.Client, canary: tuple[str, list[bytes]], encoding_and_padding: tuple[str, str]
) -> None:
    target, seen = canary
    encoding, padding = encoding_and_padding
    prolog = (
        f'<?xml version="1.0" encoding="{encoding}"?>{padding}<!DOCTYPE s:Envelope ['
        f'<!ENTITY xxe SYSTEM "{target}/entity"><!ENTITY % dtd SYSTEM "{target}/dtd"> %dtd;]>'
    )
    data = envelope(QUERY.format(value="&xxe;"), prolog=prolog).encode(encoding)
    assert fault(send(http, f"{xds}/xds/registry", data)) == (400, "s:Sender", None)
    time.sleep(0.3)  # a connection attempt made by the parser would have arrived by now
    assert seen == []


def test_entity_expansion_bomb_is_refused_quickly(xds: str, http: httpx.Client) -> None:
    lol = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    prolog = f'<!DOCTYPE s:Envelope [<!ENTITY l0 "lol">{lol}]>'
    started = time.monotonic()
    response = send(http, f"{xds}/xds/registry", envelope(QUERY.format(value="&l9;"), prolog=prolog).encode())
    assert fault(response)[:2] == (400, "s:Sender")
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"<s:Envelope xmlns:s='http://www.w3.org/2003/05/soap-envelope'><s:Body>", (400, "s:Sender", None)),
        (b"not xml at all", (400, "s:Sender", None)),
        (
            b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body/></e:Envelope>',
            (400, "s:VersionMismatch", None),
        ),
    ],
    ids=["truncated", "not-xml", "soap-1.1"],
)
def test_unreadable_envelopes_are_sender_faults(
    xds: str, http: httpx.Client, data: bytes, expected: tuple[int, str, str | None]
) -> None:
    assert fault(send(http, f"{xds}/xds/registry", data)) == expected


def test_fault_answers_relate_to_the_request_and_carry_the_fault_action(xds: str, http: httpx.Client) -> None:
    response = send(
        http, f"{xds}/xds/registry", envelope(QUERY.format(value="x"), action=iti43.ACTION).encode()
    )
    answer = read_answer(response)
    assert answer.header("RelatesTo") == "urn:uuid:0000-test"
    assert answer.header("Action") == "http://www.w3.org/2005/08/addressing/fault"


# -- WS-Addressing and SOAP headers ----------------------------------------------------------------
def test_action_the_endpoint_does_not_serve_is_action_not_supported(xds: str, http: httpx.Client) -> None:
    """ITI-43's Action sent to the registry endpoint (and ITI-18's to the repository)."""
    query = QUERY.format(value="x")
    assert fault(send(http, f"{xds}/xds/registry", envelope(query, action=iti43.ACTION).encode())) == (
        400, "s:Sender", "wsa:ActionNotSupported",
    )  # fmt: skip
    assert fault(send(http, f"{xds}/xds/repository", envelope(query).encode()))[2] == "wsa:ActionNotSupported"


def test_missing_action_is_a_required_header_fault(xds: str, http: httpx.Client) -> None:
    data = f'<s:Envelope xmlns:s="{SOAP}"><s:Header/><s:Body>{QUERY.format(value="x")}</s:Body></s:Envelope>'
    assert fault(send(http, f"{xds}/xds/registry", data.encode()))[2] == "wsa:MessageAddressingHeaderRequired"


def test_header_that_must_be_understood_but_is_not_is_a_must_understand_fault(
    xds: str, http: httpx.Client
) -> None:
    """XUA's wsse:Security is not processed yet: claiming it must be understood is refused, not ignored."""
    security = (
        '<wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"'
        f' s:mustUnderstand="true" xmlns:s="{SOAP}"/>'
    )
    data = envelope(QUERY.format(value="x"), header=security).encode()
    assert fault(send(http, f"{xds}/xds/registry", data))[:2] == (400, "s:MustUnderstand")


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("text/plain", 415),
        ('multipart/related; type="text/xml"; boundary=x', 415),
        ('multipart/related; type="application/xop+xml"', 400),
    ],
    ids=["text-plain", "multipart-not-xop", "multipart-without-boundary"],
)
def test_wrong_media_types_are_faults(xds: str, http: httpx.Client, content_type: str, status: int) -> None:
    assert (
        fault(send(http, f"{xds}/xds/registry", envelope(QUERY.format(value="x")).encode(), content_type))[0]
        == status
    )


def test_no_route_and_wrong_method_are_faults(xds: str, http: httpx.Client) -> None:
    assert fault(http.get(f"{xds}/xds/registry"))[0] == 405
    assert fault(http.post(f"{xds}/xds/nothing", content=b"<x/>"))[0] == 404


# -- stored queries --------------------------------------------------------------------------------
def test_unknown_stored_query_is_a_registry_error_with_location(
    xds: str, http: httpx.Client, schema: etree.XMLSchema
) -> None:
    answer = find(http, xds, "urn:uuid:00000000-0000-0000-0000-000000000000", patient_params())
    assert answer.status == 200 and answer.body.get("status") == FAILURE
    assert [(e["errorCode"], e["location"]) for e in answer.errors()] == [("XDSUnknownStoredQuery", HOME)]
    assert_valid(schema, answer.body)


@pytest.mark.parametrize(
    "params",
    [patient_params()[1:], patient_params()[:1], [*patient_params(), patient_params()[0]]],
    ids=["no-patient", "no-status", "two-patients"],
)
def test_find_documents_parameter_errors(
    xds: str, http: httpx.Client, params: list[tuple[str, str | list[str]]]
) -> None:
    answer = find(http, xds, FIND_DOCUMENTS, params)
    assert [(e["errorCode"], e["location"]) for e in answer.errors()] == [("XDSStoredQueryParamNumber", HOME)]


def test_malformed_code_parameter_is_a_registry_error(xds: str, http: httpx.Client) -> None:
    """Refused even when no document would have been compared with it."""
    answer = find(http, xds, FIND_DOCUMENTS, patient_params(("$XDSDocumentEntryClassCode", ["no-scheme"])))
    assert [e["errorCode"] for e in answer.errors()] == ["XDSRegistryError"]


# -- refused submissions store nothing -------------------------------------------------------------
def _mtom(
    docs: list[tuple[object, bytes]], **kw: object
) -> tuple[etree._Element, str, list[tuple[str, bytes]]]:
    body, parts = submission_request(docs, **kw)  # type: ignore[arg-type]
    return body, iti41.ACTION, parts


BOB_OTHER_DOMAIN = PatientRecord("FR", "FR-0002", "2.999.9", "Bernard", "Bob", "19851130", "M")
BOB_SAME_DOMAIN = replace(BOB_OTHER_DOMAIN, issuer=PATIENT_ISSUER)
MR_DOCS = study_documents(MR)


@pytest.mark.parametrize(
    ("documents", "patient", "code"),
    [
        (MR_DOCS, BOB_OTHER_DOMAIN, "XDSUnknownPatientId"),
        (MR_DOCS, BOB_SAME_DOMAIN, "XDSPatientIdDoesNotMatch"),
        ([(replace(MR_DOCS[0][0], hash="0" * 40), MR_DOCS[0][1])], ALICE, "XDSRepositoryMetadataError"),
        ([(replace(MR_DOCS[0][0], size=1), MR_DOCS[0][1])], ALICE, "XDSRepositoryMetadataError"),
        (
            [(replace(MR_DOCS[0][0], repository_unique_id="2.999.8"), MR_DOCS[0][1])],
            ALICE,
            "XDSRepositoryMetadataError",
        ),
    ],
    ids=["patient-of-another-domain", "patient-mismatch", "wrong-hash", "wrong-size", "other-repository"],
)
def test_refused_submission_is_an_error_with_location_and_stores_nothing(
    xds: str, http: httpx.Client, schema: etree.XMLSchema, documents: list[tuple[object, bytes]],
    patient: PatientRecord, code: str,
) -> None:  # fmt: skip
    answer = post(http, f"{xds}/xds/repository", *_mtom(documents, patient=patient))
    assert answer.status == 200 and answer.body.get("status") == FAILURE
    assert [(e["errorCode"], e["location"]) for e in answer.errors()] == [(code, HOME)]
    assert_valid(schema, answer.body)
    assert stored(http, xds) == 0


def test_entry_without_document_and_document_without_entry(xds: str, http: httpx.Client) -> None:
    body, _, parts = _mtom(MR_DOCS)
    document = body.find("{urn:ihe:iti:xds-b:2007}Document")
    assert document is not None
    document.set("id", "SomethingElse")
    answer = post(http, f"{xds}/xds/repository", body, iti41.ACTION, parts)
    assert [e["errorCode"] for e in answer.errors()] == ["XDSMissingDocumentMetadata"]
    body.remove(document)
    answer = post(http, f"{xds}/xds/repository", body, iti41.ACTION, parts)
    assert [e["errorCode"] for e in answer.errors()] == ["XDSMissingDocument"]
    assert stored(http, xds) == 0


def test_second_submission_of_the_same_document_is_refused_whole(xds: str, http: httpx.Client) -> None:
    first = post(http, f"{xds}/xds/repository", *_mtom(MR_DOCS))
    assert first.body.get("status") != FAILURE
    new_one = replace(MR_DOCS[0][0], entry_uuid="Another", unique_id="2.25.77")
    again = post(http, f"{xds}/xds/repository", *_mtom([*MR_DOCS, (new_one, b"other")]))
    assert [e["errorCode"] for e in again.errors()] == ["XDSDuplicateUniqueIdInRegistry"]
    assert stored(http, xds) == 1


# -- MTOM ------------------------------------------------------------------------------------------
def test_xop_include_naming_no_part_is_a_fault_and_stores_nothing(xds: str, http: httpx.Client) -> None:
    body, _, parts = _mtom(MR_DOCS)
    message = mtom_message(body, action=iti41.ACTION, attachments=[("unrelated@x", b"...")], to=xds)
    assert parts and message.status == 200
    response = send(http, f"{xds}/xds/repository", message.body, message.content_type)
    assert fault(response)[:2] == (400, "s:Sender")
    assert stored(http, xds) == 0


def test_oversized_part_and_message_are_faults(start_xds: Callable[..., str], http: httpx.Client) -> None:
    base = start_xds(max_part_bytes=1000, max_message_bytes=200_000)
    big = [(replace(MR_DOCS[0][0]), b"x" * 5000)]
    body, _, parts = _mtom(big)
    message = mtom_message(body, action=iti41.ACTION, attachments=parts, to=base)
    assert fault(send(http, f"{base}/xds/repository", message.body, message.content_type))[0] == 413
    huge = [(replace(MR_DOCS[0][0]), b"x" * 300_000)]
    body, _, parts = _mtom(huge)
    message = mtom_message(body, action=iti41.ACTION, attachments=parts, to=base)
    assert fault(send(http, f"{base}/xds/repository", message.body, message.content_type))[0] == 413
    assert stored(http, base) == 0


def test_inline_document_that_is_not_base64_is_a_fault(xds: str, http: httpx.Client) -> None:
    body, _, _ = _mtom(MR_DOCS, mtom=False)
    document = body.find("{urn:ihe:iti:xds-b:2007}Document")
    assert document is not None
    document.text = "!!! not base64 !!!"
    response = send(
        http, f"{xds}/xds/repository", envelope(etree.tostring(body).decode(), action=iti41.ACTION).encode()
    )
    assert fault(response)[:2] == (400, "s:Sender")
    assert stored(http, xds) == 0


def test_retrieve_errors_name_the_code_and_location(xds: str, http: httpx.Client) -> None:
    request = iti43.retrieve_request(
        [("urn:oid:2.999.7", "2.999.250.10", "2.25.1"), (None, "2.999.8", "2.25.1")]
    )
    answer = post(http, f"{xds}/xds/repository", request, iti43.ACTION)
    response = answer.body.find(f"{{{RS}}}RegistryResponse")
    assert response is not None and response.get("status") == FAILURE
    assert [(e["errorCode"], e["location"]) for e in answer.errors()] == [
        ("XDSUnknownCommunity", HOME), ("XDSUnknownRepositoryId", HOME),
    ]  # fmt: skip


def test_entry_that_is_not_a_member_of_the_submission_set_is_refused(xds: str, http: httpx.Client) -> None:
    body, _, parts = _mtom(MR_DOCS)
    for association in body.iter("{urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0}Association"):
        association.getparent().remove(association)  # type: ignore[union-attr]
    answer = post(http, f"{xds}/xds/repository", body, iti41.ACTION, parts)
    assert [(e["errorCode"], e["location"]) for e in answer.errors()] == [("XDSRegistryMetadataError", HOME)]
    assert stored(http, xds) == 0
