"""Tokens: HCP -> treatment context -> NCP assertion, and the verifier's negative matrix.

Reliability goals 4 and 27: every refusal case is a 401 (token unusable) or a 403 (valid token, request
not allowed); clock skew is accepted up to 60 s and refused beyond; no message ever quotes the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ncp.errors import Forbidden, NcpError, Unauthorized, fhir_error_response
from ncp.security.pki import FederationPki
from ncp.security.tokens import (
    PURPOSE_OF_USE_SYSTEM,
    Claims,
    IdentityProvider,
    NcpAssertionSigner,
    PatientRef,
    TokenVerifier,
    TrustedIssuer,
    bearer_token,
    idp_issuer,
    ncp_id,
)

NOW = 1_900_000_000.0
SCOPES = ["ITI-67", "ITI-68", "ITI-78", "RAD-160"]
PATIENT = PatientRef("2.999.250.2", "FR-0001")


def clock(offset: float = 0.0) -> Callable[[], float]:
    return lambda: NOW + offset


@pytest.fixture
def idp(pki: FederationPki) -> IdentityProvider:
    return IdentityProvider(
        "AT", pki.idp_key("AT"), idp_issuer("AT"), clock=clock(), home_community_id="2.999.40.1"
    )


@pytest.fixture
def gateway(pki: FederationPki) -> TokenVerifier:
    """AT's consumer-facing verifier: AT IdP tokens addressed to NCP-AT."""
    return TokenVerifier(pki.trusted_idps(["AT"]), ncp_id("AT"), clock=clock())


@pytest.fixture
def border(pki: FederationPki) -> TokenVerifier:
    """FR's border verifier: assertions of the other NCPs addressed to NCP-FR."""
    return TokenVerifier(pki.trusted_ncps(["AT", "NO"]), ncp_id("FR"), clock=clock())


@pytest.fixture
def hcp(idp: IdentityProvider) -> str:
    return idp.hcp_token("dr-hofer", "221", "AKH Wien", "Hospital", SCOPES, organisation_id="2.999.40.9.1")


@pytest.fixture
def treatment(idp: IdentityProvider, hcp: str) -> str:
    return idp.treatment_token(hcp, PATIENT.id, PATIENT.issuer, "EMERGENCY")


@pytest.fixture
def assertion(pki: FederationPki, gateway: TokenVerifier, treatment: str) -> str:
    context = gateway.verify(treatment, require_treatment=True)
    return NcpAssertionSigner("AT", pki.ncp_signing_key("AT"), clock=clock()).sign(
        context, audience=ncp_id("FR")
    )


def b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims_of(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def signed(key: Any, claims: dict[str, Any], algorithm: str = "ES256", **headers: Any) -> str:
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers or None)


# --- happy path ------------------------------------------------------------------------------------------


def test_hcp_token_carries_the_professional(gateway: TokenVerifier, hcp: str) -> None:
    claims = gateway.verify(hcp, required_scopes=["ITI-78"])
    assert (claims.subject, claims.role, claims.organisation, claims.facility) == (
        "dr-hofer",
        "221",
        "AKH Wien",
        "Hospital",
    )
    assert claims.organisation_id == "2.999.40.9.1"
    assert claims.scopes == frozenset(SCOPES)
    assert claims.patient is None and claims.purpose_of_use is None
    assert claims.country == "AT" and claims.home_community_id == "urn:oid:2.999.40.1"
    assert claims.lifetime == timedelta(minutes=5)


def test_treatment_token_binds_the_hcp_to_one_patient(
    gateway: TokenVerifier, hcp: str, treatment: str
) -> None:
    claims = gateway.verify(treatment, required_scopes=["ITI-67"], patient=PATIENT)
    assert claims.patient == PATIENT
    assert claims.purpose_of_use == "EMERGENCY"
    assert claims.origin_token_id == claims_of(hcp)["jti"]  # like the TRC's Advice -> HCP assertion ID
    assert claims.subject == "dr-hofer" and claims.role == "221"


def test_ncp_assertion_is_accepted_at_the_responding_ncp(border: TokenVerifier, assertion: str) -> None:
    claims = border.verify(
        assertion,
        required_scopes=["RAD-160"],
        patient=("urn:oid:2.999.250.2", "FR-0001"),
        require_treatment=True,
        country="AT",
    )
    assert claims.issuer == ncp_id("AT") and claims.audience == (ncp_id("FR"),)
    assert claims.origin_issuer == idp_issuer("AT")
    assert claims.user_name == f"dr-hofer@{idp_issuer('AT')}"
    assert (claims.patient, claims.purpose_of_use, claims.role) == (PATIENT, "EMERGENCY", "221")


