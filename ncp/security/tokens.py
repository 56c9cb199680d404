"""Signed JWT tokens: HCP identity, treatment context and NCP-to-NCP assertions.

The flow mirrors the eHDSI HCP + TRC assertions (eHDSI SAML Profiles 2.0) carried as JWTs shaped like IHE IUA
access tokens (IUA 3.71.4.2.2.1: ``iss sub aud jti exp iat scope client_id`` and the ``ihe_iua`` extension):

1. a country's :class:`IdentityProvider` issues an HCP token (role ISCO-08, organisation, facility, scopes);
2. after patient identification it issues a treatment token binding the HCP token to one patient and a
   purpose of use (TREATMENT | EMERGENCY), at most 2 h (eHDSI TRC span);
3. the initiating NCP re-signs that context with its own key for the responding NCP
   (:class:`NcpAssertionSigner`, audience = the responding country), bound to the NCP's TLS client
   certificate (``cnf.x5t#S256``, RFC 8705 §3.1) and reused for the context while it has life left;
4. every receiver checks with :class:`TokenVerifier`: one pinned asymmetric algorithm per issuer
   (RFC 8725 §3.1: never let the token's ``alg`` choose, reject ``none`` and HMAC), audience,
   ±60 s skew (eHDSI ``CONDITIONS_SECOND_RANGE``), lifetime caps, scopes, exact patient equality and,
   at a border, that the assertion is bound to the certificate its TLS peer presented (RFC 8705 §3).

Errors are :class:`~ncp.errors.Unauthorized` (401, RFC 6750 ``invalid_token``) when the token is missing,
malformed, untrusted or expired, and :class:`~ncp.errors.Forbidden` (403, ``insufficient_scope``) when it is
valid but does not allow the request. Messages never contain token text.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import math
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import Algorithm

from ncp import fhirsearch
from ncp.errors import Forbidden, Unauthorized

__all__ = [
    "DEFAULT_LIFETIME",
    "FACILITY_TYPES",
    "ISCO08_SYSTEM",
    "MAX_HCP_LIFETIME",
    "MAX_TREATMENT_LIFETIME",
    "PURPOSES_OF_USE",
    "PURPOSE_OF_USE_SYSTEM",
    "Claims",
    "IdentityProvider",
    "NcpAssertionSigner",
    "PatientRef",
    "PrivateKey",
    "PublicKey",
    "TokenVerifier",
    "TrustedIssuer",
    "bearer_token",
    "certificate_thumbprint",
    "idp_issuer",
    "ncp_id",
    "patient_ref",
]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

ISCO08_SYSTEM = "urn:oid:2.16.840.1.113883.2.9.6.2.7"  # hl7:Role ISCO-08 (eHDSI HCP assertion)
PURPOSE_OF_USE_SYSTEM = "urn:uuid:3bc18518-d305-46c2-a8d6-94bd59856e9e"  # eHDSI XSPA PurposeOfUse
PURPOSES_OF_USE = ("TREATMENT", "EMERGENCY")  # OpenNCP's PurposeOfUse enum (eHDSI)
FACILITY_TYPES = ("Hospital", "Resident Physician", "Pharmacy", "Other")  # urn:ehdsi:names:subject:...
DEFAULT_LIFETIME = timedelta(minutes=5)  # IUA: access tokens <= 1 h, <= 5 min recommended
MAX_HCP_LIFETIME = timedelta(hours=4)  # eHDSI HCP assertion span
MAX_TREATMENT_LIFETIME = timedelta(hours=2)  # eHDSI TRC assertion span
MAX_TOKEN_BYTES = 16 * 1024
DEFAULT_LEEWAY = 60.0  # eHDSI CONDITIONS_SECOND_RANGE = 60 s
# Tokens whose signature one verifier has checked: a consumer sends the same treatment token with each of a
# series' image requests, and the same bytes under the same key verify the same way (times are rechecked).
VERIFIED_CACHE_SIZE = 1024
# An NCP reuses its assertion of one context for one peer until less than this, or a third of its lifetime,
# is left: the peer still accepts it on arrival, clock skew included.
REUSE_MARGIN = timedelta(seconds=60)
REUSED_CACHE_SIZE = 1024  # (context, peer) pairs an NCP keeps a signed assertion for

# Asymmetric algorithms only, each with the key type it needs: HS* can never be pinned, which closes the
# key-confusion attack (CVE-2022-29217 class) regardless of what a token header says.
_ALGORITHM_KEYS: dict[str, type] = {
    "ES256": ec.EllipticCurvePublicKey,
    "ES384": ec.EllipticCurvePublicKey,
    "RS256": rsa.RSAPublicKey,
    "PS256": rsa.RSAPublicKey,
    "EdDSA": ed25519.Ed25519PublicKey,
}
_EMBEDDED_KEY_HEADERS = ("jwk", "jku", "x5u", "x5c")  # keys are never taken from the token itself
_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
_ISCO08 = re.compile(r"^[0-9]{1,4}$")
# DICOM LO (PS3.5 6.2) in the default repertoire less HL7 CX delimiters (^ & ~ \\) and the FHIR token bar:
# printable ASCII without spaces, 1-64 characters. The search delimiters left (, $) are escaped in searches.
_PATIENT_ID = re.compile(r"^[!-~]{1,64}$")
_PATIENT_ID_EXCLUDED = frozenset("^&~\\|")
_CX = re.compile(r"([^\^&]+)\^\^\^&([0-9.]+)&ISO")  # HL7 v2 CX with CX.4 an ISO OID
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")  # RFC 6749 §3.3 scope-token
_THUMBPRINT = re.compile(r"^[A-Za-z0-9_-]{43}$")  # base64url of a SHA-256 digest, unpadded
_THUMBPRINT_CLAIM = "x5t#S256"  # RFC 8705 §3.1 confirmation method


def certificate_thumbprint(der: bytes) -> str:
    """``x5t#S256`` of a certificate: base64url SHA-256 of its DER, unpadded (RFC 8705 §3.1)."""
    return _b64url_encode(hashlib.sha256(der).digest()).decode("ascii")


