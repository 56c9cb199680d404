"""The XDS.b role: Document Registry + Repository over SOAP 1.2 (IHE ITI TF-2x Appendix V).

=========================  ===========================================================
``POST /xds/registry``     ITI-18 Registry Stored Query (``urn:ihe:iti:2007:RegistryStoredQuery``)
``POST /xds/repository``   ITI-41 Provide and Register Document Set-b (MTOM or inline), ITI-43
                           Retrieve Document Set (answered with MTOM/XOP)
``GET  /health``           liveness + counts
=========================  ===========================================================

With XUA trust configured (``XdsSettings.xua_trust``), every message must carry an ITI-40 assertion in
``wsse:Security`` (:mod:`ncp.security.xua`), checked before the handler runs: missing, forged, expired,
foreign or misaddressed is a SOAP Fault with the WSS 1.1 subcode and nothing is stored; the user and
patient it asserts are recorded in the role's audit trail (``XdsSettings.audit_db``), refusals too. A
listener grouped with the role (an XCA Responding Gateway: ITI-38/39, RAD-75) serves its own transactions
the same way with :func:`secured_endpoint`.

The endpoint is chosen by path and the operation by the WS-Addressing Action (an Action the endpoint
does not take is the Fault ``wsa:ActionNotSupported``, WS-Addressing 1.0 SOAP Binding 6.4). What
cannot be read as a SOAP request is a SOAP Fault (Sender: HTTP 400, 413, 415); what is read but refused
is a registry response with the XDS error code and ``location`` = this homeCommunityId, HTTP 200. This
module is the one place where both are turned into HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ncp.bodytimeout import BodyTimeout
from ncp.errors import NcpError
from ncp.registry.xds import iti18, iti41, iti43
from ncp.registry.xds.ebrim import XdsError, registry_response
from ncp.registry.xds.settings import XdsSettings
from ncp.registry.xds.store import XdsStore
from ncp.security.audit import AuditRecord, AuditStore
from ncp.security.xua import VerifiedXua, XuaError, XuaVerifier
from ncp.soapcore import (
    Envelope,
    SoapFault,
    SoapMessage,
    fault_response,
    mtom_message,
    serve_soap,
    soap_message,
)

__all__ = ["Audited", "Handler", "Xds", "XdsSettings", "create_xds_app", "secured_endpoint"]

Handler = Callable[["Xds", Envelope], Awaitable[SoapMessage | Response]]
Audited = Mapping[str, tuple[str, str]]  # Action -> audited transaction, DICOM/ATNA action (E, C or R)
_TRANSACTIONS = {iti18.ACTION: ("ITI-18", "E"), iti41.ACTION: ("ITI-41", "C"), iti43.ACTION: ("ITI-43", "R")}


class Xds:
    """What the handlers share: settings, store, XUA verifier and audit (on ``app.state.xds``)."""

    def __init__(self, settings: XdsSettings) -> None:
        self.settings = settings
        self.store = XdsStore(settings.db_path)
        trust = dict(settings.xua_trust)
        self.xua = XuaVerifier.from_files(trust, settings.xua_audience) if trust else None
        self.audit = AuditStore(settings.audit_db) if settings.audit_db else None

    def close(self) -> None:
        if self.audit is not None:
            self.audit.close()

    def authorize(self, env: Envelope) -> VerifiedXua | None:
        """The message's XUA user (ITI-40 X-Service Provider), or a Fault with the WSS 1.1 code (SOAP Message
        Security 12); None when this role requires no XUA."""
        if self.xua is None:
            return None
        if env.security is None and env.action == iti41.ACTION and self.settings.xua_system_submissions:
            return None
        try:
            return self.xua.verify(env.security)
        except XuaError as exc:
            raise SoapFault(exc.reason, subcode=f"wsse:{exc.code}") from None

    async def record(
        self,
        request: Request,
        env: Envelope | None,
        user: VerifiedXua | None,
        status: int,
        why: str | None,
        audited: Audited = _TRANSACTIONS,
    ) -> None:
        """One audit record per message read, naming its XUA user (ITI-40 X-Service Provider)."""
        known = audited.get(env.action) if env is not None else None
        if self.audit is None or known is None:
            return
        ctx = user.context if user else None
        patient = ctx.patient if ctx else None
        await self.audit.arecord(
            AuditRecord(
                transaction=known[0],
                action=known[1],
                outcome="0" if status < 400 else "4",
                source=f"XDS {self.settings.home}",
                user=ctx.subject if ctx else None,
                user_issuer=user.issuer if user else None,
                user_role=ctx.role if ctx else None,
                user_organisation=ctx.organisation if ctx else None,
                purpose_of_use=ctx.purpose_of_use if ctx else None,
                patient=f"{patient.issuer}|{patient.id}" if patient else None,
                home_community_id=self.settings.home_community_id,
                request_id=request.headers.get("x-request-id"),
                query=f"POST {request.url.path} {env.action if env else ''}",
                status=status,
                token_id=user.assertion_id if user else None,
                detail=why,
            )
        )

    @staticmethod
    def of(request: Request) -> Xds:
        xds: Xds = request.app.state.xds
        return xds


def create_xds_app(settings: XdsSettings) -> Starlette:
    """One registry + repository; its SQLite file is opened (and created) here."""
    routes = [
        Route("/xds/registry", secured_endpoint({iti18.ACTION: _stored_query}), methods=["POST"]),
        Route(
            "/xds/repository",
            secured_endpoint({iti41.ACTION: _provide_and_register, iti43.ACTION: _retrieve}),
            methods=["POST"],
        ),
        Route("/health", _health, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(BodyTimeout)],
        exception_handlers={HTTPException: fault_response, NcpError: fault_response},
    )
    app.state.xds = Xds(settings)
    return app


def secured_endpoint(
    handlers: Mapping[str, Handler], audited: Audited = _TRANSACTIONS, *, max_message_bytes: int | None = None
) -> Callable[[Request], Awaitable[Response]]:
    """A SOAP endpoint of an app whose ``state.xds`` is an :class:`Xds` (this role, or a listener grouped
    with it): with XUA trust anchors every message needs a valid assertion, checked before its handler;
    each message read is audited as ``audited`` names its Action. ``max_message_bytes`` bounds message
    and part below the role's own bounds (a request that lists UIDs only)."""

    async def endpoint(request: Request) -> Response:
        xds = Xds.of(request)
        user = None

        async def authorized(env: Envelope) -> SoapMessage | Response:
            nonlocal user
            user = xds.authorize(env)  # before the handler: a refused message stores nothing
            return await handlers[env.action](xds, env)

        served = await serve_soap(
            request,
            dict.fromkeys(handlers, authorized),
            max_message_bytes=max_message_bytes or xds.settings.max_message_bytes,
            max_part_bytes=max_message_bytes or xds.settings.max_part_bytes,
            security=xds.xua is not None,
        )
        status, why = served.response.status_code, served.fault
        await xds.record(request, served.envelope, user, status, why, audited)
        return served.response

    return endpoint


