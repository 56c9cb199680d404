"""NG: refusals. Each must be a clear 4xx (OperationOutcome, or DICOMweb status + Warning), no DICOM bytes."""

from __future__ import annotations

import time
from datetime import timedelta

import httpx

from ncp.link import FaultSpec
from ncp.scenario.context import ScenarioContext
from ncp.scenario.model import ScenarioSkipped, scenario
from ncp.scenario.steps import DICOM_MULTIPART, auth_headers, find_manifest, search_documents, summary, xc_url
from ncp.security.pki import FederationPki

_UNKNOWN_OID = "2.999.999.999.1"
_UNKNOWN_UID = "2.25.1234567890123456789"


def _refused(ctx: ScenarioContext, r: httpx.Response, expected: int | tuple[int, ...], what: str) -> None:
    allowed = expected if isinstance(expected, tuple) else (expected,)
    ctx.check(f"{what}: {'/'.join(map(str, allowed))}", r.status_code in allowed, f"got {r.status_code}")
    ctx.check("no DICOM bytes in the refusal", b"DICM" not in r.content, f"{len(r.content)} bytes")
    if r.headers.get("content-type", "").startswith("application/fhir+json"):
        ctx.check("a FHIR OperationOutcome", r.json().get("resourceType") == "OperationOutcome", r.text[:120])
    else:
        ctx.check(
            "a Warning header (PS3.18 8.7.4)", bool(r.headers.get("warning")), r.headers.get("warning", "")
        )


@scenario(
    "NG-001",
    "Unknown patient: nobody found, no treatment context",
    tags=("negative", "query"),
    transactions=("ITI-78", "ITI-67"),
)
def unknown_patient(ctx: ScenarioContext) -> None:
    """A well-formed identifier of country A's issuer that matches nobody: no Patient, and no treatment
    context for it (with security off: no documents)."""
    issuer = ctx.topology.country(ctx.source).patient_id_issuer
    consumer = ctx.consumer(ctx.treatment)
    gateway = ctx.gateway(ctx.treatment)
    identifier = f"urn:oid:{issuer}|NO-SUCH-PATIENT"
    with ctx.step("identify an unknown patient (PDQm-style)"):
        if ctx.target.secure:
            consumer.authenticate()
        headers = {**consumer.headers, "Accept": "application/fhir+json"}
        r = ctx.http("GET", f"{gateway}/fhir/Patient", headers=headers, params={"identifier": identifier})
        ctx.check(
            "200 with no Patient", r.status_code == 200 and not r.json().get("entry"), f"{r.status_code}"
        )
    if ctx.target.secure:
        with ctx.step("the identity provider opens no treatment context for the unknown patient"):
            form = {"patient_id": "NO-SUCH-PATIENT", "patient_issuer": issuer}
            r = ctx.http("POST", f"{gateway}/idp/treatment", headers=consumer.headers, data=form)
            ctx.check(
                "404 OperationOutcome, no token",
                r.status_code == 404 and "access_token" not in r.text,
                f"{r.status_code}",
            )
        return  # without a context there is nothing to search (NG-010 shows that refusal)
    with ctx.step("search DocumentReference for the unknown patient"):
        headers = {**consumer.headers, "Accept": "application/fhir+json"}
        r = ctx.http(
            "GET",
            f"{gateway}/fhir/DocumentReference",
            headers=headers,
            params={"patient.identifier": identifier, "status": "current"},
        )
        body = r.json() if r.status_code == 200 else {}
        ctx.check("200 with a searchset Bundle", body.get("type") == "searchset", f"{r.status_code}")
        ctx.check("no entries", not body.get("entry") and body.get("total", 0) == 0, r.text[:120])


@scenario(
    "NG-002",
    "Unknown homeCommunityId: 404 + Warning",
    tags=("negative", "xc-wado"),
    transactions=("RAD-160",),
)
def unknown_community(ctx: ScenarioContext) -> None:
    """RAD-160 names a community the federation does not know."""
    study = ctx.studies(ctx.source)[0]
    consumer = ctx.consumer(ctx.treatment, study.patient)
    with ctx.step("RAD-160 to an unknown homeCommunityId"):
        r = ctx.http(
            "GET", xc_url(ctx, ctx.treatment, study, hcid=_UNKNOWN_OID), headers=auth_headers(consumer)
        )
        _refused(ctx, r, 404, "unknown community")