def idp_issuer(country: str) -> str:
    """Issuer of a country's identity provider (``iss`` of HCP and treatment tokens)."""
    return f"urn:xcwado:idp:{_check_country(country)}"


def ncp_id(country: str) -> str:
    """A country's NCP: issuer of its assertions and the audience of tokens addressed to it."""
    return f"urn:xcwado:ncp:{_check_country(country)}"


def _check_country(country: str) -> str:
    if not _COUNTRY.match(country):
        raise ValueError(f"country code {country!r} must be an ISO 3166 alpha-2 code")
    return country


class PatientRef(NamedTuple):
    """A patient as (assigning authority OID, identifier); compared for exact equality, never substring."""

    issuer: str
    id: str

    def search_token(self) -> str:
        """``urn:oid:{issuer}|{id}`` escaped as one FHIR token search value (matches this patient only)."""
        return fhirsearch.token(f"urn:oid:{self.issuer}", self.id)

    def cx(self) -> str:
        """HL7 v2 CX ``id^^^&issuer&ISO``: IUA ``person_id``, XUA Resource-id (ITI TF-2b 3.40.4.1.2)."""
        return f"{self.id}^^^&{self.issuer}&ISO"

    @classmethod
    def from_cx(cls, value: str) -> PatientRef:
        """The patient of an ``id^^^&issuer&ISO`` value; ValueError for any other shape or grammar."""
        match = _CX.fullmatch(value)
        if match is None:
            raise ValueError("patient id is not in CX form id^^^&oid&ISO")
        return patient_ref(match.group(2), match.group(1))


@dataclass(frozen=True)
class Claims:
    """The verified content of a token."""

    issuer: str
    subject: str
    audience: tuple[str, ...]
    token_id: str
    issued_at: datetime
    expires_at: datetime
    not_before: datetime | None
    scopes: frozenset[str]
    client_id: str | None
    role: str | None  # ISCO-08 code
    organisation: str | None
    organisation_id: str | None
    facility: str | None
    home_community_id: str | None
    purpose_of_use: str | None
    patient: PatientRef | None
    country: str | None  # of the signer, from the verifier's trust list (None for the IdP's own check)
    origin_issuer: str | None  # NCP assertion: the IdP that authenticated the HCP
    origin_token_id: str | None  # treatment token: HCP jti (TRC Advice); NCP assertion: context jti
    certificate_thumbprint: str | None = None  # ``cnf.x5t#S256``: the sender's TLS certificate (RFC 8705)

    @property
    def lifetime(self) -> timedelta:
        return self.expires_at - self.issued_at

    @property
    def user_name(self) -> str:
        """``alias<user@issuer>`` as ATNA UserName from a JWT (IUA ITI-72 audit)."""
        return f"{self.subject}@{self.origin_issuer or self.issuer}"


