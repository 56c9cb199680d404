"""Security on the gateway: tokens on every request, NCP assertions across the border, audit per hop.

* ``gateway`` listener: the consumer's bearer token is verified against the country's own IdP; from
  patient search on, a treatment token for exactly the patient concerned is required.
* NCP-B → NCP-A: mutual TLS (a client context pinned to the responding country's certificate) and an
  ``X-NCP-Assertion`` signed by NCP-B re-stating the HCP and treatment context. The consumer's token
  never leaves its country.
* ``border`` listener: the peer certificate must be registered for a country, the assertion must be
  signed by that same country's NCP, and every image request is checked against the asserted patient
  (a study of another patient is 403, before any byte is fetched).

With security off (a topology for benchmarks), checks are skipped but audit still records.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ncp.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from ncp.security.audit import AuditRecord, AuditStore, user_fields
from ncp.security.pki import FederationPki
from ncp.security.tokens import Claims, PatientRef, ncp_id

__all__ = ["AuditMiddleware", "Guard", "idp_routes_handlers"]

ASSERTION = "x-ncp-assertion"
_OWNERSHIP_TTL = 300.0
_OWNERSHIP_MAX = 10_000
_REPLAY_MAX = 100_000  # assertions live minutes (verifier skew 60 s): a busy border's last few minutes
_SKEW_S = 60.0


class Guard:
    """One app's security state (several NCPs share a process: nothing here is module-level)."""

    def __init__(self, country: str, pki: FederationPki | None) -> None:
        self.country = country
        self.pki = pki
        self._gateway_verifier = pki.gateway_verifier(country) if pki else None
        self._border_verifier = pki.border_verifier(country) if pki else None
        self._signer = pki.ncp_signer(country) if pki else None
        self._owned: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._assertions_seen: OrderedDict[str, float] = OrderedDict()  # jti -> when it stops verifying

    @property
    def enabled(self) -> bool:
        return self.pki is not None

    # -- gateway listener ---------------------------------------------------------------------------
    def consumer(
        self, request: Request, *, patient: PatientRef | None = None, treatment: bool = True
    ) -> Claims | None:
        if self._gateway_verifier is None:
            return None
        claims = self._gateway_verifier.verify_header(
            request.headers.get("authorization"), patient=patient, require_treatment=treatment
        )
        request.state.claims = claims
        return claims

    def assertion_for(self, claims: Claims | None, target: str) -> dict[str, str]:
        """Headers carrying the context to ``target``'s NCP, signed by this NCP."""
        if claims is None or self._signer is None:
            return {}
        return {ASSERTION: self._signer.sign(claims, audience=ncp_id(target))}

    # -- border listener ----------------------------------------------------------------------------
    def peer(
        self, request: Request, *, patient: PatientRef | None = None, treatment: bool = True
    ) -> Claims | None:
        if self.pki is None or self._border_verifier is None:
            return None
        country = self.pki.require_peer_country(request.scope)
        claims = self._border_verifier.verify(
            request.headers.get(ASSERTION), patient=patient, require_treatment=treatment, country=country
        )
        self._refuse_replay(claims)
        request.state.claims = claims
        request.state.peer = country
        return claims

    def _refuse_replay(self, claims: Claims) -> None:
        """An NCP signs one assertion per request: one seen before is a replay (401), whoever sends it."""
        now = time.time()
        while self._assertions_seen and (
            next(iter(self._assertions_seen.values())) < now or len(self._assertions_seen) >= _REPLAY_MAX
        ):
            self._assertions_seen.popitem(last=False)
        if claims.token_id in self._assertions_seen:
            raise Unauthorized("NCP assertion already used: each request carries a fresh one")
        self._assertions_seen[claims.token_id] = claims.expires_at.timestamp() + _SKEW_S

    async def require_ownership(
        self, claims: Claims | None, study: str, owns: Callable[[PatientRef, str], Awaitable[bool]]
    ) -> None:
        """Refuse (403) a study that does not belong to the asserted patient; positive answers are cached."""
        if claims is None:
            return
        if claims.patient is None:
            raise Forbidden("the assertion carries no treatment context")
        key = (claims.patient.fhir_token(), study)
        seen = self._owned.get(key)
        if seen is not None and time.monotonic() - seen < _OWNERSHIP_TTL:
            return
        if not await owns(claims.patient, study):
            raise Forbidden("the requested study does not belong to the patient of the treatment context")
        self._owned[key] = time.monotonic()
        while len(self._owned) > _OWNERSHIP_MAX:
            self._owned.popitem(last=False)


