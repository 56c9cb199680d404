"""Security on the gateway: tokens on every request, NCP assertions across the border, audit per hop.

* ``gateway`` listener: the consumer's bearer token is verified against the country's own IdP; from
  patient search on, a treatment token for exactly the patient concerned is required.
* NCP-B → NCP-A: mutual TLS (a client context pinned to the responding country's certificate) and an
  ``X-NCP-Assertion`` signed by NCP-B re-stating the HCP and treatment context. The consumer's token
  never leaves its country.
* ``border`` listener: the peer certificate must be registered for a country, the assertion must be
  signed by that same country's NCP and bound to that very certificate (RFC 8705 §3), and every image
  request is checked against the asserted patient (a study of another patient is 403, before any byte
  is fetched). Being bound, an assertion is reused for its context (docs/decisions.md, Security).

With security off (a topology for benchmarks), checks are skipped but audit still records.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ncp.asgi import raw_header
from ncp.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from ncp.security.audit import FAILURE_STATE, AuditRecord, AuditStore, user_fields
from ncp.security.pki import FederationPki, peer_certificate_pem
from ncp.security.tokens import Claims, PatientRef, certificate_thumbprint, ncp_id, patient_ref
from ncp.security.xua import XuaIssuer

__all__ = [
    "FRONT_CERT",
    "OWNERSHIP_TTL_S",
    "AuditMiddleware",
    "Guard",
    "exchange_fields",
    "idp_routes_handlers",
    "outcome_of",
]

ASSERTION = "x-ncp-assertion"
FRONT_CERT = "x-xcwado-client-cert"  # set by the nginx front only: $ssl_client_escaped_cert
OWNERSHIP_TTL_S = 5.0  # how long a withdrawn manifest may still open its study
_OWNERSHIP_MAX = 10_000


class Guard:
    """One app's security state (several NCPs share a process: nothing here is module-level)."""

    def __init__(self, country: str, pki: FederationPki | None, *, fronted: bool = False) -> None:
        self.country = country
        self.pki = pki
        # behind the nginx front (ncp.gateway.front), nginx terminates the border's mutual TLS and hands
        # the verified client certificate on in FRONT_CERT over a socket only it can reach
        self.fronted = fronted
        self._gateway_verifier = pki.gateway_verifier(country) if pki else None
        self._border_verifier = pki.border_verifier(country) if pki else None
        self._signer = pki.ncp_signer(country) if pki else None
        self.xua = _xua_issuer(country, pki) if pki else None  # signs ITI-40 for its national registries
        self._owned: OrderedDict[tuple[str, str], float] = OrderedDict()  # -> epoch time it lapses
        self._asking: dict[tuple[str, str], asyncio.Task[bool]] = {}  # lookups in flight, shared
        # a peer's certificate is the same on every request of its pooled connections: parse it once
        self._peer_of = (
            functools.lru_cache(maxsize=64)(functools.partial(_peer_identity, pki)) if pki else None
        )

    @property
    def enabled(self) -> bool:
        return self.pki is not None

    # -- gateway listener ---------------------------------------------------------------------------
    def consumer(
        self, request: Request, *, patient: PatientRef | None = None, treatment: bool = True
    ) -> Claims | None:
        claims = self.verify_consumer(
            request.headers.get("authorization"), patient=patient, treatment=treatment
        )
        if claims is not None:
            request.state.claims = claims
        return claims

    def verify_consumer(
        self, authorization: str | None, *, patient: PatientRef | None = None, treatment: bool = True
    ) -> Claims | None:
        """The claims of a consumer's ``Authorization`` header (None with security off)."""
        if self._gateway_verifier is None:
            return None
        return self._gateway_verifier.verify_header(
            authorization, patient=patient, require_treatment=treatment
        )

    def assertion_for(self, claims: Claims | None, target: str) -> dict[str, str]:
        """Headers carrying the context to ``target``'s NCP, signed by this NCP and bound to its client
        certificate: the same assertion serves the context's requests while it has life left."""
        if claims is None or self._signer is None:
            return {}
        return {ASSERTION: self._signer.reusable(claims, audience=ncp_id(target))}

    # -- border listener ----------------------------------------------------------------------------
    def peer(
        self, request: Request, *, patient: PatientRef | None = None, treatment: bool = True
    ) -> Claims | None:
        """The assertion's claims once it is signed by the NCP of the TLS peer's country and bound to the
        certificate that peer presented on this connection (RFC 8705 §3: a copy is useless to others)."""
        if self.fronted:
            pem: str | None = request.headers.get(FRONT_CERT) or None
        else:
            pem = peer_certificate_pem(request.scope)
        found = self.verify_peer(pem, request.headers.get(ASSERTION), patient=patient, treatment=treatment)
        if found is None:
            return None
        request.state.claims, request.state.peer = found
        return found[0]

    def verify_peer(
        self,
        certificate: str | None,
        assertion: str | None,
        *,
        patient: PatientRef | None = None,
        treatment: bool = True,
    ) -> tuple[Claims, str] | None:
        """The claims of an NCP ``assertion`` and the peer's country, given the PEM ``certificate`` the
        peer presented on its connection, as is or URL-escaped by the nginx front (None with security
        off)."""
        if self._peer_of is None or self._border_verifier is None:
            return None
        country, thumbprint = self._peer_of(certificate)
        if country is None:
            raise Forbidden("client certificate is not registered for any country")
        claims = self._border_verifier.verify(
            assertion, patient=patient, require_treatment=treatment, country=country, bound_to=thumbprint
        )
        return claims, country

    async def require_ownership(
        self, claims: Claims | None, study: str, owns: Callable[[PatientRef, str], Awaitable[bool]]
    ) -> None:
        """Refuse (403) a study that does not belong to the asserted patient.

        A positive answer is reused for at most ``OWNERSHIP_TTL_S`` and never beyond the assertion that
        earned it: a manifest withdrawn (entered in error, deprecated) stops retrieval within that time.
        Requests that arrive while the registries are being asked wait for that answer (a viewer's 16
        image requests at once made 16 identical searches whenever the answer lapsed).
        """
        if self.owned(claims, study):
            return
        assert claims is not None and claims.patient is not None  # owned() said so
        key = (claims.patient.search_token(), study)
        now = time.time()
        patient = claims.patient
        if not await self._ask_once(key, lambda: owns(patient, study)):
            self._owned.pop(key, None)
            raise Forbidden("the requested study does not belong to the patient of the treatment context")
        self._owned[key] = min(now + OWNERSHIP_TTL_S, claims.expires_at.timestamp())
        self._owned.move_to_end(key)
        while len(self._owned) > _OWNERSHIP_MAX:
            self._owned.popitem(last=False)

    def owned(self, claims: Claims | None, study: str) -> bool:
        """Whether :meth:`require_ownership` would pass without asking the registries: no assertion (security
        off), or a positive answer that has not lapsed. An assertion without a treatment context is 403."""
        if claims is None:
            return True
        if claims.patient is None:
            raise Forbidden("the assertion carries no treatment context")
        lapses = self._owned.get((claims.patient.search_token(), study))
        return lapses is not None and time.time() < lapses

    async def _ask_once(self, key: tuple[str, str], lookup: Callable[[], Awaitable[bool]]) -> bool:
        task = self._asking.get(key)
        if task is None:
            task = self._asking[key] = asyncio.ensure_future(lookup())
            task.add_done_callback(lambda _: self._asking.pop(key, None))
        return await asyncio.shield(task)  # a waiter that gives up does not cancel the others' lookup