def test_token_claims_follow_iua(hcp: str, treatment: str) -> None:
    body = claims_of(treatment)
    assert {"iss", "sub", "client_id", "aud", "jti", "exp", "scope", "iat"} <= body.keys()
    iua = body["extensions"]["ihe_iua"]
    assert iua["person_id"] == "FR-0001^^^&2.999.250.2&ISO"
    assert iua["purpose_of_use"] == [{"system": PURPOSE_OF_USE_SYSTEM, "code": "EMERGENCY"}]
    assert jwt.get_unverified_header(hcp)["alg"] == "ES256"


def test_treatment_context_never_outlives_the_hcp_token(pki: FederationPki, gateway: TokenVerifier) -> None:
    idp = IdentityProvider("AT", pki.idp_key("AT"), idp_issuer("AT"), clock=clock())
    short = idp.hcp_token("dr-hofer", "221", "AKH Wien", "Hospital", SCOPES, timedelta(minutes=1))
    claims = gateway.verify(idp.treatment_token(short, "FR-0001", "2.999.250.2", lifetime=timedelta(hours=2)))
    assert claims.expires_at == gateway.verify(short).expires_at


def test_assertion_never_outlives_its_context(
    pki: FederationPki, gateway: TokenVerifier, treatment: str
) -> None:
    context = gateway.verify(treatment)
    signer = NcpAssertionSigner("AT", pki.ncp_signing_key("AT"), clock=clock())
    token = signer.sign(context, audience=ncp_id("FR"), lifetime=timedelta(hours=2))
    assert claims_of(token)["exp"] == int(context.expires_at.timestamp())


def test_assertion_may_narrow_but_not_widen_scopes(
    pki: FederationPki, gateway: TokenVerifier, hcp: str
) -> None:
    context = gateway.verify(hcp)
    signer = pki.ncp_signer("AT")
    narrowed = signer.sign(context, audience=ncp_id("FR"), scopes=["ITI-78"])
    assert claims_of(narrowed)["scope"] == "ITI-78"
    with pytest.raises(Forbidden):
        signer.sign(context, audience=ncp_id("FR"), scopes=["ITI-78", "ITI-65"])


# --- issuing refuses bad requests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda idp, hcp: idp.treatment_token(
            hcp, "FR-0001", "2.999.250.2", lifetime=timedelta(hours=2, seconds=1)
        ),
        lambda idp, hcp: idp.treatment_token(hcp, "FR-0001", "2.999.250.2", "RESEARCH"),
        lambda idp, hcp: idp.treatment_token(hcp, "FR^0001", "2.999.250.2"),
        lambda idp, hcp: idp.treatment_token(hcp, "FR-0001", "not-an-oid"),
        lambda idp, hcp: idp.hcp_token("dr", "doctor", "org", "Hospital", SCOPES),
        lambda idp, hcp: idp.hcp_token("dr", "221", "org", "Spaceport", SCOPES),
        lambda idp, hcp: idp.hcp_token("dr", "221", "org", "Hospital", SCOPES, timedelta(hours=5)),
        lambda idp, hcp: idp.hcp_token("dr", "221", "org", "Hospital", ["two words"]),
    ],
    ids=["treatment>2h", "purpose", "cx-delimiter", "issuer", "role", "facility", "hcp>4h", "scope"],
)
def test_identity_provider_refuses_invalid_requests(
    idp: IdentityProvider, hcp: str, call: Callable[[IdentityProvider, str], str]
) -> None:
    with pytest.raises(ValueError):
        call(idp, hcp)


def test_identity_provider_refuses_an_hcp_token_it_did_not_sign(
    pki: FederationPki, idp: IdentityProvider
) -> None:
    other = IdentityProvider("NO", pki.idp_key("NO"), idp_issuer("NO"), clock=clock())
    foreign = other.hcp_token("dr-x", "221", "org", "Hospital", SCOPES)
    with pytest.raises(Unauthorized):
        idp.treatment_token(foreign, "FR-0001", "2.999.250.2")


@pytest.mark.parametrize("algorithm", ["HS256", "none", "RS512"])
def test_symmetric_or_unknown_algorithms_cannot_be_pinned(pki: FederationPki, algorithm: str) -> None:
    with pytest.raises(ValueError):
        TrustedIssuer(pki.idp_key("AT").public_key(), algorithm)


def test_pinned_algorithm_must_match_the_key_type(pki: FederationPki) -> None:
    with pytest.raises(ValueError):
        TrustedIssuer(pki.idp_key("AT").public_key(), "RS256")


# --- 401: the token is not usable ------------------------------------------------------------------------


