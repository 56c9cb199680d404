"""XCA between communities (ncp.registry.xca): two regions, each a Responding Gateway in front of its own
XDS.b registry + repository, and the country's Initiating Gateway behind one MHD Document Responder.

Every ITI-38 and ITI-39 message that crosses the wire, both ways, is validated against the official
schemas (tests/data/xds-schemas). Regions: north holds Alice's CT manifest and report, south her MR manifest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from lxml import etree
from starlette.responses import Response
from xca_support import COUNTRY, NORTH, Region
from xds_support import (
    ALICE,
    CT,
    MR,
    PATIENT_ISSUER,
    REPOSITORY,
    RIM,
    assert_valid,
    patient_params,
    post,
    unique_ids,
)

from ncp.mhd import HCID_EXTENSION
from ncp.registry.xca import iti38, iti39
from ncp.registry.xca.initiating import create_initiating_app
from ncp.registry.xca.settings import Community, InitiatingSettings, query_url, retrieve_url
from ncp.registry.xds import iti18, iti43
from ncp.server import free_port

PATIENT = f"urn:oid:{PATIENT_ISSUER}|{ALICE.id}"
FHIR = "http://ig.example/fhir"


def initiating(serve: Callable[..., str], *communities: Community, timeout_s: float = 5) -> str:
    return (
        serve(create_initiating_app(InitiatingSettings(FHIR, COUNTRY, communities, timeout_s=timeout_s)))
        + "/fhir"
    )


def search(fhir: str, **params: str) -> dict[str, Any]:
    response = httpx.get(
        f"{fhir}/DocumentReference", params={"patient.identifier": PATIENT, "status": "current", **params}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def matches(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def outcomes(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"]


def study_uids(resources: list[dict[str, Any]]) -> list[str]:
    return sorted(
        r["identifier"]["value"].removeprefix("urn:oid:")
        for d in resources
        for r in d["context"]["related"]
        if r["type"] == "ImagingStudy"
    )


def get_documents(home: str | None, uuid: str) -> etree._Element:
    request = iti18.stored_query_request(iti18.GET_DOCUMENTS, [("$XDSDocumentEntryEntryUUID", [uuid])])
    if home:
        request.find(f"{{{RIM}}}AdhocQuery").set("home", home)  # type: ignore[union-attr]
    return request


# -- the Responding Gateway ----------------------------------------------------------------------------
def test_cross_gateway_query_answers_this_community_on_every_object(
    regions: tuple[Region, Region], http: httpx.Client, schema: etree.XMLSchema
) -> None:
    north, _ = regions
    request = iti38.request(north.home, iti18.FIND_DOCUMENTS, patient_params())
    assert_valid(schema, request)
    answer = post(http, query_url(north.direct), request, iti38.ACTION)
    assert answer.header("Action") == iti38.RESPONSE_ACTION
    assert_valid(schema, answer.body)
    assert answer.body.get("status", "").endswith(":Success")
    objects = list(answer.body.iter(f"{{{RIM}}}ExtrinsicObject"))
    assert len(objects) == 2 and {o.get("home") for o in objects} == {north.home}
    assert sorted(unique_ids(answer)) == sorted(north.documents)


def test_a_patient_query_may_omit_the_community_but_an_id_query_may_not(
    regions: tuple[Region, Region], http: httpx.Client, schema: etree.XMLSchema
) -> None:
    north, _ = regions
    bare = iti18.stored_query_request(iti18.FIND_DOCUMENTS, patient_params())
    assert len(unique_ids(post(http, query_url(north.direct), bare, iti38.ACTION))) == 2
    uuid = "urn:uuid:" + "0" * 8 + "-0000-4000-8000-" + "0" * 12
    answer = post(http, query_url(north.direct), get_documents(None, uuid), iti38.ACTION)
    assert_valid(schema, answer.body)
    assert answer.body.get("status", "").endswith(":Failure")
    assert [(e["errorCode"], e["location"]) for e in answer.errors()] == [
        ("XDSMissingHomeCommunityId", north.home)
    ]


def test_a_query_for_another_community_is_unknown_community_located_here(
    regions: tuple[Region, Region], http: httpx.Client
) -> None:
    north, south = regions
    answer = post(
        http,
        query_url(north.direct),
        iti38.request(south.home, iti18.FIND_DOCUMENTS, patient_params()),
        iti38.ACTION,
    )
    assert answer.status == 200 and answer.body.get("status", "").endswith(":Failure")
    assert [(e["errorCode"], e["location"]) for e in answer.errors()] == [("XDSUnknownCommunity", north.home)]


def test_cross_gateway_retrieve_returns_the_document_with_its_community(
    regions: tuple[Region, Region], http: httpx.Client, schema: etree.XMLSchema
) -> None:
    north, _ = regions
    uid = next(iter(north.documents))
    request = iti39.request(north.home, REPOSITORY, uid)
    assert_valid(schema, request)
    answer = post(http, retrieve_url(north.direct), request, iti39.ACTION)
    assert answer.header("Action") == iti39.RESPONSE_ACTION
    assert answer.content_type.startswith("multipart/related")
    assert_valid(schema, answer.body, answer.parts)
    response = answer.body.find(f"{{{iti43.IHE}}}DocumentResponse")
    assert response is not None
    assert response.findtext(f"{{{iti43.IHE}}}HomeCommunityId") == north.home
    assert iti39.document(answer.body, answer.parts, uid) == north.documents[uid]


def test_each_document_request_must_name_this_community(
    regions: tuple[Region, Region], http: httpx.Client, schema: etree.XMLSchema
) -> None:
    north, south = regions
    uid = next(iter(north.documents))
    request = iti43.retrieve_request(
        [(north.home, REPOSITORY, uid), (None, REPOSITORY, uid), (south.home, REPOSITORY, uid)]
    )
    answer = post(http, retrieve_url(north.direct), request, iti39.ACTION)
    assert_valid(schema, answer.body, answer.parts)
    status = answer.body.find("{urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0}RegistryResponse")
    assert status is not None and status.get("status") == "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
    assert sorted((e["errorCode"], e["location"]) for e in answer.errors()) == [
        ("XDSMissingHomeCommunityId", north.home),
        ("XDSUnknownCommunity", north.home),
    ]
    assert iti39.document(answer.body, answer.parts, uid) == north.documents[uid]


HOSTILE = [
    pytest.param(
        "ITI-18's Action at the ITI-38 endpoint",
        lambda home: (
            iti38,
            iti18.stored_query_request(iti18.FIND_DOCUMENTS, patient_params()),
            iti18.ACTION,
        ),
        "wsa:ActionNotSupported",
        id="wrong-action",
    ),
    pytest.param(
        "ITI-39's Action at the ITI-38 endpoint",
        lambda home: (iti38, iti38.request(home, iti18.FIND_DOCUMENTS, patient_params()), iti39.ACTION),
        "wsa:ActionNotSupported",
        id="retrieve-action-at-query",
    ),
]


@pytest.mark.parametrize(("what", "build", "subcode"), HOSTILE)
def test_a_foreign_action_is_a_fault(
    regions: tuple[Region, Region], http: httpx.Client, what: str, build: Callable[[str], Any], subcode: str
) -> None:
    north, _ = regions
    _, body, action = build(north.home)
    answer = post(http, query_url(north.direct), body, action)
    assert answer.status == 400, what
    assert answer.fault_subcode() == subcode


XXE = b"""<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>&x;</s:Body></s:Envelope>"""


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("application/soap+xml", XXE, 400),
        ("application/soap+xml", b"<not-closed", 400),
        ("text/plain", b"hello", 415),
        ("application/soap+xml", b"<s:Envelope xmlns:s='http://schemas.xmlsoap.org/soap/envelope/'/>", 400),
    ],
    ids=["xxe", "truncated", "not-soap", "soap-1.1"],
)
@pytest.mark.parametrize("path", [iti38, iti39], ids=["iti38", "iti39"])
def test_hostile_messages_are_faults_never_5xx(
    regions: tuple[Region, Region], http: httpx.Client, content_type: str, body: bytes, status: int, path: Any
) -> None:
    north, _ = regions
    url = query_url(north.direct) if path is iti38 else retrieve_url(north.direct)
    response = http.post(url, content=body, headers={"content-type": content_type})
    assert response.status_code == status
    assert b"Fault" in response.content and b"root:" not in response.content


def test_a_get_on_a_soap_endpoint_is_a_fault(regions: tuple[Region, Region], http: httpx.Client) -> None:
    north, _ = regions
    response = http.get(query_url(north.direct))
    assert response.status_code == 405 and b"Fault" in response.content


# -- the Initiating Gateway behind MHD ----------------------------------------------------------------
def test_a_search_fans_out_to_every_community_and_names_the_country(
    regions: tuple[Region, Region], serve: Callable[..., str], schema: etree.XMLSchema
) -> None:
    north, south = regions
    fhir = initiating(serve, north.community(), south.community())
    bundle = search(fhir)
    found = matches(bundle)
    assert study_uids(found) == sorted([CT.study_instance_uid, CT.study_instance_uid, MR.study_instance_uid])
    assert bundle["total"] == 3 and outcomes(bundle) == []
    homes = {e["valueOid"] for d in found for e in d["extension"] if e["url"] == HCID_EXTENSION}
    assert homes == {f"urn:oid:{COUNTRY}"}
    for region in regions:  # one ITI-38 each, naming the community it was sent to, valid both ways
        (exchange,) = region.wire.exchanges
        assert exchange.action == iti38.ACTION
        assert exchange.request.find(f"{{{RIM}}}AdhocQuery").get("home") == region.home  # type: ignore[union-attr]
        assert_valid(schema, exchange.request)
        assert_valid(schema, exchange.answer.body)


def test_a_binary_is_retrieved_from_the_community_that_holds_it(
    regions: tuple[Region, Region], serve: Callable[..., str], schema: etree.XMLSchema
) -> None:
    north, south = regions
    fhir = initiating(serve, north.community(), south.community())
    mr = next(d for d in matches(search(fhir, modality="MR")))
    for region in regions:
        region.wire.exchanges.clear()
    response = httpx.get(
        mr["content"][0]["attachment"]["url"].replace(FHIR, fhir), headers={"accept": "application/dicom"}
    )
    assert response.status_code == 200
    assert response.content == next(iter(south.documents.values()))
    retrieves = [x for x in south.wire.exchanges if x.action == iti39.ACTION]
    assert len(retrieves) == 1 and not [x for x in north.wire.exchanges if x.action == iti39.ACTION]
    assert (
        retrieves[0].request.findtext(f"{{{iti43.IHE}}}DocumentRequest/{{{iti43.IHE}}}HomeCommunityId")
        == south.home
    )
    assert_valid(schema, retrieves[0].request)
    assert_valid(schema, retrieves[0].answer.body, retrieves[0].answer.parts)


def test_a_community_down_is_partial_success_naming_it(
    regions: tuple[Region, Region], serve: Callable[..., str]
) -> None:
    north, south = regions
    east = Community("east", "2.999.250.1.3", f"http://127.0.0.1:{free_port('127.0.0.1')}")
    fhir = initiating(serve, north.community(), south.community(), east)
    bundle = search(fhir)
    assert study_uids(matches(bundle)) == sorted(
        [CT.study_instance_uid, CT.study_instance_uid, MR.study_instance_uid]
    )
    (outcome,) = outcomes(bundle)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "warning" and outcome["issue"][0]["code"] == "incomplete"
    assert (
        "2.999.250.1.3" in outcome["issue"][0]["diagnostics"]
        and "'east'" in outcome["issue"][0]["diagnostics"]
    )


@pytest.mark.parametrize(
    "fault",
    [
        lambda: Response(b"<html>busy</html>", 503, media_type="text/html"),
        lambda: Response(
            b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><s:Fault><s:Code><s:Value>'
            b"s:Receiver</s:Value></s:Code><s:Reason><s:Text xml:lang='en'>down</s:Text></s:Reason></s:Fault>"
            b"</s:Body></s:Envelope>",
            500,
            media_type="application/soap+xml",
        ),
    ],
    ids=["not-soap", "soap-fault"],
)
def test_a_community_that_answers_wrong_is_reported_and_the_others_listed(
    regions: tuple[Region, Region], serve: Callable[..., str], fault: Callable[[], Response]
) -> None:
    north, south = regions
    south.wire.fault = fault
    bundle = search(initiating(serve, north.community(), south.community()))
    assert study_uids(matches(bundle)) == [CT.study_instance_uid, CT.study_instance_uid]
    (outcome,) = outcomes(bundle)
    assert SOUTH_HCID in outcome["issue"][0]["diagnostics"]


SOUTH_HCID = "2.999.250.1.2"


def test_a_community_slower_than_the_bound_is_reported_not_waited_for(
    regions: tuple[Region, Region], serve: Callable[..., str]
) -> None:
    north, south = regions

    def slow() -> Response:
        time.sleep(3)
        return Response(b"late", 502)

    south.wire.fault = slow
    started = time.monotonic()
    bundle = search(initiating(serve, north.community(), south.community(), timeout_s=1))
    assert time.monotonic() - started < 2.5
    assert study_uids(matches(bundle)) == [CT.study_instance_uid, CT.study_instance_uid]
    (outcome,) = outcomes(bundle)
    assert (
        SOUTH_HCID in outcome["issue"][0]["diagnostics"] and "in time" in outcome["issue"][0]["diagnostics"]
    )


def test_no_community_answering_is_a_502_operation_outcome(
    regions: tuple[Region, Region], serve: Callable[..., str]
) -> None:
    north, south = regions
    north.wire.fault = south.wire.fault = lambda: Response(b"no", 502)
    response = httpx.get(
        f"{initiating(serve, north.community(), south.community())}/DocumentReference",
        params={"patient.identifier": PATIENT, "status": "current"},
    )
    assert response.status_code == 502
    assert response.json()["resourceType"] == "OperationOutcome"
    assert NORTH in response.text and SOUTH_HCID in response.text


def test_a_document_read_while_its_community_is_down_is_502_not_404(
    regions: tuple[Region, Region], serve: Callable[..., str]
) -> None:
    north, south = regions
    fhir = initiating(serve, north.community(), south.community())
    mr = next(d for d in matches(search(fhir, modality="MR")))
    south.wire.fault = lambda: Response(b"no", 502)
    assert httpx.get(f"{fhir}/DocumentReference/{mr['id']}").status_code == 502
    south.wire.fault = None
    assert httpx.get(f"{fhir}/DocumentReference/{mr['id']}").json()["id"] == mr["id"]
    assert httpx.get(f"{fhir}/DocumentReference/{'1' * 8}-1111-4111-8111-{'1' * 12}").status_code == 404


def test_patients_are_known_from_any_community(
    regions: tuple[Region, Region], serve: Callable[..., str]
) -> None:
    north, south = regions
    bundle = httpx.get(
        f"{initiating(serve, north.community(), south.community())}/Patient", params={"identifier": PATIENT}
    ).json()
    (entry,) = bundle["entry"]
    assert entry["resource"]["name"][0]["family"] == ALICE.family