class AuditMiddleware:
    """Records one BALP AuditEvent per transaction at this hop, with the status actually answered and, for a
    failure, why: the reason an error handler noted (:func:`~ncp.security.audit.note_failure`), else the
    ``Warning`` relayed from the next hop (PS3.18 8.6.2), else the exception that escaped (outcome 8)."""

    def __init__(self, app: ASGIApp, store: AuditStore, source: str, home_community_id: str) -> None:
        self.app, self.store, self.source, self.hcid = app, store, source, home_community_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transaction = _transaction(scope) if scope["type"] == "http" else None
        if transaction is None:
            await self.app(scope, receive, send)
            return
        exchange = _Audited(self, scope, transaction, send)
        try:
            await self.app(scope, receive, exchange.send)
        except Exception as exc:
            exchange.crash = f"answer aborted: {type(exc).__name__}"
            raise
        finally:
            await exchange.record()

    def _record(
        self, scope: Scope, transaction: str, status: int, warning: str | None, crash: str | None
    ) -> AuditRecord:
        state = scope.get("state") or {}
        # ITI-81 on ``AuditEvent/{id}`` is a FHIR read (action R); otherwise the transaction's default
        read = transaction == "ITI-81" and scope["path"].rstrip("/") != "/fhir/AuditEvent"
        return AuditRecord(
            transaction,
            outcome_of(status, broken=crash is not None),
            action="R" if read else None,
            subtype="read" if read else None,
            detail=state.get(FAILURE_STATE) or crash or (warning if status >= 400 else None),
            status=status,
            **exchange_fields(
                self.source,
                self.hcid,
                raw_header(scope, b"x-request-id") or state.get("request_id"),
                f"{scope['method']} {scope['path']}",
                scope.get("query_string", b"").decode("latin-1"),
                # the TCP peer as the server saw it (uvicorn runs with proxy_headers off), or the peer NCP
                state.get("peer") or (scope.get("client") or ("?",))[0],
                state.get("claims"),
            ),
        )