def forged(pki: FederationPki, hcp: str) -> dict[str, str]:
    """Hostile variants of ``hcp``, keyed by case."""
    body = claims_of(hcp)
    header, payload, _ = hcp.split(".")
    public_pem = (
        pki.idp_key("AT")
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    hs_input = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{payload}"
    hs_sig = b64(hmac.new(public_pem, hs_input.encode(), hashlib.sha256).digest())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    at_key, no_key = pki.idp_key("AT"), pki.idp_key("NO")
    return {
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "alg None": f"{b64({'alg': 'None'})}.{payload}.",
        "HS256 with the public key as secret": f"{hs_input}.{hs_sig}",
        "RS256 for an ES256 issuer": signed(rsa_key, body, "RS256"),
        "ES384 for an ES256 issuer": signed(ec.generate_private_key(ec.SECP384R1()), body, "ES384"),
        "wrong signer": signed(no_key, body),
        "unknown issuer": signed(at_key, {**body, "iss": "urn:xcwado:idp:XX"}),
        "wrong audience": signed(at_key, {**body, "aud": ncp_id("FR")}),
        "expired": signed(at_key, {**body, "iat": NOW - 400, "nbf": NOW - 400, "exp": NOW - 61}),
        "not yet valid": signed(at_key, {**body, "nbf": NOW + 61}),
        "issued in the future": signed(
            at_key, {**body, "iat": NOW + 120, "nbf": NOW + 120, "exp": NOW + 400}
        ),
        "HCP lifetime over 4 h": signed(at_key, {**body, "exp": NOW + 4 * 3600 + 60}),
        "missing jti": signed(at_key, {k: v for k, v in body.items() if k != "jti"}),
        "missing exp": signed(at_key, {k: v for k, v in body.items() if k != "exp"}),
        "non-numeric exp": signed(at_key, {**body, "exp": "tomorrow"}),
        "embedded jwk header": signed(at_key, body, jwk={"kty": "EC"}),
        "tampered payload": f"{header}.{b64({**body, 'sub': 'someone-else'})}.{hcp.split('.')[2]}",
        "bad role coding": signed(at_key, {**body, "extensions": {"ihe_iua": {"subject_role": "221"}}}),
    }


ALG = "algorithm not accepted"
FORGED_CASES = {  # case -> reason given
    "alg none": ALG,
    "alg None": ALG,
    "HS256 with the public key as secret": ALG,
    "RS256 for an ES256 issuer": ALG,
    "ES384 for an ES256 issuer": ALG,
    "wrong signer": "invalid token signature",
    "unknown issuer": "unknown token issuer",
    "wrong audience": "audience",
    "expired": "expired",
    "not yet valid": "not yet valid",
    "issued in the future": "not yet valid",
    "HCP lifetime over 4 h": "lifetime",
    "missing jti": "lacks a required claim",
    "missing exp": "lacks a required claim",
    "non-numeric exp": "malformed",
    "embedded jwk header": "own key material",
    "tampered payload": "invalid token signature",
    "bad role coding": "malformed",
}


@pytest.mark.parametrize("case", FORGED_CASES)
def test_unusable_tokens_are_401_without_quoting_the_token(
    case: str, pki: FederationPki, gateway: TokenVerifier, hcp: str
) -> None:
    token = forged(pki, hcp)[case]
    with pytest.raises(Unauthorized, match=FORGED_CASES[case]) as refused:
        gateway.verify(token)
    assert refused.value.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    for part in token.split("."):
        if part:
            assert part not in str(refused.value)
    response = fhir_error_response(refused.value)
    assert response.status_code == 401
    assert bytes(response.body).find(token.split(".")[1].encode()) == -1


def test_treatment_context_over_2h_is_refused_even_when_signed_by_the_idp(
    pki: FederationPki, gateway: TokenVerifier, treatment: str
) -> None:
    body = claims_of(treatment)
    too_long = signed(pki.idp_key("AT"), {**body, "exp": body["iat"] + 2 * 3600 + 1})
    with pytest.raises(Unauthorized, match="lifetime"):
        gateway.verify(too_long)


MALFORMED = [
    "",
    "abc",
    "a.b",
    "a.b.c",
    "....",
    "ünïcode.x.y",
    "e30.e30.",
    f"{b64(b'[1, 2]')}.{b64(b'{}')}.x",
    f"{b64({'alg': 'ES256'})}.{b64(b'not json')}.x",
    "x" * 20_000,
]


@pytest.mark.parametrize("token", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_tokens_are_401(gateway: TokenVerifier, token: str) -> None:
    with pytest.raises(Unauthorized):
        gateway.verify(token)


def test_none_token_is_401(gateway: TokenVerifier) -> None:
    with pytest.raises(Unauthorized, match="missing"):
        gateway.verify(None)


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "bearer"])
def test_authorization_header_without_bearer_token_is_401(gateway: TokenVerifier, header: str | None) -> None:
    with pytest.raises(Unauthorized) as refused:
        gateway.verify_header(header)
    assert "WWW-Authenticate" in refused.value.headers


