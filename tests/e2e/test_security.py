"""Security across the border: tokens on every request, mTLS between NCPs, audit at every hop."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_federations import Seeded, start_seeded

from ncp.consumer.client import ImagingConsumer
from ncp.security.audit import AUDIT_SCOPE, AuditStore
from ncp.security.pki import FederationPki
from ncp.security.tokens import ncp_id

ACCEPT = {"Accept": 'multipart/related; type="application/dicom"'}


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    yield from start_seeded("builtin:default", tmp_path_factory.mktemp("secure"), secure=True)


def treated(seeded: Seeded, country: str = "FR", index: int = 0) -> tuple[ImagingConsumer, object]:
    study = seeded.published[country].data.studies[index]
    consumer = ImagingConsumer(seeded.gateway("AT"))
    consumer.authenticate()
    consumer.identify(study.patient.issuer, study.patient.id)
    consumer.open_treatment_context(study.patient.issuer, study.patient.id)
    return consumer, study


def xc_url(seeded: Seeded, study: object) -> str:
    s = study  # a StudyRecord
    series = s.series[0]  # type: ignore[attr-defined]
    return (
        f"{seeded.gateway('AT')}/wado/homeCommunityId/{seeded.hcid('FR')}/RetrieveLocationUID/"
        f"{series.retrieve_location_uid}/studies/{s.study_instance_uid}/series/{series.series_instance_uid}"
    )  # type: ignore[attr-defined]


def audit_events(seeded: Seeded, country: str, request_id: str) -> dict[str, Any]:
    """The country's AuditEvents for one X-Request-Id, read as an auditor (a token with the audit scope)."""
    gateway = seeded.gateway(country)
    token = httpx.post(f"{gateway}/idp/token", data={"scope": AUDIT_SCOPE}).json()["access_token"]
    answer = httpx.get(
        f"{gateway}/fhir/AuditEvent",
        params={"request-id": request_id},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_the_three_steps_work_with_tokens_and_mtls(secure: Seeded) -> None:
    consumer, study = treated(secure)
    entry = consumer.find(
        study.patient.issuer, study.patient.id, study_uid=study.study_instance_uid, kind="manifest"
    )[0]  # type: ignore[attr-defined]
    assert consumer.retrieve_images(secure.hcid("FR"), consumer.retrieve_manifest(entry)).complete
    assert secure.fed.plan.endpoints["FR"].border.startswith("https://")


def test_a_treatment_context_is_opened_only_for_a_patient_that_identification_finds(secure: Seeded) -> None:
    fr = secure.fed.topology.country("FR")
    consumer = ImagingConsumer(secure.gateway("AT"))
    consumer.authenticate()
    form = {"patient_id": "NO-SUCH-PATIENT", "patient_issuer": fr.patient_id_issuer}
    rid = f"idp-{uuid.uuid4()}"
    r = httpx.post(
        f"{secure.gateway('AT')}/idp/treatment", data=form, headers={**consumer.headers, "X-Request-Id": rid}
    )
    assert r.status_code == 404
    assert r.json()["resourceType"] == "OperationOutcome" and "access_token" not in r.text
    refused = audit_events(secure, "AT", rid)
    assert [e["resource"]["outcome"] for e in refused["entry"]] == ["4"]  # ITI-71 at AT, audited
    assert AuditStore(Path(secure.fed.plan.run_dir) / "FR" / "audit.sqlite").count({"request-id": rid}) == 1
    known = secure.published["FR"].data.patients[0]
    form = {"patient_id": known.id, "patient_issuer": known.issuer}
    r = httpx.post(f"{secure.gateway('AT')}/idp/treatment", data=form, headers=consumer.headers)
    assert r.status_code == 200 and r.json()["access_token"]
    r = httpx.post(f"{secure.gateway('AT')}/idp/treatment", data=form)  # no HCP token: nobody asked
    assert r.status_code == 401


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer not-a-jwt", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "Basic dXNlcjpwYXNz"],
)
def test_images_need_a_valid_token(secure: Seeded, authorization: str | None) -> None:
    _, study = treated(secure)
    headers = {**ACCEPT, **({"Authorization": authorization} if authorization else {})}
    r = httpx.get(xc_url(secure, study), headers=headers)
    assert r.status_code == 401
    assert b"DICM" not in r.content


