"""Credentials named by a request (``auth``), made when it is sent: good ones and deliberately bad ones.

Tokens are minted with the treatment country's identity-provider key, as its ``/idp`` endpoints do,
and re-minted before they expire; assertions are signed with its NCP key, a new one per request, bound to
the client certificate the fuzzer presents as that NCP (RFC 8705 §3). A name is ``kind`` or
``kind:argument``:

=====================  ==============================================================================
``hcp``                Authorization: an HCP token (identification only)
``treatment:P``        Authorization: a treatment token for patient P
``assert-hcp``         X-NCP-Assertion: B's NCP re-asserting an HCP context to A
``assert:P``           X-NCP-Assertion: ... a treatment context for P
``expired:P``          a treatment token that expired an hour ago
``expired-assert:P``   an assertion that expired an hour ago (unbound: the border refuses it for expiry first)
``foreign:P``          a token from A's identity provider (valid, but not for B's NCP)
``audience:P``         an assertion for the wrong NCP (B's own)
``replay:P``           the assertion last sent for P (empty if none yet), sent again: reuse over the
                       certificate it is bound to, which the border accepts from its cache of verified
                       tokens (docs/decisions.md, Security), so the other mutations meet the route's checks
``raw-auth:V``         Authorization: V, verbatim
``raw-assert:V``       X-NCP-Assertion: V, verbatim
=====================  ==============================================================================
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ncp.model import PatientRecord
from ncp.security.pki import FederationPki
from ncp.security.tokens import Claims, IdentityProvider, NcpAssertionSigner, idp_issuer, ncp_id

__all__ = ["Credentials", "Header"]

Header = tuple[bytes, bytes]
_REFRESH_S = 120.0  # tokens live 300 s: a long run re-mints them well before
_AUTHORIZATION, _ASSERTION = b"Authorization", b"X-NCP-Assertion"


@dataclass
class Credentials:
    pki: FederationPki
    treatment: str  # the country whose NCP asks (B)
    affiliation: str  # the country whose NCP answers (A)
    patients: dict[str, PatientRecord]
    _tokens: dict[tuple[str, str], tuple[float, str]] = field(default_factory=dict)
    _last_assertion: dict[str, str] = field(default_factory=dict)

    def headers(self, auth: str) -> list[Header]:
        kind, _, arg = auth.partition(":")
        if not kind:
            return []
        return [self._resolve(kind, arg)]

    def _resolve(self, kind: str, arg: str) -> Header:
        makers: dict[str, Callable[[str], Header]] = {
            "hcp": lambda _: _bearer(self._token(self.treatment, "")),
            "treatment": lambda p: _bearer(self._token(self.treatment, p)),
            "assert-hcp": lambda _: self._assertion("", self.affiliation),
            "assert": lambda p: self._assertion(p, self.affiliation),
            "expired": lambda p: _bearer(self._mint(self.treatment, p, clock_offset=-3600)),
            "expired-assert": self._expired_assertion,
            "foreign": lambda p: _bearer(self._token(self.affiliation, p)),
            "audience": lambda p: self._assertion(p, self.treatment),
            "replay": lambda p: (_ASSERTION, self._last_assertion.get(p, "").encode()),
            "raw-auth": lambda v: (_AUTHORIZATION, v.encode("utf-8", "surrogatepass")),
            "raw-assert": lambda v: (_ASSERTION, v.encode("utf-8", "surrogatepass")),
        }
        return makers[kind](arg)

    def _expired_assertion(self, patient: str) -> Header:
        signer = NcpAssertionSigner(
            self.treatment, self.pki.ncp_signing_key(self.treatment), clock=lambda: time.time() - 3600
        )
        claims = self._claims(patient)
        return _ASSERTION, signer.sign(claims, audience=ncp_id(self.affiliation)).encode()

    def _assertion(self, patient: str, audience: str) -> Header:
        signed = self.pki.ncp_signer(self.treatment).sign(self._claims(patient), audience=ncp_id(audience))
        self._last_assertion[patient] = signed
        return _ASSERTION, signed.encode()

    def _claims(self, patient: str) -> Claims:
        token = self._token(self.treatment, patient)
        return self.pki.gateway_verifier(self.treatment).verify(token)

    def _token(self, country: str, patient: str) -> str:
        """A cached token of ``country``'s IdP: HCP (``patient`` empty) or treatment for ``patient``."""
        key = (country, patient)
        made, token = self._tokens.get(key, (0.0, ""))
        if time.monotonic() - made > _REFRESH_S:
            token = self._mint(country, patient)
            self._tokens[key] = (time.monotonic(), token)
        return token

    def _mint(self, country: str, patient: str, *, clock_offset: float = 0.0) -> str:
        idp = IdentityProvider(
            country, self.pki.idp_key(country), idp_issuer(country), clock=lambda: time.time() + clock_offset
        )
        hcp = idp.hcp_token("dr-fuzz", "2211", f"Hospital {country}", "Hospital", ["patient/*.read"])
        if not patient:
            return hcp
        record = self.patients[patient]
        return idp.treatment_token(hcp, patient_id=record.id, patient_issuer=record.issuer)


def _bearer(token: str) -> Header:
    return _AUTHORIZATION, f"Bearer {token}".encode()