def exchange_fields(
    source: str,
    hcid: str,
    request_id: str | None,
    target: str,
    query: str,
    client: str,
    claims: Claims | None,
) -> dict[str, Any]:
    """The :class:`AuditRecord` fields of one exchange at a hop, whichever lane carried it (this middleware,
    or the nginx front's, ncp.gateway.authz): ``target`` is "METHOD path"."""
    return {
        "source": source,
        "home_community_id": hcid,
        "request_id": request_id,
        "query": f"{target}?{query}" if query else target,
        "client": client,
        **(user_fields(claims) if claims is not None else {}),
    }


def outcome_of(status: int, *, broken: bool) -> str:
    """BALP outcome of an answered exchange: 8 when the server failed or the answer was cut short, 4 when
    it was refused, else 0."""
    return "8" if broken or status >= 500 else "4" if status >= 400 else "0"


class _Audited:
    """One audited exchange: what it answered, and whether its record is in the trail yet (a small class
    rather than closures and dicts built for every request)."""

    __slots__ = ("_audit", "_done", "_left", "_scope", "_send", "_txn", "crash", "status", "warning")

    def __init__(self, audit: AuditMiddleware, scope: Scope, transaction: str, send: Send) -> None:
        self._audit, self._scope, self._txn, self._send = audit, scope, transaction, send
        self.status = 500
        self.warning: str | None = None
        self.crash: str | None = None
        self._left: int | None = None  # bytes the Content-Length still announces, if any
        self._done = False

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if not self._done:
                left = self._left
                if left is not None:
                    left = self._left = left - len(message.get("body", b""))
                if not message.get("more_body", False) or (left is not None and left <= 0):
                    await self.record()  # in the trail before the client has its whole answer
        elif kind == "http.response.start":
            self.status = message["status"]
            self.warning, self._left = _answer_headers(message)
            if self._left == 0 or self.status in (204, 304) or self._scope["method"] == "HEAD":
                await self.record()  # no content follows (RFC 9110 6.4.1): these headers are the whole answer
        await self._send(message)

    async def record(self) -> None:
        if not self._done:
            self._done = True
            audit = self._audit
            event = audit._record(self._scope, self._txn, self.status, self.warning, self.crash)
            await audit.store.arecord(event)


def _answer_headers(start: Message) -> tuple[str | None, int | None]:
    """The answer's ``Warning`` and ``Content-Length`` (the first of each), in one pass over its headers."""
    warning: str | None = None
    length: int | None = None
    for name, value in start.get("headers", ()):
        name = name.lower()
        if name == b"warning" and warning is None:
            warning = value.decode("latin-1")
        elif name == b"content-length" and length is None and value.isdigit():
            length = int(value)
    return warning, length


