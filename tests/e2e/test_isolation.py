"""Patient isolation: one treatment context opens exactly one patient, whatever the input says.

A treatment context for patient X, asked as an attacker would for patient Y (``X,Y`` lists, repeated
parameters, escapes, another patient's study or document), yields a 4xx, zero image bytes and an audit
record of the refusal, at the identity provider, ITI-67, ITI-68 and every RAD-160 level.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from audit_support import audited
from e2e_federations import Seeded, start_seeded, study_resource
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ncp.consumer.client import ImagingConsumer
from ncp.model import StudyRecord
from ncp.security.pki import FederationPki
from ncp.security.tokens import PatientRef, ncp_id

ACCEPT = {"Accept": 'multipart/related; type="application/dicom"'}
HOSTILE = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    yield from start_seeded("builtin:default", tmp_path_factory.mktemp("isolation"), secure=True)


def two_patients(fed: Seeded) -> tuple[StudyRecord, StudyRecord]:
    studies = fed.published["FR"].data.studies
    x = studies[0]
    y = next(s for s in studies if s.patient != x.patient)
    return x, y


def treated(fed: Seeded, study: StudyRecord) -> ImagingConsumer:
    consumer = ImagingConsumer(fed.gateway("AT"))
    consumer.authenticate()
    consumer.open_treatment_context(study.patient.issuer, study.patient.id)
    return consumer


def rad160(fed: Seeded, study: StudyRecord, level: str) -> str:
    location = f"homeCommunityId/{fed.hcid('FR')}/RetrieveLocationUID/{study.series[0].retrieve_location_uid}"
    return f"{fed.gateway('AT')}/wado/{location}/{study_resource(study, level)}"


def audited_at(fed: Seeded, country: str, rid: str) -> list[Any]:
    return audited(Path(fed.fed.plan.run_dir) / country / "audit.sqlite", rid)


def token_form(fed: Seeded, consumer: ImagingConsumer, form: dict[str, str] | str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {consumer._hcp_token}"}
    if isinstance(form, str):
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return consumer.client.post(f"{fed.gateway('AT')}/idp/treatment", content=form, headers=headers)
    return consumer.client.post(f"{fed.gateway('AT')}/idp/treatment", data=form, headers=headers)


# -- the identity provider ------------------------------------------------------------------------------


def test_a_treatment_context_for_x_comma_y_is_not_opened(fed: Seeded) -> None:
    x, y = two_patients(fed)
    consumer = ImagingConsumer(fed.gateway("AT"))
    consumer.authenticate()
    r = token_form(
        fed, consumer, {"patient_id": f"{x.patient.id},{y.patient.id}", "patient_issuer": x.patient.issuer}
    )
    assert r.status_code == 404 and "access_token" not in r.text
    assert r.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    "form",
    [
        "patient_id={x}&patient_id={y}&patient_issuer={i}",  # a repeated field names a second patient
        "patient_id={x}%5C,{y}&patient_issuer={i}",  # an escaped comma
        "patient_id={x}%7Curn:oid:{i}%7C{y}&patient_issuer={i}",  # a token bar
        "patient_id={x}%20{y}&patient_issuer={i}",
        "patient_id={x}&patient_issuer={i},{i}",
    ],
)
def test_every_other_multi_patient_form_is_a_400(fed: Seeded, form: str) -> None:
    x, y = two_patients(fed)
    consumer = ImagingConsumer(fed.gateway("AT"))
    consumer.authenticate()
    r = token_form(fed, consumer, form.format(x=x.patient.id, y=y.patient.id, i=x.patient.issuer))
    assert r.status_code == 400 and "access_token" not in r.text
    assert r.json()["resourceType"] == "OperationOutcome"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(suffix=HOSTILE)
def test_no_patient_id_but_a_known_one_opens_a_context(fed: Seeded, suffix: str) -> None:
    x, _ = two_patients(fed)
    consumer = ImagingConsumer(fed.gateway("AT"))
    consumer.authenticate()
    r = token_form(fed, consumer, {"patient_id": x.patient.id + suffix, "patient_issuer": x.patient.issuer})
    assert r.status_code in (400, 404), r.text
    assert r.json()["resourceType"] == "OperationOutcome"


# -- ITI-67 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        [("patient.identifier", "urn:oid:{i}|{x},urn:oid:{i}|{y}")],
        [("patient.identifier", "urn:oid:{i}|{x}"), ("patient.identifier", "urn:oid:{i}|{y}")],
        [("patient.identifier", "urn:oid:{i}|{x}"), ("patient", "Patient/{y}")],
        [("patient.identifier", "urn:oid:{i}|{x}"), ("subject", "Patient/{y}")],
        [("patient.identifier", "urn:oid:{i}|{x}\\,{y}")],
    ],
)
def test_a_search_names_exactly_the_patient_of_the_context(
    fed: Seeded, params: list[tuple[str, str]]
) -> None:
    x, y = two_patients(fed)
    consumer = treated(fed, x)
    query = [(k, v.format(i=x.patient.issuer, x=x.patient.id, y=y.patient.id)) for k, v in params]
    r = httpx.get(
        f"{fed.gateway('AT')}/fhir/DocumentReference",
        params=[*query, ("status", "current")],
        headers=consumer.headers,
    )
    assert r.status_code in (400, 403), r.text
    assert r.json()["resourceType"] == "OperationOutcome" and y.study_instance_uid not in r.text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(suffix=HOSTILE)
def test_no_search_value_reaches_another_patient(fed: Seeded, suffix: str) -> None:
    x, y = two_patients(fed)
    consumer = treated(fed, x)
    value = f"urn:oid:{x.patient.issuer}|{x.patient.id}{suffix}"
    r = consumer.client.get(
        f"{fed.gateway('AT')}/fhir/DocumentReference",
        params={"patient.identifier": value, "status": "current"},
        headers=consumer.headers,
    )
    assert r.status_code in (400, 403), r.text
    assert r.json()["resourceType"] == "OperationOutcome" and y.study_instance_uid not in r.text


# -- ITI-68 and RAD-160 ---------------------------------------------------------------------------------


def test_another_patients_document_is_refused(fed: Seeded) -> None:
    x, y = two_patients(fed)
    owner = treated(fed, y)
    entry = owner.find(y.patient.issuer, y.patient.id, study_uid=y.study_instance_uid, kind="manifest")[0]
    rid = f"iti68-{uuid.uuid4()}"
    r = httpx.get(entry.urls["application/dicom"], headers={**treated(fed, x).headers, "X-Request-Id": rid})
    assert r.status_code == 403 and b"DICM" not in r.content
    assert [(e.transaction, e.outcome, e.status) for e in audited_at(fed, "FR", rid)] == [
        ("ITI-68", "4", 403)
    ]


@pytest.mark.parametrize("level", ["study", "series", "instance", "metadata", "rendered"])
def test_another_patients_images_are_refused_at_every_level(fed: Seeded, level: str) -> None:
    x, y = two_patients(fed)
    rid = f"rad160-{level}-{uuid.uuid4()}"
    r = httpx.get(rad160(fed, y, level), headers={**ACCEPT, **treated(fed, x).headers, "X-Request-Id": rid})
    assert r.status_code == 403 and r.content.count(b"DICM") == 0
    assert r.headers.get("warning", "").startswith("299")
    [event] = audited_at(fed, "FR", rid)
    assert (event.transaction, event.outcome, event.status) == ("RAD-160", "4", 403)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segment=HOSTILE)
@example(segment="/")  # a trailing slash once earned a 307 to the route without it (redirect_slashes)
def test_no_hostile_path_segment_earns_more_than_a_4xx(fed: Seeded, segment: str) -> None:
    x, _ = two_patients(fed)
    consumer = treated(fed, x)
    rluid = x.series[0].retrieve_location_uid
    for url in (
        f"{fed.gateway('AT')}/wado/homeCommunityId/{fed.hcid('FR')}/RetrieveLocationUID/{rluid}/studies/"
        + quote(segment, safe=""),
        f"{fed.gateway('AT')}/fhir/Binary/FR." + quote(segment, safe=""),
    ):
        r = consumer.client.get(url, headers={**ACCEPT, **consumer.headers})
        assert 400 <= r.status_code < 500, (url, r.status_code, r.text[:200])
        assert b"DICM" not in r.content


# -- the border: an NCP assertion naming two patients ------------------------------------------------------


def forged_assertion(fed: Seeded, x: StudyRecord, patient: PatientRef) -> tuple[str, FederationPki]:
    pki = FederationPki.load(fed.fed.plan.pki_dir)  # type: ignore[arg-type]
    context = pki.gateway_verifier("AT").verify(
        treated(fed, x).headers["Authorization"].removeprefix("Bearer ")
    )
    context = dataclasses.replace(context, patient=patient)
    return pki.ncp_signer("AT").sign(context, audience=ncp_id("FR")), pki


def test_an_assertion_naming_x_comma_y_opens_nobody_at_the_border(fed: Seeded) -> None:
    x, y = two_patients(fed)
    both = PatientRef(x.patient.issuer, f"{x.patient.id},{y.patient.id}")
    border = fed.fed.plan.endpoints["FR"].border
    series = y.series[0]
    image = (
        f"{border}/wado-rs/homeCommunityId/{fed.hcid('FR')}/RetrieveLocationUID/{series.retrieve_location_uid}"
        f"/studies/{y.study_instance_uid}"
    )
    search = f"{border}/fhir/DocumentReference"
    params = {"patient.identifier": both.search_token(), "status": "current"}
    assertion, pki = forged_assertion(fed, x, both)
    with httpx.Client(verify=pki.client_ssl_context("AT", peer="FR")) as client:
        images = client.get(image, headers={**ACCEPT, "x-ncp-assertion": assertion})
        assertion, _ = forged_assertion(fed, x, both)
        found = client.get(search, params=params, headers={"x-ncp-assertion": assertion})
    assert images.status_code == 403 and b"DICM" not in images.content
    assert found.status_code == 200 and found.json()["total"] == 0


# -- hostile input that used to earn a 5xx ---------------------------------------------------------------


def test_a_document_id_with_dot_segments_is_unknown_not_a_502(fed: Seeded) -> None:
    x, _ = two_patients(fed)
    for doc in ("FR.national..", "FR..national", "FR.national.", "FR.."):
        r = httpx.get(f"{fed.gateway('AT')}/fhir/Binary/{doc}", headers=treated(fed, x).headers)
        assert r.status_code == 404, (doc, r.status_code)
        assert r.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("path", ["/fhir/Patient", "/fhir/DocumentReference", "/fhir/Binary/FR.national.x"])
def test_a_non_ascii_request_id_is_replaced_not_a_500(fed: Seeded, path: str) -> None:
    x, _ = two_patients(fed)
    consumer = treated(fed, x)
    params = {"identifier": f"urn:oid:{x.patient.issuer}|{x.patient.id}"} if path == "/fhir/Patient" else {}
    if path == "/fhir/DocumentReference":
        params = {"patient.identifier": f"urn:oid:{x.patient.issuer}|{x.patient.id}", "status": "current"}
    headers = [
        (b"authorization", consumer.headers["Authorization"].encode()),
        (b"x-request-id", "é-ü".encode()),
    ]
    r = httpx.get(f"{fed.gateway('AT')}{path}", params=params, headers=headers)
    assert r.status_code < 500, r.text


def test_a_bracketed_ipv4_retrieve_url_is_not_allowlisted_not_a_500(fed: Seeded) -> None:
    x, _ = two_patients(fed)
    pacs = urlsplit(fed.fed.plan.endpoints["FR"].pacs[x.series[0].retrieve_location_uid])
    r = httpx.get(
        rad160(fed, x, "study"),
        params={"retrieveURL": f"http://[127.0.0.1]:{pacs.port}{pacs.path}"},
        headers={**ACCEPT, **treated(fed, x).headers},
    )
    assert r.status_code == 403 and b"DICM" not in r.content


# -- public URLs come from configuration ----------------------------------------------------------------


def test_the_consumers_host_header_never_reaches_an_answer(fed: Seeded) -> None:
    x, _ = two_patients(fed)
    headers = {
        **ACCEPT,
        **treated(fed, x).headers,
        "Host": "evil.example:4444",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.example",
        "Forwarded": 'host="evil.example";proto=https',
        "X-Forwarded-Prefix": "/evil",
    }
    r = httpx.get(rad160(fed, x, "series"), headers=headers)
    assert r.status_code == 200
    locations = [line for line in r.content.split(b"\r\n") if line.lower().startswith(b"content-location:")]
    assert locations and all(fed.gateway("AT").encode() + b"/wado/" in line for line in locations)
    assert b"evil" not in r.content


def test_a_peer_cannot_name_a_public_base_that_is_no_configured_gateway(fed: Seeded) -> None:
    x, _ = two_patients(fed)
    series = x.series[0]
    url = (
        f"{fed.fed.plan.endpoints['FR'].border}/wado-rs/homeCommunityId/{fed.hcid('FR')}/RetrieveLocationUID/"
        f"{series.retrieve_location_uid}/studies/{x.study_instance_uid}/series/{series.series_instance_uid}"
    )
    assertion, pki = forged_assertion(fed, x, PatientRef(x.patient.issuer, x.patient.id))
    forged = {"forwarded": 'host="evil.example";proto=https', "x-forwarded-prefix": "/wado"}
    with httpx.Client(verify=pki.client_ssl_context("AT", peer="FR")) as client:
        r = client.get(url, headers={**ACCEPT, **forged, "x-ncp-assertion": assertion})
    assert r.status_code == 200
    assert b"evil" not in r.content and fed.fed.plan.endpoints["FR"].border.encode() in r.content


# -- copied assertions and revocation ----------------------------------------------------------------------


def test_a_copied_assertion_stays_useless_to_another_ncp_after_the_border_restarts(fed: Seeded) -> None:
    """The binding to NCP-B's certificate (RFC 8705 §3) is in the assertion: the border remembers nothing."""
    x, _ = two_patients(fed)
    assertion, pki = forged_assertion(fed, x, PatientRef(x.patient.issuer, x.patient.id))
    url = f"{fed.fed.plan.endpoints['FR'].border}/fhir/DocumentReference"
    params = {"patient.identifier": f"urn:oid:{x.patient.issuer}|{x.patient.id}", "status": "current"}
    with httpx.Client(verify=pki.client_ssl_context("AT", peer="FR")) as client:
        assert client.get(url, params=params, headers={"x-ncp-assertion": assertion}).status_code == 200
    with fed.fed.role_down("FR/gateway"):
        pass
    with httpx.Client(verify=pki.client_ssl_context("AT", peer="FR")) as client:
        again = client.get(url, params=params, headers={"x-ncp-assertion": assertion})
    with httpx.Client(verify=pki.client_ssl_context("FR", peer="FR")) as client:
        copied = client.get(url, params=params, headers={"x-ncp-assertion": assertion})
    assert again.status_code == 200
    assert copied.status_code == 401 and "bound to another client certificate" in copied.text