@dataclass(frozen=True)
class TrustedIssuer:
    """A verifier's entry for one issuer: its public key and the one algorithm pinned for it."""

    key: PublicKey
    algorithm: str = "ES256"
    country: str | None = None

    def __post_init__(self) -> None:
        expected = _ALGORITHM_KEYS.get(self.algorithm)
        if expected is None:
            raise ValueError(
                f"algorithm {self.algorithm!r} cannot be pinned; use one of {sorted(_ALGORITHM_KEYS)}"
            )
        if not isinstance(self.key, expected):
            raise ValueError(f"a {type(self.key).__name__} cannot verify {self.algorithm}")


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer`` header (RFC 6750 §2.1), else 401."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("missing bearer token")
    return token.strip()


class TokenVerifier:
    """Checks tokens addressed to ``audience`` from a fixed set of trusted issuers."""

    def __init__(
        self,
        trusted: Mapping[str, TrustedIssuer],
        audience: str,
        *,
        leeway: float = DEFAULT_LEEWAY,
        max_lifetime: timedelta = MAX_HCP_LIFETIME,
        max_treatment_lifetime: timedelta = MAX_TREATMENT_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not audience:
            raise ValueError("a verifier needs its own audience")
        self._trusted = dict(trusted)
        self._audience = audience
        self._leeway = leeway
        self._max_lifetime = max_lifetime
        self._max_treatment = max_treatment_lifetime
        self._clock = clock
        self._signed = functools.lru_cache(maxsize=VERIFIED_CACHE_SIZE)(self._signed_claims)

    @property
    def audience(self) -> str:
        return self._audience

    def verify(
        self,
        token: str | None,
        *,
        required_scopes: Iterable[str] = (),
        patient: PatientRef | tuple[str, str] | None = None,
        require_treatment: bool = False,
        country: str | None = None,
        bound_to: str | None = None,
    ) -> Claims:
        """Verified claims, or 401 (token unusable) / 403 (token valid, request not allowed).

        ``patient``: the request's patient; the token's must be exactly equal. ``require_treatment``:
        a patient and purpose of use must be present. ``country``: the signer must be registered for it
        (e.g. the country whose certificate the mTLS peer presented). ``bound_to``: the
        :func:`certificate_thumbprint` of that certificate; the token must be bound to it (RFC 8705 §3).

        A token verified before is not parsed or its signature checked again: times, scopes, patient
        and binding are checked on every call.
        """
        window, claims = self._signed(_well_formed(token))
        window.check(self._clock(), self._leeway)
        if bound_to is not None:
            _check_binding(claims, bound_to)
        _authorize(claims, required_scopes, patient, require_treatment, country)
        return claims

    def verify_header(self, authorization: str | None, **checks: Any) -> Claims:
        """:meth:`verify` applied to an ``Authorization`` header value."""
        return self.verify(bearer_token(authorization), **checks)

    def _limits(self) -> tuple[timedelta, timedelta]:
        return self._max_lifetime, self._max_treatment

    def _signed_claims(self, token: str) -> tuple[_Window, Claims]:
        """The time-independent checks, the validity window and the claims, cached per token (an
        exception never is)."""
        payload, trust = _signed_payload(token, self._trusted, self._audience)
        return _window(payload, self._limits()), _claims(payload, trust)


class IdentityProvider:
    """A country's identity provider: authenticates HCPs and issues their tokens."""

    def __init__(
        self,
        country: str,
        private_key: PrivateKey,
        issuer: str,
        algorithm: str = "ES256",
        *,
        home_community_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.country = _check_country(country)
        self.issuer = issuer
        self.algorithm = algorithm
        self.home_community_id = home_community_id
        self._key = private_key
        self._clock = clock
        self._trust = {issuer: TrustedIssuer(private_key.public_key(), algorithm, country)}
        self._jws = _Jws(private_key, algorithm)

    @property
    def public_key(self) -> PublicKey:
        return self._key.public_key()

    def trusted_issuer(self) -> TrustedIssuer:
        return self._trust[self.issuer]

    def hcp_token(
        self,
        subject: str,
        role: str,
        organisation: str,
        facility: str,
        scopes: Iterable[str],
        lifetime: timedelta = DEFAULT_LIFETIME,
        *,
        organisation_id: str | None = None,
        audience: str | None = None,
        client_id: str = "xcwado-consumer",
    ) -> str:
        """An HCP identity token for the country's own NCP (``audience`` defaults to it)."""
        _check_lifetime(lifetime, MAX_HCP_LIFETIME, "HCP token")
        if not _ISCO08.match(role):
            raise ValueError(f"role {role!r} is not an ISCO-08 code")
        if facility not in FACILITY_TYPES:
            raise ValueError(f"facility {facility!r} not in {FACILITY_TYPES}")
        iua: dict[str, Any] = {
            "subject_role": {"system": ISCO08_SYSTEM, "code": role},
            "subject_organization": organisation,
        }
        if organisation_id:
            iua["subject_organization_id"] = organisation_id
        if self.home_community_id:
            iua["home_community_id"] = _urn_oid(self.home_community_id)
        body = {
            "sub": _nonempty(subject, "subject"),
            "client_id": client_id,
            "scope": _scope_text(scopes),
            "extensions": {"ihe_iua": iua, "ehdsi": {"healthcare_facility_type": facility}},
        }
        return self._sign(body, audience or ncp_id(self.country), lifetime, None).token

    def treatment_token(
        self,
        hcp_token: str,
        patient_id: str,
        patient_issuer: str,
        purpose_of_use: str = "TREATMENT",
        lifetime: timedelta = DEFAULT_LIFETIME,
        audience: str | None = None,
    ) -> str:
        """The treatment context: this IdP's valid HCP token bound to one patient (eHDSI TRC, <= 2 h).

        Expires no later than the HCP token; carries its ``jti`` like the TRC's Advice/AssertionIDRef.
        """
        _check_lifetime(lifetime, MAX_TREATMENT_LIFETIME, "treatment token")
        if purpose_of_use not in PURPOSES_OF_USE:
            raise ValueError(f"purpose of use {purpose_of_use!r} not in {PURPOSES_OF_USE}")
        patient = patient_ref(patient_issuer, patient_id)
        hcp = _decode(hcp_token, self._trust, None, DEFAULT_LEEWAY, self._clock(), _NO_TREATMENT_LIMITS)
        if hcp.patient is not None:
            raise ValueError("the token given is already a treatment token")
        body = _context_body(hcp)
        body["extensions"]["ihe_iua"]["person_id"] = patient.cx()
        body["extensions"]["ihe_iua"]["purpose_of_use"] = [
            {"system": PURPOSE_OF_USE_SYSTEM, "code": purpose_of_use}
        ]
        body["origin"] = {"iss": hcp.issuer, "jti": hcp.token_id}
        return self._sign(body, audience or ncp_id(self.country), lifetime, hcp.expires_at).token

    def _sign(
        self, body: dict[str, Any], audience: str, lifetime: timedelta, cap: datetime | None
    ) -> _Signed:
        return _sign(self._jws, self.issuer, body, audience, lifetime, cap, self._clock())


class NcpAssertionSigner:
    """An NCP's signer: re-asserts a verified context for a responding NCP under the NCP's own key, bound
    to the NCP's TLS client certificate when given its :func:`certificate_thumbprint` (RFC 8705 §3.1)."""

    def __init__(
        self,
        country: str,
        private_key: PrivateKey,
        issuer: str | None = None,
        algorithm: str = "ES256",
        *,
        certificate_thumbprint: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if certificate_thumbprint is not None and not _THUMBPRINT.match(certificate_thumbprint):
            raise ValueError("a certificate thumbprint is the base64url SHA-256 of its DER (RFC 8705 §3.1)")
        self.country = _check_country(country)
        self.issuer = issuer or ncp_id(country)
        self.algorithm = algorithm
        self.certificate_thumbprint = certificate_thumbprint
        self._key = private_key
        self._clock = clock
        self._jws = _Jws(private_key, algorithm)
        self._kept: OrderedDict[tuple[Claims, str], _Signed] = OrderedDict()  # LRU for :meth:`reusable`

    @property
    def public_key(self) -> PublicKey:
        return self._key.public_key()

    def trusted_issuer(self) -> TrustedIssuer:
        return TrustedIssuer(self.public_key, self.algorithm, self.country)

    def sign(
        self,
        context: Claims,
        *,
        audience: str,
        lifetime: timedelta = DEFAULT_LIFETIME,
        scopes: Iterable[str] | None = None,
    ) -> str:
        """A new assertion of ``context`` for ``audience`` (e.g. ``ncp_id("FR")``), never outliving it.

        ``scopes`` narrows the context's scopes (it cannot widen them).
        """
        return self._sign(context, audience, lifetime, scopes).token

    def reusable(self, context: Claims, *, audience: str) -> str:
        """The assertion of ``context`` for ``audience`` signed before while it has life left, else a new one.

        Sound only for an assertion bound to this NCP's certificate: a copy is useless over any other TLS
        connection (RFC 8705 §3). Re-signed when less than :data:`REUSE_MARGIN` or a third of its lifetime
        is left, unless a new one would expire no later (the context's own expiry caps both).
        """
        if self.certificate_thumbprint is None:
            raise ValueError("only an assertion bound to a certificate may be reused (RFC 8705 §3)")
        key = (context, audience)
        kept = self._kept.get(key)
        if kept is None or not kept.reusable(self._clock()):
            kept = self._kept[key] = self._sign(context, audience, DEFAULT_LIFETIME, None)
            if len(self._kept) > REUSED_CACHE_SIZE:
                self._kept.popitem(last=False)
        self._kept.move_to_end(key)
        return kept.token

    def _sign(
        self, context: Claims, audience: str, lifetime: timedelta, scopes: Iterable[str] | None
    ) -> _Signed:
        limit = MAX_TREATMENT_LIFETIME if context.patient else MAX_HCP_LIFETIME
        _check_lifetime(lifetime, limit, "NCP assertion")
        body = _context_body(context)
        if scopes is not None:
            wanted = frozenset(scopes)
            if not wanted <= context.scopes:
                raise Forbidden("the assertion cannot grant scopes the context does not hold")
            body["scope"] = _scope_text(wanted)
        body["origin"] = {"iss": context.origin_issuer or context.issuer, "jti": context.token_id}
        if self.certificate_thumbprint is not None:
            body["cnf"] = {_THUMBPRINT_CLAIM: self.certificate_thumbprint}
        return _sign(self._jws, self.issuer, body, audience, lifetime, context.expires_at, self._clock())


# --- signing -------------------------------------------------------------------------------------------


class _Jws:
    """JWS compact serialisation (RFC 7515 §7.1) under one key: the header is encoded once, and PyJWT's
    algorithm signs (for ECDSA the raw R || S of RFC 7518 §3.4). A third of ``jwt.encode``'s CPU
    (docs/benchmarks.md)."""

    def __init__(self, key: PrivateKey, algorithm: str) -> None:
        self._key = key
        self._algorithm: Algorithm = jwt.get_algorithm_by_name(algorithm)
        self._header = _b64url_encode(_compact_json({"alg": algorithm, "typ": "JWT"}))

    def sign(self, claims: Mapping[str, Any]) -> str:
        signing_input = self._header + b"." + _b64url_encode(_compact_json(claims))
        signature = self._algorithm.sign(signing_input, self._key)
        return (signing_input + b"." + _b64url_encode(signature)).decode("ascii")


def _compact_json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _b64url_encode(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class _Signed(NamedTuple):
    token: str
    issued: int
    expires: int
    capped: bool  # expires with its context: a token signed later would expire no later

    def reusable(self, now: float) -> bool:
        left = self.expires - now
        margin = max(REUSE_MARGIN.total_seconds(), (self.expires - self.issued) / 3)
        return left > 0 and (self.capped or left >= margin)


def _sign(
    jws: _Jws,
    issuer: str,
    body: dict[str, Any],
    audience: str,
    lifetime: timedelta,
    cap: datetime | None,
    now: float,
) -> _Signed:
    ends = cap.timestamp() if cap is not None else math.inf
    expires = min(now + lifetime.total_seconds(), ends)
    if expires <= now:
        raise Unauthorized("the context has expired", headers=_CHALLENGE)
    issued = int(now)
    claims = {
        **body,
        "iss": issuer,
        "aud": audience,
        "iat": issued,
        "nbf": issued,
        "exp": int(expires),
        "jti": str(uuid.uuid4()),
    }
    return _Signed(jws.sign(claims), issued, int(expires), capped=expires == ends)


def _context_body(context: Claims) -> dict[str, Any]:
    """The user/patient claims of ``context`` in token form (for treatment tokens and NCP assertions)."""
    iua: dict[str, Any] = {}
    if context.role:
        iua["subject_role"] = {"system": ISCO08_SYSTEM, "code": context.role}
    if context.organisation:
        iua["subject_organization"] = context.organisation
    if context.organisation_id:
        iua["subject_organization_id"] = context.organisation_id
    if context.home_community_id:
        iua["home_community_id"] = context.home_community_id
    if context.purpose_of_use:
        iua["purpose_of_use"] = [{"system": PURPOSE_OF_USE_SYSTEM, "code": context.purpose_of_use}]
    if context.patient:
        iua["person_id"] = context.patient.cx()
    extensions: dict[str, Any] = {"ihe_iua": iua}
    if context.facility:
        extensions["ehdsi"] = {"healthcare_facility_type": context.facility}
    body: dict[str, Any] = {"sub": context.subject, "scope": _scope_text(context.scopes)}
    if context.client_id:
        body["client_id"] = context.client_id
    body["extensions"] = extensions
    return body


def _check_lifetime(lifetime: timedelta, limit: timedelta, what: str) -> None:
    if not timedelta(0) < lifetime <= limit:
        raise ValueError(f"{what} lifetime {lifetime} must be positive and at most {limit}")


def _scope_text(scopes: Iterable[str]) -> str:
    items = sorted(set(scopes))
    if not all(_SCOPE.match(s) for s in items):
        raise ValueError("scopes must be RFC 6749 scope-tokens")
    return " ".join(items)


def _nonempty(value: str, what: str) -> str:
    if not value or any(ord(c) < 0x20 for c in value):
        raise ValueError(f"{what} must be a non-empty printable string")
    return value


def _urn_oid(oid: str) -> str:
    return oid if oid.startswith("urn:oid:") else f"urn:oid:{oid}"


def patient_ref(issuer: str, patient_id: str) -> PatientRef:
    """One patient from an issuer OID (``urn:oid:`` optional) and an identifier; ValueError naming the part
    that breaks its grammar."""
    issuer = issuer.removeprefix("urn:oid:")
    if not _OID.match(issuer) or len(issuer) > 64:
        raise ValueError("patient issuer must be an OID")
    if not _PATIENT_ID.match(patient_id) or _PATIENT_ID_EXCLUDED.intersection(patient_id):
        raise ValueError("patient id must be 1-64 printable ASCII characters without spaces, ^ & ~ \\ or |")
    return PatientRef(issuer, patient_id)


# --- verification --------------------------------------------------------------------------------------

_CHALLENGE = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
_SCOPE_CHALLENGE = {"WWW-Authenticate": 'Bearer error="insufficient_scope"'}
_NO_TREATMENT_LIMITS = (MAX_HCP_LIFETIME, MAX_TREATMENT_LIFETIME)
_REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti")


def _unauthorized(message: str) -> Unauthorized:
    return Unauthorized(message, headers=dict(_CHALLENGE))


def _decode(
    token: str | None,
    trusted: Mapping[str, TrustedIssuer],
    audience: str | None,
    leeway: float,
    now: float,
    limits: tuple[timedelta, timedelta],
) -> Claims:
    """Signature, algorithm pin, issuer, audience (unless None), times and shape; 401 on any failure."""
    payload, trust = _signed_payload(_well_formed(token), trusted, audience)
    _window(payload, limits).check(now, leeway)
    return _claims(payload, trust)


def _well_formed(token: str | None) -> str:
    if not token:
        raise _unauthorized("missing bearer token")
    if len(token) > MAX_TOKEN_BYTES or not token.isascii():
        raise _unauthorized("malformed token")
    return token


def _signed_payload(
    token: str, trusted: Mapping[str, TrustedIssuer], audience: str | None
) -> tuple[dict[str, Any], TrustedIssuer]:
    """The verified payload and its issuer's entry: signature, algorithm pin, issuer, audience (unless
    None); nothing that depends on the time."""
    header, unverified = _peek(token)
    issuer = unverified.get("iss")
    trust = trusted.get(issuer) if isinstance(issuer, str) else None
    if trust is None or not isinstance(issuer, str):
        raise _unauthorized("unknown token issuer")
    if header.get("alg") != trust.algorithm:  # pinned per issuer; 'none' and HS* never match
        raise _unauthorized("token algorithm not accepted for this issuer")
    if any(name in header for name in _EMBEDDED_KEY_HEADERS):
        raise _unauthorized("token carries its own key material")
    if header.get("crit") is not None or header.get("b64") is not None:  # no JWS extension is understood
        raise _unauthorized("malformed token")
    return _verified_payload(token, unverified, trust, audience), trust


def _peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims before verification: only to choose the issuer's key and pinned algorithm."""
    parts = token.split(".")
    if len(parts) != 3:
        raise _unauthorized("malformed token")
    try:
        header, body = (json.loads(_b64url(p)) for p in parts[:2])
    except (ValueError, binascii.Error):
        raise _unauthorized("malformed token") from None
    if not isinstance(header, dict) or not isinstance(body, dict):
        raise _unauthorized("malformed token")
    return header, body


def _b64url(part: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", part):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _verified_payload(
    token: str, unverified: dict[str, Any], trust: TrustedIssuer, audience: str | None
) -> dict[str, Any]:
    """``unverified`` once the signature over the token's first two parts is the issuer's (RFC 7515 §5.2),
    with the claims every token needs and, unless ``audience`` is None, this service among its audiences.

    The JSON was parsed once, to choose the key; PyJWT's ``decode`` would parse and decode it again, which
    cost a border as much as the signature check itself, once per image request."""
    signing_input, _, signature = token.rpartition(".")
    try:
        valid = jwt.get_algorithm_by_name(trust.algorithm).verify(
            signing_input.encode("ascii"), trust.key, _b64url(signature)
        )
    except (ValueError, binascii.Error):
        valid = False
    if not valid:
        raise _unauthorized("invalid token signature")
    if any(unverified.get(name) is None for name in _REQUIRED_CLAIMS):
        raise _unauthorized("token lacks a required claim")
    if audience is not None and audience not in _audiences(unverified["aud"]):
        raise _unauthorized("token audience is not this service")
    return unverified


def _audiences(aud: Any) -> list[str]:
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise _unauthorized("token audience is not this service")
    return audiences


class _Window(NamedTuple):
    """A token's validity, read once per token and checked against the clock at every use."""

    expires: float
    starts: float  # the later of iat and nbf
    too_long: bool  # longer than the verifier allows, or ending before it starts

    def check(self, now: float, leeway: float) -> None:
        if self.expires <= now - leeway:
            raise _unauthorized("token expired")
        if self.starts > now + leeway:
            raise _unauthorized("token not yet valid")
        if self.too_long:
            raise _unauthorized("token lifetime exceeds the allowed span")


def _window(payload: Mapping[str, Any], limits: tuple[timedelta, timedelta]) -> _Window:
    exp, iat, nbf = (_number(payload, name) for name in ("exp", "iat", "nbf"))
    if exp is None or iat is None:
        raise _unauthorized("token lacks a required claim")
    start = max(iat, nbf) if nbf is not None else iat
    limit = limits[1] if "person_id" in _iua(payload) else limits[0]
    return _Window(exp, start, exp - start > limit.total_seconds() or exp < start)


def _number(payload: Mapping[str, Any], name: str) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _unauthorized("malformed token claims")
    return float(value)


def _iua(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    extensions = payload.get("extensions")
    iua = extensions.get("ihe_iua") if isinstance(extensions, dict) else None
    return iua if isinstance(iua, dict) else {}


def _claims(payload: Mapping[str, Any], trust: TrustedIssuer) -> Claims:
    try:
        return _parse_claims(payload, trust)
    except (TypeError, ValueError, KeyError, AttributeError):
        raise _unauthorized("malformed token claims") from None


def _parse_claims(payload: Mapping[str, Any], trust: TrustedIssuer) -> Claims:
    iua = _iua(payload)
    extensions = payload.get("extensions") or {}
    ehdsi = extensions.get("ehdsi") or {}
    origin = payload.get("origin") or {}
    aud = payload["aud"]
    nbf = _number(payload, "nbf")
    return Claims(
        issuer=_text(payload["iss"]),
        subject=_text(payload["sub"]),
        audience=(aud,) if isinstance(aud, str) else tuple(_text(a) for a in aud),
        token_id=_text(payload["jti"]),
        issued_at=_time(payload["iat"]),
        expires_at=_time(payload["exp"]),
        not_before=_time(nbf) if nbf is not None else None,
        scopes=frozenset(_text(payload["scope"]).split()) if payload.get("scope") else frozenset(),
        client_id=_opt(payload.get("client_id")),
        role=_coding_code(iua.get("subject_role"), ISCO08_SYSTEM),
        organisation=_opt(iua.get("subject_organization")),
        organisation_id=_opt(iua.get("subject_organization_id")),
        facility=_opt(ehdsi.get("healthcare_facility_type")),
        home_community_id=_opt(iua.get("home_community_id")),
        purpose_of_use=_purpose(iua.get("purpose_of_use")),
        patient=_parse_cx(iua.get("person_id")),
        country=trust.country,
        origin_issuer=_opt(origin.get("iss")),
        origin_token_id=_opt(origin.get("jti")),
        certificate_thumbprint=_confirmation(payload.get("cnf")),
    )


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError("expected a non-empty string")
    return value


def _opt(value: Any) -> str | None:
    return None if value is None else _text(value)


def _time(value: Any) -> datetime:
    return datetime.fromtimestamp(float(value), UTC)


def _confirmation(value: Any) -> str | None:
    """The certificate a token is bound to: ``cnf`` (RFC 7800 §3.1) ``x5t#S256`` (RFC 8705 §3.1); a token
    with no such member is bound to no certificate."""
    if value is None:
        return None
    thumbprint = value.get(_THUMBPRINT_CLAIM)
    if thumbprint is not None and (not isinstance(thumbprint, str) or not _THUMBPRINT.match(thumbprint)):
        raise ValueError("cnf x5t#S256 is not a SHA-256 thumbprint")
    return thumbprint


def _coding_code(value: Any, system: str) -> str | None:
    if value is None:
        return None
    if value.get("system") != system:
        raise ValueError("unexpected code system")
    return _text(value.get("code"))


def _purpose(value: Any) -> str | None:
    """The eHDSI purpose of use; any code other than TREATMENT / EMERGENCY is kept and refused later."""
    if value is None:
        return None
    codes = [c for c in value if c.get("system") == PURPOSE_OF_USE_SYSTEM]
    if len(codes) != 1:
        raise ValueError("exactly one eHDSI purpose of use expected")
    return _text(codes[0].get("code"))


def _parse_cx(value: Any) -> PatientRef | None:
    return None if value is None else PatientRef.from_cx(_text(value))


def _check_binding(claims: Claims, thumbprint: str) -> None:
    """RFC 8705 §3: a certificate-bound token is accepted only from the TLS peer holding that certificate."""
    bound = claims.certificate_thumbprint
    if bound is None:
        raise _unauthorized("assertion is not bound to a client certificate (cnf x5t#S256)")
    if not hmac.compare_digest(bound, thumbprint):
        raise _unauthorized("assertion is bound to another client certificate than the TLS peer's")


def _authorize(
    claims: Claims,
    required_scopes: Iterable[str],
    patient: PatientRef | tuple[str, str] | None,
    require_treatment: bool,
    country: str | None,
) -> None:
    """403 checks on a valid token (IUA ITI-72: claims must match the transaction and its data)."""
    missing = sorted(set(required_scopes) - claims.scopes)
    if missing:
        raise Forbidden(f"token lacks scope {' '.join(missing)}", headers=dict(_SCOPE_CHALLENGE))
    if country is not None and claims.country != country:
        raise Forbidden("token signer is not the NCP of the calling country")
    if claims.purpose_of_use is not None and claims.purpose_of_use not in PURPOSES_OF_USE:
        raise Forbidden("purpose of use not allowed")
    if (require_treatment or patient is not None) and (
        claims.patient is None or claims.purpose_of_use is None
    ):
        raise Forbidden("no treatment context for a patient")
    if patient is not None and claims.patient != PatientRef(*_normalise_patient(patient)):
        raise Forbidden("request patient differs from the treatment context")


def _normalise_patient(patient: Sequence[str]) -> tuple[str, str]:
    issuer, pid = patient
    return issuer.removeprefix("urn:oid:"), pid