def test_another_patients_study_is_refused_with_zero_dicom_bytes(secure: Seeded) -> None:
    consumer, _ = treated(secure, index=0)
    other = next(
        s
        for s in secure.published["FR"].data.studies
        if s.patient != secure.published["FR"].data.studies[0].patient
    )
    rid = f"deny-{uuid.uuid4()}"
    r = httpx.get(xc_url(secure, other), headers={**ACCEPT, **consumer.headers, "X-Request-Id": rid})
    assert r.status_code == 403
    assert b"DICM" not in r.content
    at_events = audit_events(secure, "AT", rid)
    assert [e["resource"]["outcome"] for e in at_events["entry"]] == ["4"]
    fr_border = AuditStore(Path(secure.fed.plan.run_dir) / "FR" / "audit.sqlite")
    denied = fr_border.records({"request-id": rid})
    assert [(r.transaction, r.outcome, r.status) for r in denied] == [("RAD-160", "4", 403)]


def test_hcp_token_alone_cannot_query_documents(secure: Seeded) -> None:
    study = secure.published["FR"].data.studies[0]
    consumer = ImagingConsumer(secure.gateway("AT"))
    consumer.authenticate()
    r = httpx.get(
        f"{secure.gateway('AT')}/fhir/DocumentReference",
        headers=consumer.headers,
        params={
            "patient.identifier": f"urn:oid:{study.patient.issuer}|{study.patient.id}",
            "status": "current",
        },
    )
    assert r.status_code == 403
    assert r.json()["resourceType"] == "OperationOutcome"


def test_border_refuses_a_client_without_certificate_at_the_handshake(secure: Seeded) -> None:
    pki = FederationPki.load(secure.fed.plan.pki_dir)  # type: ignore[arg-type]
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(
            f"{secure.fed.plan.endpoints['FR'].border}/fhir/Patient", verify=ctx, params={"identifier": "x"}
        )


def test_border_refuses_a_valid_ncp_without_assertion(secure: Seeded) -> None:
    pki = FederationPki.load(secure.fed.plan.pki_dir)  # type: ignore[arg-type]
    study = secure.published["FR"].data.studies[0]
    with httpx.Client(verify=pki.client_ssl_context("AT", peer="FR")) as client:
        r = client.get(
            f"{secure.fed.plan.endpoints['FR'].border}/fhir/DocumentReference",
            params={
                "patient.identifier": f"urn:oid:{study.patient.issuer}|{study.patient.id}",
                "status": "current",
            },
        )
    assert r.status_code == 401


def test_every_transaction_is_audited_at_both_gateways_linked_by_request_id(secure: Seeded) -> None:
    consumer, study = treated(secure)
    rid = f"audit-{uuid.uuid4()}"
    consumer.headers["X-Request-Id"] = rid
    entries = consumer.find(
        study.patient.issuer, study.patient.id, study_uid=study.study_instance_uid, kind="manifest"
    )  # type: ignore[attr-defined]
    consumer.retrieve_images(secure.hcid("FR"), consumer.retrieve_manifest(entries[0]))
    requests_made = len([log for log in consumer.log if log.step in ("find", "retrieve", "images")])
    at_gateway = audit_events(secure, "AT", rid)
    assert at_gateway["total"] == requests_made
    fr_border = AuditStore(Path(secure.fed.plan.run_dir) / "FR" / "audit.sqlite")
    assert fr_border.count({"request-id": rid}) == requests_made


def _bad_tokens(seeded: Seeded) -> dict[str, tuple[str | None, int]]:
    """Credentials that must not open the gateway, with the status each deserves."""
    study = seeded.published["FR"].data.studies[0]
    foreign = ImagingConsumer(seeded.gateway("FR"))  # a valid token, but from France's IdP
    foreign.authenticate()
    foreign.open_treatment_context(study.patient.issuer, study.patient.id)
    hcp_only = ImagingConsumer(seeded.gateway("AT"))
    hcp_only.authenticate()
    return {
        "missing": (None, 401),
        "garbage": ("Bearer x.y.z", 401),
        "alg-none": ("Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4IiwiYXVkIjoiYSJ9.", 401),
        "foreign-idp": (foreign.headers["Authorization"], 401),
        "no-treatment-context": (hcp_only.headers["Authorization"], 403),
    }


@pytest.mark.parametrize("transaction", ["ITI-67", "ITI-68", "RAD-160"])
@pytest.mark.parametrize("case", ["missing", "garbage", "alg-none", "foreign-idp", "no-treatment-context"])
def test_token_negative_matrix_is_refused_and_audited(secure: Seeded, transaction: str, case: str) -> None:
    consumer, study = treated(secure)
    entry = consumer.find(
        study.patient.issuer,
        study.patient.id,
        study_uid=study.study_instance_uid,  # type: ignore[attr-defined]
        kind="manifest",
    )[0]
    authorization, status = _bad_tokens(secure)[case]
    url, params = {
        "ITI-67": (
            f"{secure.gateway('AT')}/fhir/DocumentReference",
            {
                "patient.identifier": f"urn:oid:{study.patient.issuer}|{study.patient.id}",  # type: ignore[attr-defined]
                "status": "current",
            },
        ),
        "ITI-68": (entry.urls["application/dicom"], {}),
        "RAD-160": (xc_url(secure, study), {}),
    }[transaction]
    rid = f"neg-{transaction}-{case}-{uuid.uuid4()}"
    headers = {**ACCEPT, "X-Request-Id": rid, **({"Authorization": authorization} if authorization else {})}
    r = httpx.get(url, params=params, headers=headers)
    assert r.status_code == status
    assert b"DICM" not in r.content
    events = audit_events(secure, "AT", rid)
    assert events["total"] == 1
    assert events["entry"][0]["resource"]["outcome"] == "4"