def test_a_manifest_entered_in_error_stops_its_images_within_5_s(fed: Seeded) -> None:
    studies = fed.published["FR"].data.studies
    x = studies[-1]
    consumer = treated(fed, x)
    url = rad160(fed, x, "instance")
    assert httpx.get(url, headers={**ACCEPT, **consumer.headers}).status_code == 200
    registry = fed.fed.plan.endpoints["FR"].registries["national"]
    docs = httpx.get(
        f"{registry}/DocumentReference",
        params={
            "study-instance-uid": x.study_instance_uid,
            "status": "current",
            "patient.identifier": f"urn:oid:{x.patient.issuer}|{x.patient.id}",
        },
    ).json()
    for entry in docs["entry"]:
        assert httpx.delete(f"{registry}/DocumentReference/{entry['resource']['id']}").status_code == 204
    withdrawn = time.monotonic()
    while (status := httpx.get(url, headers={**ACCEPT, **consumer.headers}).status_code) == 200:
        assert time.monotonic() - withdrawn < 5.5, "RAD-160 still served 5 s after the manifest was withdrawn"
        time.sleep(0.25)
    assert status == 403


def test_a_credential_in_the_query_never_crosses_the_border(fed: Seeded) -> None:
    x, _ = two_patients(fed)
    consumer = treated(fed, x)
    token = consumer.headers["Authorization"].removeprefix("Bearer ")
    r = httpx.get(
        rad160(fed, x, "series"), params={"access_token": token}, headers={**ACCEPT, **consumer.headers}
    )
    assert r.status_code == 400 and "Authorization header" in r.headers.get("warning", "")
