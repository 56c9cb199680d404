"""NCP assertions are bound to the sending NCP's TLS certificate and reused within their context (issue 16).

RFC 8705 §3: NCP-B's assertion carries ``cnf.x5t#S256``, the SHA-256 thumbprint of the client certificate
NCP-B presents; NCP-A accepts it only over a connection whose peer presented that very certificate. A copy
taken off the wire or out of a log is therefore useless to anyone else, so NCP-B signs one assertion per
context and peer and reuses it while it has life left, and NCP-A keeps no list of assertions seen.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import ssl
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from token_clock import NOW, PATIENT, Clock

from ncp.errors import Forbidden, NcpError, Unauthorized, fhir_error_response
from ncp.gateway.guard import Guard
from ncp.security import tokens
from ncp.security.pki import FederationPki
from ncp.security.tokens import (
    REUSED_CACHE_SIZE,
    Claims,
    IdentityProvider,
    NcpAssertionSigner,
    PatientRef,
    TokenVerifier,
    certificate_thumbprint,
    idp_issuer,
    ncp_id,
)


def context_of(pki: FederationPki, *, clock: Callable[[], float], lifetime: float = 300) -> Claims:
    """AT's verified treatment context for PATIENT (and its HCP token) of ``lifetime`` seconds, as AT's
    gateway holds it."""
    idp = IdentityProvider("AT", pki.idp_key("AT"), idp_issuer("AT"), clock=clock)
    span = timedelta(seconds=lifetime)
    hcp = idp.hcp_token("dr-hofer", "221", "AKH Wien", "Hospital", ["RAD-160"], lifetime=span)
    treatment = idp.treatment_token(hcp, PATIENT.id, PATIENT.issuer, lifetime=span)
    return TokenVerifier(pki.trusted_idps(["AT"]), ncp_id("AT"), clock=clock).verify(treatment)


def signer_for(pki: FederationPki, clock: Callable[[], float], *, bound: bool = True) -> NcpAssertionSigner:
    thumbprint = pki.client_thumbprint("AT") if bound else None
    return NcpAssertionSigner("AT", pki.ncp_signing_key("AT"), certificate_thumbprint=thumbprint, clock=clock)


def border_verifier(pki: FederationPki, clock: Callable[[], float]) -> TokenVerifier:
    return TokenVerifier(pki.trusted_ncps(["AT", "NO"]), ncp_id("FR"), clock=clock)


def der(pki: FederationPki, country: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pki.client_credentials(country).cert.read_text())


# --- the binding -------------------------------------------------------------------------------------------


def test_the_assertion_carries_the_thumbprint_of_the_ncps_client_certificate(pki: FederationPki) -> None:
    assertion = signer_for(pki, lambda: NOW).sign(context_of(pki, clock=lambda: NOW), audience=ncp_id("FR"))
    cnf = jwt.decode(assertion, options={"verify_signature": False})["cnf"]
    digest = hashlib.sha256(der(pki, "AT")).digest()
    assert cnf == {"x5t#S256": base64.urlsafe_b64encode(digest).rstrip(b"=").decode()}  # RFC 8705 §3.1


def test_a_bound_assertion_is_accepted_only_with_the_certificate_it_names(pki: FederationPki) -> None:
    assertion = signer_for(pki, lambda: NOW).sign(context_of(pki, clock=lambda: NOW), audience=ncp_id("FR"))
    border = border_verifier(pki, lambda: NOW)
    at, no = certificate_thumbprint(der(pki, "AT")), certificate_thumbprint(der(pki, "NO"))

    assert border.verify(assertion, patient=PATIENT, country="AT", bound_to=at).patient == PATIENT
    for _ in range(2):  # the second time from the verifier's memory: the binding is still checked
        with pytest.raises(Unauthorized, match="bound to another client certificate") as refused:
            border.verify(assertion, patient=PATIENT, bound_to=no)
        assert assertion not in str(refused.value) and at not in str(refused.value)


def test_an_assertion_without_binding_is_refused_where_one_is_required(pki: FederationPki) -> None:
    unbound = signer_for(pki, lambda: NOW, bound=False).sign(
        context_of(pki, clock=lambda: NOW), audience=ncp_id("FR")
    )
    with pytest.raises(Unauthorized, match="not bound to a client certificate"):
        border_verifier(pki, lambda: NOW).verify(unbound, bound_to=certificate_thumbprint(der(pki, "AT")))


@pytest.mark.parametrize(
    "cnf", [{"x5t#S256": "abc"}, {"x5t#S256": 42}, {"x5t#S256": "=" * 43}, ["x5t#S256"], "thumbprint"]
)
def test_a_malformed_binding_is_refused(pki: FederationPki, cnf: Any) -> None:
    good = signer_for(pki, lambda: NOW).sign(context_of(pki, clock=lambda: NOW), audience=ncp_id("FR"))
    claims = {**jwt.decode(good, options={"verify_signature": False}), "cnf": cnf}
    forged = jwt.encode(claims, pki.ncp_signing_key("AT"), algorithm="ES256")
    with pytest.raises(Unauthorized, match="malformed token claims"):
        border_verifier(pki, lambda: NOW).verify(forged, bound_to=certificate_thumbprint(der(pki, "AT")))


def test_a_signer_refuses_a_thumbprint_that_is_no_sha256(pki: FederationPki) -> None:
    with pytest.raises(ValueError, match="base64url SHA-256"):
        NcpAssertionSigner("AT", pki.ncp_signing_key("AT"), certificate_thumbprint="ab" * 32)


# --- reuse at NCP-B -----------------------------------------------------------------------------------------


def test_one_assertion_serves_a_context_and_peer_while_it_has_life_left(pki: FederationPki) -> None:
    signer = signer_for(pki, lambda: NOW)
    context = context_of(pki, clock=lambda: NOW)
    first = signer.reusable(context, audience=ncp_id("FR"))
    assert all(signer.reusable(context, audience=ncp_id("FR")) == first for _ in range(50))
    assert signer.reusable(context, audience=ncp_id("NO")) != first  # another peer, another assertion
    other = dataclasses.replace(context, token_id="another-treatment-context")
    assert signer.reusable(other, audience=ncp_id("FR")) != first
    assert signer.sign(context, audience=ncp_id("FR")) != first  # sign() always signs anew


def test_an_assertion_near_its_expiry_is_replaced_by_a_different_one(pki: FederationPki, tick: Clock) -> None:
    """5 min assertions: reused while 100 s (a third) or more are left, then re-signed."""
    signer = signer_for(pki, tick)
    context = context_of(pki, clock=tick, lifetime=3600)
    first = signer.reusable(context, audience=ncp_id("FR"))
    tick.now = NOW + 200
    assert signer.reusable(context, audience=ncp_id("FR")) == first
    tick.now = NOW + 201
    renewed = signer.reusable(context, audience=ncp_id("FR"))

    assert renewed != first
    old, new = (jwt.decode(t, options={"verify_signature": False}) for t in (first, renewed))
    assert new["jti"] != old["jti"] and new["exp"] == old["exp"] + 201
    assert signer.reusable(context, audience=ncp_id("FR")) == renewed


def test_an_assertion_capped_by_its_context_is_reused_until_both_expire(
    pki: FederationPki, tick: Clock
) -> None:
    """A context with 90 s left: a new assertion would not last longer, so the first one serves to the end."""
    signer = signer_for(pki, tick)
    context = context_of(pki, clock=tick, lifetime=90)
    first = signer.reusable(context, audience=ncp_id("FR"))
    assert jwt.decode(first, options={"verify_signature": False})["exp"] == int(
        context.expires_at.timestamp()
    )
    tick.now = NOW + 89
    assert signer.reusable(context, audience=ncp_id("FR")) == first
    tick.now = NOW + 90
    with pytest.raises(Unauthorized, match="context has expired"):
        signer.reusable(context, audience=ncp_id("FR"))


def test_the_reuse_cache_is_bounded(pki: FederationPki) -> None:
    signer = signer_for(pki, lambda: NOW)
    context = context_of(pki, clock=lambda: NOW)
    first = signer.reusable(context, audience=ncp_id("FR"))
    for i in range(REUSED_CACHE_SIZE):
        signer.reusable(dataclasses.replace(context, token_id=f"context-{i}"), audience=ncp_id("FR"))
    assert signer.reusable(context, audience=ncp_id("FR")) != first  # the least recently used went


def test_only_a_bound_assertion_may_be_reused(pki: FederationPki) -> None:
    with pytest.raises(ValueError, match="bound to a certificate"):
        signer_for(pki, lambda: NOW, bound=False).reusable(
            context_of(pki, clock=lambda: NOW), audience=ncp_id("FR")
        )


# --- NCP-B -> NCP-A over real mutual TLS ------------------------------------------------------------------


class Border:
    """FR's border on a real mTLS listener: its Guard checks every request; the assertions seen are kept."""

    def __init__(self, pki: FederationPki) -> None:
        self.guard = Guard("FR", pki)
        self.seen: list[str] = []
        self.app = Starlette(
            routes=[Route("/images", self.images)], exception_handlers={NcpError: self.error}
        )

    async def images(self, request: Request) -> JSONResponse:
        self.seen.append(request.headers.get("x-ncp-assertion", ""))
        claims = self.guard.peer(request, patient=PATIENT)
        assert claims is not None
        return JSONResponse({"patient": claims.patient.id if claims.patient else None})

    async def error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, NcpError)
        return fhir_error_response(exc)