async def _stored_query(xds: Xds, env: Envelope) -> SoapMessage:
    query = None
    try:
        query = iti18.read_query(env.body)
        entries = await run_in_threadpool(iti18.run_query, query, xds.settings, xds.store)
        body = iti18.query_response(entries, query, xds.settings, [])
    except XdsError as error:
        body = iti18.query_response([], query, xds.settings, [error])
    return soap_message(body, action=iti18.RESPONSE_ACTION, relates_to=env.message_id)


async def _provide_and_register(xds: Xds, env: Envelope) -> SoapMessage:
    try:
        await run_in_threadpool(
            iti41.provide_and_register, env.body, env.attachments, xds.settings, xds.store
        )
        body = registry_response([], xds.settings.home)
    except XdsError as error:
        body = registry_response([error], xds.settings.home)
    return soap_message(body, action=iti41.RESPONSE_ACTION, relates_to=env.message_id)


async def _retrieve(xds: Xds, env: Envelope) -> SoapMessage:
    requests = iti43.read_requests(env.body)
    found, errors = await run_in_threadpool(iti43.retrieve, requests, xds.settings, xds.store)
    body, parts = iti43.retrieve_response(found, errors, xds.settings)
    return mtom_message(body, action=iti43.RESPONSE_ACTION, relates_to=env.message_id, attachments=parts)


async def _health(request: Request) -> Response:
    xds = Xds.of(request)
    counts = await run_in_threadpool(xds.store.counts)
    body = {"status": "ok", "home_community_id": xds.settings.home_community_id, **counts}
    return Response(json.dumps(body), media_type="application/json")