@scenario(
    "NG-003",
    "Unknown Retrieve Location UID: 404",
    tags=("negative", "xc-wado"),
    transactions=("RAD-160",),
)
def unknown_rluid(ctx: ScenarioContext) -> None:
    """RAD-160 names a Retrieve Location UID no PACS of the responding community has."""
    study = ctx.studies(ctx.source)[0]
    consumer = ctx.consumer(ctx.treatment, study.patient)
    with ctx.step("RAD-160 with an unknown Retrieve Location UID"):
        r = ctx.http(
            "GET", xc_url(ctx, ctx.treatment, study, rluid=_UNKNOWN_UID), headers=auth_headers(consumer)
        )
        _refused(ctx, r, 404, "unknown Retrieve Location UID")


@scenario(
    "NG-004",
    "retrieveURL outside the allowlist: 403",
    tags=("negative", "xc-wado", "security"),
    transactions=("RAD-160",),
)
def foreign_retrieve_url(ctx: ScenarioContext) -> None:
    """The responding gateway never connects where a retrieveURL says unless it is one of its PACS."""
    study = ctx.studies(ctx.source)[0]
    consumer = ctx.consumer(ctx.treatment, study.patient)
    for target in ("http://evil.example/dicom-web/", "http://127.0.0.1:1/dicom-web/"):
        with ctx.step(f"RAD-160 with retrieveURL={target}"):
            r = ctx.http(
                "GET",
                xc_url(ctx, ctx.treatment, study),
                headers=auth_headers(consumer),
                params={"retrieveURL": target},
            )
            _refused(ctx, r, 403, "non-allowlisted retrieveURL")


@scenario(
    "NG-005",
    "Unsupported transfer syntax: 406",
    tags=("negative", "xc-wado"),
    transactions=("RAD-160",),
)
def unsupported_transfer_syntax(ctx: ScenarioContext) -> None:
    """Accept asks for JPEG Baseline (1.2.840.10008.1.2.4.50), not offered by the source (PS3.18 8.7.3)."""
    study = ctx.studies(ctx.source)[0]
    consumer = ctx.consumer(ctx.treatment, study.patient)
    accept = f"{DICOM_MULTIPART}; transfer-syntax=1.2.840.10008.1.2.4.50"
    with ctx.step("RAD-160 with Accept transfer-syntax=1.2.840.10008.1.2.4.50"):
        r = ctx.http("GET", xc_url(ctx, ctx.treatment, study), headers=auth_headers(consumer, accept))
        _refused(ctx, r, 406, "not acceptable")