@pytest.fixture
def border(serve: Callable[..., str], pki: FederationPki) -> tuple[str, Border]:
    app = Border(pki)
    return serve(app.app, **pki.uvicorn_options("FR")), app


def diagnostics(answer: httpx.Response) -> str:
    return str(json.loads(answer.text)["issue"][0]["diagnostics"])


def test_ncp_b_signs_once_for_many_image_requests_of_a_context(
    border: tuple[str, Border], pki: FederationPki
) -> None:
    base, app = border
    sender = Guard("AT", pki)
    context = context_of(pki, clock=time.time)
    with httpx.Client(verify=pki.client_ssl_context("AT", peer="FR"), timeout=10) as ncp_b:
        answers = [
            ncp_b.get(f"{base}/images", headers=sender.assertion_for(context, "FR")) for _ in range(20)
        ]
    assert [a.status_code for a in answers] == [200] * 20
    assert all(a.json() == {"patient": PATIENT.id} for a in answers)
    assert len(app.seen) == 20 and len(set(app.seen)) == 1  # one signature for twenty requests


def test_a_copied_assertion_is_useless_over_another_ncps_certificate(
    border: tuple[str, Border], pki: FederationPki
) -> None:
    base, _ = border
    assertion = Guard("AT", pki).assertion_for(context_of(pki, clock=time.time), "FR")
    with httpx.Client(verify=pki.client_ssl_context("AT", peer="FR"), timeout=10) as ncp_b:
        assert ncp_b.get(f"{base}/images", headers=assertion).status_code == 200
    with httpx.Client(verify=pki.client_ssl_context("NO", peer="FR"), timeout=10) as thief:
        stolen = thief.get(f"{base}/images", headers=assertion)
    with httpx.Client(
        verify=pki.ssl_context_with(pki.unregistered_client("AT"), peer="FR"), timeout=10
    ) as second_certificate:
        unregistered = second_certificate.get(f"{base}/images", headers=assertion)

    assert stolen.status_code == 401 and "bound to another client certificate" in diagnostics(stolen)
    assert stolen.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert assertion["x-ncp-assertion"] not in stolen.text
    assert unregistered.status_code == 403 and "not registered" in diagnostics(unregistered)