def test_authorization_header_with_bearer_token_is_verified(gateway: TokenVerifier, hcp: str) -> None:
    assert gateway.verify_header(f"Bearer {hcp}").subject == "dr-hofer"
    assert bearer_token(f"bearer  {hcp} ") == hcp


# --- clock skew: 60 s each way (eHDSI CONDITIONS_SECOND_RANGE) --------------------------------------------


@pytest.mark.parametrize(("skew", "accepted"), [(59, True), (61, False), (-59, True), (-61, False)])
def test_clock_skew_is_tolerated_up_to_60_seconds(
    pki: FederationPki, idp: IdentityProvider, skew: float, accepted: bool
) -> None:
    """Positive skew: the token starts in the verifier's future; negative: it expired in its past."""
    token = idp.hcp_token("dr-hofer", "221", "AKH Wien", "Hospital", SCOPES, timedelta(minutes=5))
    offset = -skew if skew > 0 else 300 - skew  # verifier clock relative to issue time
    verifier = TokenVerifier(pki.trusted_idps(["AT"]), ncp_id("AT"), clock=clock(offset))
    if accepted:
        assert verifier.verify(token).subject == "dr-hofer"
    else:
        with pytest.raises(Unauthorized):
            verifier.verify(token)


# --- 403: valid token, request not allowed ----------------------------------------------------------------


def test_missing_scope_is_403_with_insufficient_scope(gateway: TokenVerifier, idp: IdentityProvider) -> None:
    token = idp.hcp_token("dr-hofer", "221", "AKH Wien", "Hospital", ["ITI-78"])
    with pytest.raises(Forbidden, match="RAD-160") as refused:
        gateway.verify(token, required_scopes=["ITI-78", "RAD-160"])
    assert refused.value.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope"'
    assert fhir_error_response(refused.value).status_code == 403


@pytest.mark.parametrize(
    "patient",
    [
        ("2.999.250.2", "FR-000"),  # prefix of the real id
        ("2.999.250.2", "FR-00011"),  # the real id is a prefix of it
        ("2.999.250.2", "fr-0001"),  # case
        ("2.999.250", "FR-0001"),  # issuer prefix
        ("2.999.250.22", "FR-0001"),
        ("2.999.40.2", "FR-0001"),  # same id, other assigning authority
    ],
)
def test_other_patient_is_403_by_exact_comparison(
    border: TokenVerifier, assertion: str, patient: tuple[str, str]
) -> None:
    with pytest.raises(Forbidden, match="patient"):
        border.verify(assertion, patient=patient)


def test_hcp_token_without_treatment_context_is_403_where_one_is_needed(
    gateway: TokenVerifier, hcp: str
) -> None:
    with pytest.raises(Forbidden, match="treatment context"):
        gateway.verify(hcp, require_treatment=True)
    with pytest.raises(Forbidden):
        gateway.verify(hcp, patient=PATIENT)


def test_assertion_signed_by_another_country_than_the_mtls_peer_is_403(
    border: TokenVerifier, assertion: str
) -> None:
    with pytest.raises(Forbidden, match="calling country"):
        border.verify(assertion, country="NO")


def test_purpose_of_use_outside_treatment_and_emergency_is_403(
    pki: FederationPki, gateway: TokenVerifier, treatment: str
) -> None:
    body = claims_of(treatment)
    body["extensions"]["ihe_iua"]["purpose_of_use"] = [{"system": PURPOSE_OF_USE_SYSTEM, "code": "RESEARCH"}]
    with pytest.raises(Forbidden, match="purpose"):
        gateway.verify(signed(pki.idp_key("AT"), body))


def test_consumer_token_is_not_accepted_at_the_border(border: TokenVerifier, treatment: str) -> None:
    """The border trusts NCP signers only: a consumer cannot skip its own NCP."""
    with pytest.raises(Unauthorized):
        border.verify(treatment)


def test_an_ncp_cannot_assert_to_itself_through_the_border(pki: FederationPki, assertion: str) -> None:
    at_border = pki.border_verifier("AT")
    with pytest.raises(Unauthorized):
        at_border.verify(assertion)  # audience is NCP-FR, and AT's own key is not trusted at AT's border


def test_all_refusals_are_ncp_errors(gateway: TokenVerifier) -> None:
    with pytest.raises(NcpError):
        gateway.verify("x")


def test_claims_are_immutable(gateway: TokenVerifier, hcp: str) -> None:
    claims: Claims = gateway.verify(hcp)
    with pytest.raises(AttributeError):
        claims.subject = "other"  # type: ignore[misc]