BORDER_PATHS = [
    "/fhir/Patient?identifier=urn:oid:2.999.250.2|X",
    "/fhir/DocumentReference?patient.identifier=urn:oid:2.999.250.2|X&status=current",
    "/fhir/Binary/national.x",
    "/wado-rs/homeCommunityId/2.999.250.1/RetrieveLocationUID/2.25.1/studies/1.2.3",
]


@pytest.mark.parametrize("path", BORDER_PATHS)
@pytest.mark.parametrize("credentials", ["none", "expired", "not-yet-valid", "unknown-ca"])
def test_mtls_refusal_matrix_at_the_handshake(secure: Seeded, path: str, credentials: str) -> None:
    pki = FederationPki.load(secure.fed.plan.pki_dir)  # type: ignore[arg-type]
    pair = {
        "none": None,
        "expired": pki.expired_client("AT"),
        "not-yet-valid": pki.not_yet_valid_client("AT"),
        "unknown-ca": pki.unknown_ca_client("AT"),
    }[credentials]
    refused = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError)
    with httpx.Client(verify=pki.ssl_context_with(pair, peer="FR")) as client, pytest.raises(refused):
        client.get(f"{secure.fed.plan.endpoints['FR'].border}{path}")


@pytest.mark.parametrize("path", BORDER_PATHS)
def test_an_unregistered_certificate_is_refused_before_any_application_data(
    secure: Seeded, path: str
) -> None:
    pki = FederationPki.load(secure.fed.plan.pki_dir)  # type: ignore[arg-type]
    with httpx.Client(verify=pki.ssl_context_with(pki.unregistered_client("AT"), peer="FR")) as client:
        r = client.get(f"{secure.fed.plan.endpoints['FR'].border}{path}")
    assert r.status_code == 403
    assert b"DICM" not in r.content and b'DocumentReference"' not in r.content


def test_ncp_b_signs_one_assertion_per_context_for_all_its_image_requests(secure: Seeded) -> None:
    """NCP-B reuses its assertion, bound to its client certificate (RFC 8705 §3), for the context's images;
    both hops still audit every request."""
    consumer, study = treated(secure)
    rid = f"reuse-{uuid.uuid4()}"
    consumer.headers["X-Request-Id"] = rid
    for _ in range(5):
        assert httpx.get(xc_url(secure, study), headers={**ACCEPT, **consumer.headers}).status_code == 200
    at_border = AuditStore(Path(secure.fed.plan.run_dir) / "FR" / "audit.sqlite").records({"request-id": rid})
    assert len(at_border) == 5 and len({record.token_id for record in at_border}) == 1
    assert audit_events(secure, "AT", rid)["total"] == 5


def test_an_ncp_assertion_is_refused_over_another_ncps_certificate(secure: Seeded) -> None:
    """A copy of NCP-B's assertion opens nothing for the holder of another certificate of the federation."""
    consumer, study = treated(secure)
    pki = FederationPki.load(secure.fed.plan.pki_dir)  # type: ignore[arg-type]
    context = pki.gateway_verifier("AT").verify(consumer.headers["Authorization"].removeprefix("Bearer "))
    assertion = pki.ncp_signer("AT").sign(context, audience=ncp_id("FR"))
    url = f"{secure.fed.plan.endpoints['FR'].border}/fhir/DocumentReference"
    params = {"patient.identifier": f"urn:oid:{study.patient.issuer}|{study.patient.id}", "status": "current"}  # type: ignore[attr-defined]
    with httpx.Client(verify=pki.client_ssl_context("AT", peer="FR")) as ncp_b:
        own = [ncp_b.get(url, params=params, headers={"x-ncp-assertion": assertion}) for _ in range(2)]
    with httpx.Client(verify=pki.client_ssl_context("FR", peer="FR")) as other:
        copied = other.get(url, params=params, headers={"x-ncp-assertion": assertion})
    assert [r.status_code for r in own] == [200, 200] and own[0].json()["total"] >= 1
    assert copied.status_code == 401 and "bound to another client certificate" in copied.text
    assert assertion not in copied.text