def test_an_assertion_without_binding_is_refused_at_the_border(
    border: tuple[str, Border], pki: FederationPki
) -> None:
    base, _ = border
    unbound = signer_for(pki, time.time, bound=False).sign(
        context_of(pki, clock=time.time), audience=ncp_id("FR")
    )
    with httpx.Client(verify=pki.client_ssl_context("AT", peer="FR"), timeout=10) as ncp_b:
        refused = ncp_b.get(f"{base}/images", headers={"x-ncp-assertion": unbound})
    assert refused.status_code == 401 and "not bound to a client certificate" in diagnostics(refused)


def test_an_assertion_signed_by_one_country_is_refused_over_another_countrys_certificate(
    border: tuple[str, Border], pki: FederationPki
) -> None:
    """NO's own, bound assertion arriving over AT's connection: neither the signer nor the binding match."""
    base, _ = border
    from_no = pki.ncp_signer("NO").sign(context_of(pki, clock=time.time), audience=ncp_id("FR"))
    with httpx.Client(verify=pki.client_ssl_context("AT", peer="FR"), timeout=10) as ncp_b:
        refused = ncp_b.get(f"{base}/images", headers={"x-ncp-assertion": from_no})
    assert refused.status_code == 401 and "bound to another client certificate" in diagnostics(refused)


# --- what the checks cost after the first request -----------------------------------------------------------


def request_from(pki: FederationPki, country: str, headers: dict[str, str]) -> Request:
    """A request as the border's TLS protocol hands it over: the peer certificate in the TLS extension."""
    raw = [(name.encode(), value.encode()) for name, value in headers.items()]
    tls = {"client_cert_chain": [pki.client_credentials(country).cert.read_text()]}
    return Request({"type": "http", "method": "GET", "path": "/", "headers": raw, "extensions": {"tls": tls}})


def test_after_the_first_request_nothing_is_signed_parsed_or_verified_again(
    pki: FederationPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: NCP-B reuses its signature, NCP-A its check of the exact token bytes and of the peer's
    certificate; expiry, patient and binding are still checked on every request."""
    sender, border = Guard("AT", pki), Guard("FR", pki)
    context = context_of(pki, clock=time.time)
    headers = sender.assertion_for(context, "FR")
    assert border.peer(request_from(pki, "AT", headers), patient=PATIENT) is not None
    with pytest.raises(Unauthorized, match="bound to another client certificate"):
        border.peer(request_from(pki, "NO", headers), patient=PATIENT)

    def again(*args: object, **kwargs: object) -> None:
        raise AssertionError("signed, parsed or verified again")

    monkeypatch.setattr(tokens, "_sign", again)  # NCP-B: JSON + base64 + ECDSA
    monkeypatch.setattr(tokens, "_signed_payload", again)  # NCP-A: base64 + JSON + ECDSA verification
    monkeypatch.setattr(ssl, "PEM_cert_to_DER_cert", again)  # NCP-A: the peer certificate
    for _ in range(3):
        assert sender.assertion_for(context, "FR") == headers
        claims = border.peer(request_from(pki, "AT", headers), patient=PATIENT)
        assert claims is not None and claims.patient == PATIENT
    with pytest.raises(Unauthorized, match="bound to another client certificate"):
        border.peer(request_from(pki, "NO", headers), patient=PATIENT)
    with pytest.raises(Forbidden, match="differs from the treatment context"):
        border.peer(request_from(pki, "AT", headers), patient=PatientRef(PATIENT.issuer, "FR-0002"))