def _transaction(scope: Scope) -> str | None:
    path: str = scope["path"]
    for prefix, name in (
        ("/fhir/Patient", "ITI-78"),
        ("/fhir/DocumentReference", "ITI-67"),
        ("/fhir/Binary/", "ITI-68"),
        ("/fhir/AuditEvent", "ITI-81"),  # RESTful ATNA: who read the audit trail, or was refused, is audited
        ("/wado/", "RAD-160"),
        ("/wado-rs/", "RAD-160"),
        ("/idp/", "ITI-71"),  # IUA Get Access Token: a treatment context opened or refused
    ):
        if path.startswith(prefix):
            return name
    return None


def idp_routes_handlers(
    pki: FederationPki, country: str, identified: Callable[[Request, PatientRef], Awaitable[bool]]
) -> dict[str, Callable[[Request], Awaitable[Response]]]:
    """The country's simulated identity provider: ``POST /idp/token`` and ``POST /idp/treatment``;
    ``identified(request, patient)`` says whether patient identification finds the patient."""
    idp = pki.identity_provider(country)

    async def token(request: Request) -> Response:
        form = await _form(request, ("subject", "role", "organisation", "facility", "scope"))
        try:
            issued = idp.hcp_token(
                subject=form.get("subject") or "dr-test",
                role=form.get("role") or "2211",
                organisation=form.get("organisation") or f"Hospital {country}",
                facility=form.get("facility") or "Hospital",
                scopes=(form.get("scope") or "patient/*.read").split(),
            )
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        return _token_response(issued)

    async def treatment(request: Request) -> Response:
        form = await _form(request, ("patient_id", "patient_issuer", "purpose_of_use"))
        hcp = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hcp:
            raise Unauthorized("an HCP token (Authorization: Bearer) is required")
        try:
            patient = patient_ref(form.get("patient_issuer", ""), form.get("patient_id", ""))
            issued = idp.treatment_token(
                hcp,
                patient_id=patient.id,
                patient_issuer=patient.issuer,
                purpose_of_use=form.get("purpose_of_use") or "TREATMENT",
            )
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        if not await identified(request, patient):
            raise NotFound(
                f"patient {patient.id} is not known to the community of urn:oid:{patient.issuer}: no context"
            )
        return _token_response(issued)

    return {"/idp/token": token, "/idp/treatment": treatment}


async def _form(request: Request, fields: tuple[str, ...]) -> dict[str, str]:
    """The IdP's form: each field at most once, as text; a repeated field could name a second patient."""
    try:
        form = await request.form(max_files=0, max_fields=len(fields) + 4)
    except (HTTPException, ValueError, UnicodeDecodeError):
        raise InvalidRequest("the token request is not an application/x-www-form-urlencoded form") from None
    values: dict[str, str] = {}
    for name, value in form.multi_items():
        if not isinstance(value, str):
            raise InvalidRequest(f"form field {name!r} must be text")
        if name in values:
            raise InvalidRequest(f"form field {name!r} is given more than once")
        values[name] = value
    return values


def _token_response(token: str) -> Response:
    body: dict[str, Any] = {"access_token": token, "token_type": "Bearer", "expires_in": 300}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


def _peer_identity(pki: FederationPki, pem: str | None) -> tuple[str | None, str]:
    """The country a peer certificate is registered for (None: none) and its ``x5t#S256``; ``pem`` may be
    URL-escaped (nginx's ``$ssl_client_escaped_cert``): PEM holds no ``%``, so unescaping is harmless, and
    done here it is cached with the rest."""
    if pem is None:
        return None, ""
    der = ssl.PEM_cert_to_DER_cert(unquote(pem))
    return pki.peer_country(der), certificate_thumbprint(der)


def _xua_issuer(country: str, pki: FederationPki) -> XuaIssuer:
    """This NCP's XUA signer: its key and certificate from the federation PKI (docs/xua.md)."""
    pair = pki.client_credentials(country)
    return XuaIssuer.from_files(ncp_id(country), pair.key, pair.cert)