def patient_ref(token: str) -> PatientRef:
    """``urn:oid:{issuer}|{id}`` -> PatientRef."""
    system, _, ident = token.partition("|")
    return PatientRef(system.removeprefix("urn:oid:"), ident)


class AuditMiddleware:
    """Records one BALP AuditEvent per transaction at this hop, with the status actually answered."""

    def __init__(self, app: ASGIApp, store: AuditStore, source: str, home_community_id: str) -> None:
        self.app, self.store, self.source, self.hcid = app, store, source, home_community_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transaction = _transaction(scope) if scope["type"] == "http" else None
        if transaction is None:
            await self.app(scope, receive, send)
            return
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            await anyio.to_thread.run_sync(self.store.record, self._record(scope, transaction, status))

    def _record(self, scope: Scope, transaction: str, status: int) -> AuditRecord:
        state = scope.get("state") or {}
        claims: Claims | None = state.get("claims")
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        query = scope.get("query_string", b"").decode("latin-1")
        outcome = "0" if status < 400 else "4" if status < 500 else "8"
        fields: dict[str, Any] = {
            "home_community_id": self.hcid,
            "request_id": headers.get("x-request-id") or state.get("request_id"),
            "query": f"{scope['method']} {scope['path']}" + (f"?{query}" if query else ""),
            "status": status,
            "client": state.get("peer") or (scope.get("client") or ("?",))[0],
        }
        if claims is not None:
            fields.update(user_fields(claims))
        return AuditRecord(transaction=transaction, outcome=outcome, source=self.source, **fields)


def _transaction(scope: Scope) -> str | None:
    path: str = scope["path"]
    for prefix, name in (
        ("/fhir/Patient", "ITI-78"),
        ("/fhir/DocumentReference", "ITI-67"),
        ("/fhir/Binary/", "ITI-68"),
        ("/wado/", "RAD-160"),
        ("/wado-rs/", "RAD-160"),
        ("/idp/", "ITI-71"),  # IUA Get Access Token: a treatment context opened or refused
    ):
        if path.startswith(prefix):
            return name
    return None


def idp_routes_handlers(
    pki: FederationPki, country: str, identified: Callable[[Request, str, str], Awaitable[bool]]
) -> dict[str, Callable[[Request], Awaitable[Response]]]:
    """The country's simulated identity provider: ``POST /idp/token`` and ``POST /idp/treatment``;
    ``identified(request, issuer, id)`` says whether patient identification finds the patient."""
    idp = pki.identity_provider(country)

    async def token(request: Request) -> Response:
        form = await request.form()
        try:
            issued = idp.hcp_token(
                subject=str(form.get("subject") or "dr-test"),
                role=str(form.get("role") or "2211"),
                organisation=str(form.get("organisation") or f"Hospital {country}"),
                facility=str(form.get("facility") or "Hospital"),
                scopes=str(form.get("scope") or "patient/*.read").split(),
            )
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        return _token_response(issued)

    async def treatment(request: Request) -> Response:
        form = await request.form()
        hcp = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hcp:
            raise Unauthorized("an HCP token (Authorization: Bearer) is required")
        patient_id, issuer = str(form.get("patient_id") or ""), str(form.get("patient_issuer") or "")
        try:
            issued = idp.treatment_token(
                hcp,
                patient_id=patient_id,
                patient_issuer=issuer,
                purpose_of_use=str(form.get("purpose_of_use") or "TREATMENT"),
            )
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        if not await identified(request, issuer, patient_id):
            raise NotFound(
                f"patient {patient_id} is not known to the community of urn:oid:{issuer}: no context"
            )
        return _token_response(issued)

    return {"/idp/token": token, "/idp/treatment": treatment}


def _token_response(token: str) -> Response:
    body: dict[str, Any] = {"access_token": token, "token_type": "Bearer", "expires_in": 300}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})