@scenario(
    "NG-006",
    "Missing or malformed token: 401",
    tags=("negative", "security"),
    transactions=("RAD-160", "ITI-67"),
)
def missing_token(ctx: ScenarioContext) -> None:
    """No Authorization, a non-JWT bearer, an unsigned JWT and Basic credentials are all refused."""
    study = ctx.studies(ctx.source)[0]
    ctx.require(ctx.target.secure, "the federation runs with security on")
    for label, value in (
        ("no Authorization", None),
        ("not a JWT", "Bearer not-a-jwt"),
        ("alg=none JWT", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."),
        ("Basic", "Basic dXNlcjpwYXNz"),
    ):
        with ctx.step(f"RAD-160 with {label}"):
            headers = {"Accept": DICOM_MULTIPART, **({"Authorization": value} if value else {})}
            r = ctx.http("GET", xc_url(ctx, ctx.treatment, study), headers=headers)
            _refused(ctx, r, 401, label)


def _idp_token(ctx: ScenarioContext, country: str, *, clock_offset: float = 0.0) -> str:
    pki_dir = ctx.target.pki_dir
    if pki_dir is None:  # an outside target's IdP keys are its own
        raise ScenarioSkipped("forging a token needs the federation's test PKI")
    idp = FederationPki.load(pki_dir).identity_provider(country, home_community_id=ctx.hcid(country))
    if clock_offset:
        idp = type(idp)(
            country,
            FederationPki.load(pki_dir).idp_key(country),
            idp.issuer,
            clock=lambda: time.time() + clock_offset,
        )
    return idp.hcp_token(
        "dr-scenario", "2211", "Hospital", "Hospital", ["patient/*.read"], timedelta(minutes=5)
    )


@scenario(
    "NG-007",
    "Expired token: 401",
    tags=("negative", "security"),
    transactions=("ITI-67", "RAD-160"),
)
def expired_token(ctx: ScenarioContext) -> None:
    """A token signed by the right IdP that expired yesterday (IUA: exp is checked)."""
    study = ctx.studies(ctx.source)[0]
    token = _idp_token(ctx, ctx.treatment, clock_offset=-86400.0)
    with ctx.step("RAD-160 with an expired token"):
        headers = {"Accept": DICOM_MULTIPART, "Authorization": f"Bearer {token}"}
        r = ctx.http("GET", xc_url(ctx, ctx.treatment, study), headers=headers)
        _refused(ctx, r, 401, "expired token")


@scenario(
    "NG-008",
    "Token of a foreign IdP: 401/403",
    tags=("negative", "security"),
    transactions=("ITI-67", "RAD-160"),
)
def foreign_token(ctx: ScenarioContext) -> None:
    """A valid token of country A's IdP (audience NCP-A) presented at country B's gateway."""
    study = ctx.studies(ctx.source)[0]
    token = _idp_token(ctx, ctx.source)
    headers = {"Accept": DICOM_MULTIPART, "Authorization": f"Bearer {token}"}
    with ctx.step("RAD-160 at NCP-B with NCP-A's token"):
        r = ctx.http("GET", xc_url(ctx, ctx.treatment, study), headers=headers)
        _refused(ctx, r, (401, 403), "foreign token")
    with ctx.step("ITI-67 at NCP-B with NCP-A's token"):
        r = ctx.http(
            "GET",
            f"{ctx.gateway(ctx.treatment)}/fhir/DocumentReference",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"},
            params={
                "patient.identifier": f"urn:oid:{study.patient.issuer}|{study.patient.id}",
                "status": "current",
            },
        )
        _refused(ctx, r, (401, 403), "foreign token")


@scenario(
    "NG-009",
    "Another patient's study: 403",
    tags=("negative", "security"),
    transactions=("RAD-160",),
)
def another_patients_study(ctx: ScenarioContext) -> None:
    """The treatment context is bound to one patient; a study of another patient is refused at the border."""
    studies = ctx.studies(ctx.source)
    mine = studies[0]
    other = ctx.study(ctx.source, lambda s: s.patient != mine.patient, "of another patient")
    consumer = ctx.consumer(ctx.treatment, mine.patient)
    with ctx.step("RAD-160 for another patient's study"):
        r = ctx.http("GET", xc_url(ctx, ctx.treatment, other), headers=auth_headers(consumer))
        _refused(ctx, r, 403, "another patient's study")


@scenario(
    "NG-010",
    "HCP token without a treatment context: 403 on documents",
    tags=("negative", "security"),
    transactions=("ITI-67",),
)
def no_treatment_context(ctx: ScenarioContext) -> None:
    """An authenticated HCP who has not opened a treatment context for the patient cannot search."""
    study = ctx.studies(ctx.source)[0]
    consumer = ctx.consumer(ctx.treatment)
    with ctx.step("HCP token from the IdP"):
        consumer.authenticate()
        ctx.check("HCP token issued", "Authorization" in consumer.headers, "")
    with ctx.step("ITI-67 with the HCP token only"):
        r = search_documents(ctx, consumer, ctx.treatment, study.patient)
        _refused(ctx, r, 403, "no treatment context")


@scenario(
    "NG-011",
    "Unknown patient identifier issuer: 404 OperationOutcome",
    tags=("negative", "query"),
    transactions=("ITI-67",),
)
def unknown_issuer(ctx: ScenarioContext) -> None:
    """The issuer OID routes the search to a community; an issuer of no community cannot be routed."""
    patient = ctx.studies(ctx.source)[0].patient
    consumer = ctx.consumer(ctx.treatment, patient)
    with ctx.step("ITI-67 with an unknown issuer"):
        r = ctx.http(
            "GET",
            f"{ctx.gateway(ctx.treatment)}/fhir/DocumentReference",
            headers={**consumer.headers, "Accept": "application/fhir+json"},
            params={"patient.identifier": f"urn:oid:{_UNKNOWN_OID}|X", "status": "current"},
        )
        _refused(ctx, r, (403, 404), "unknown issuer")


@scenario(
    "NG-012",
    "Source PACS down: 502 + Warning, never a short study",
    tags=("negative", "xc-wado", "upstream"),
    transactions=("RAD-160",),
)
def pacs_down(ctx: ScenarioContext) -> None:
    """The responding gateway cannot reach the PACS: the error reaches the consumer before any DICOM
    byte, with a Warning (docs/architecture.md, "Data plane"), and the consumer reports a failure, not a
    study."""
    study = ctx.studies(ctx.source)[0]
    pacs = ctx.topology.country(ctx.source).pacs_by_rluid(study.series[0].retrieve_location_uid)
    ctx.require(pacs is not None, "the study's PACS is in the topology")
    assert pacs is not None
    kind = {"embedded": "pacs", "orthanc": "orthanc"}.get(pacs.backend)
    if kind is None:
        raise ScenarioSkipped(f"PACS {pacs.id} runs outside the federation: no outage can be caused")
    consumer = ctx.consumer(ctx.treatment, study.patient)
    manifest = consumer.retrieve_manifest(find_manifest(ctx, consumer, study))
    with ctx.outage(f"{ctx.source}/{kind}/{pacs.id}"), ctx.step(f"RAD-160 while PACS {pacs.id} is down"):
        r = ctx.http("GET", xc_url(ctx, ctx.treatment, study), headers=auth_headers(consumer))
        _refused(ctx, r, (502, 503, 504), "upstream unavailable")
        retrieval = consumer.retrieve_images(ctx.hcid(ctx.source), manifest)
        hit = [s for s in retrieval.series if study.series[0].series_instance_uid in s.url]
        ctx.check(
            "the consumer reports the series as failed, with nothing received",
            bool(hit) and all(s.error and not s.received for s in hit) and not retrieval.complete,
            summary(retrieval),
        )
    with ctx.step(f"PACS {pacs.id} back: the same request succeeds"):
        r = ctx.http("GET", xc_url(ctx, ctx.treatment, study), headers=auth_headers(consumer))
        ctx.check("200 once the PACS is back", r.status_code == 200, f"got {r.status_code}")


# More than the TLS handshake and a response's headers from NCP-A, less than a series of two 16 KB instances.
_CUT_AFTER = 20_000


@scenario(
    "NG-013",
    "Link cut mid-stream: a failure, never a short study",
    tags=("negative", "xc-wado", "upstream", "link"),
    transactions=("RAD-160",),
    topology="builtin:wan",
)
def link_cut_mid_stream(ctx: ScenarioContext) -> None:
    """The link from NCP-B to NCP-A resets every connection after 20 KB from NCP-A, so a series is cut
    after its 200 and first bytes reached the consumer. The initiating gateway must abort its response
    (docs/architecture.md, "Data plane") and the consumer report the series as failed, never as a shorter
    success; once the link is mended, the same retrieval is complete."""
    a, b = ctx.source, ctx.treatment
    several = "with a series of several instances"
    study = ctx.study(a, lambda s: any(len(x.instances) > 1 for x in s.series), several)
    consumer = ctx.consumer(b, study.patient)
    manifest = consumer.retrieve_manifest(find_manifest(ctx, consumer, study))
    cut_link = ctx.link_fault(a, b, FaultSpec("reset", _CUT_AFTER))
    with cut_link, ctx.step(f"RAD-160 while the {a}-{b} link resets after {_CUT_AFTER} bytes"):
        retrieval = consumer.retrieve_images(ctx.hcid(a), manifest)
        cut = [s for s in retrieval.series if not s.complete]
        ctx.check("series are cut", bool(cut) and not retrieval.complete, summary(retrieval))
        ctx.check(
            "a cut after the 200 is an error at the consumer, not a shorter series",
            any(s.status == 200 for s in cut) and all(s.error for s in cut),
            "; ".join(f"{s.status} {len(s.received)}/{len(s.expected)} {s.error}" for s in cut),
        )
    with ctx.step("the link mended: the same retrieval is complete"):
        again = consumer.retrieve_images(ctx.hcid(a), manifest)
        ctx.check("every instance arrived", again.complete, summary(again))
