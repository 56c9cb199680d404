"""The XDS.b role: Document Registry + Repository over SOAP 1.2 (IHE ITI TF-2x Appendix V).

=========================  ===========================================================
``POST /xds/registry``     ITI-18 Registry Stored Query (``urn:ihe:iti:2007:RegistryStoredQuery``)
``POST /xds/repository``   ITI-41 Provide and Register Document Set-b (MTOM or inline), ITI-43
                           Retrieve Document Set (answered with MTOM/XOP)
``GET  /health``           liveness + counts
=========================  ===========================================================

The endpoint is chosen by path and the operation by the WS-Addressing Action (an Action the endpoint
does not take is the Fault ``wsa:ActionNotSupported``, WS-Addressing 1.0 SOAP Binding 6.4). What
cannot be read as a SOAP request is a SOAP Fault (Sender: HTTP 400, 413, 415); what is read but refused
is a registry response with the XDS error code and ``location`` = this homeCommunityId, HTTP 200. This
module is the one place where both are turned into HTTP.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

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
from ncp.registry.xds.soap import (
    Envelope,
    SoapFault,
    SoapMessage,
    fault_message,
    mtom_message,
    parse_message,
    soap_message,
)
from ncp.registry.xds.store import XdsStore

__all__ = ["XdsSettings", "create_xds_app"]

_log = logging.getLogger(__name__)
Handler = Callable[["Xds", Envelope], Awaitable[SoapMessage]]


class Xds:
    """What the handlers share: settings and store (on ``app.state.xds``)."""

    def __init__(self, settings: XdsSettings) -> None:
        self.settings = settings
        self.store = XdsStore(settings.db_path)

    @staticmethod
    def of(request: Request) -> Xds:
        xds: Xds = request.app.state.xds
        return xds


def create_xds_app(settings: XdsSettings) -> Starlette:
    """One registry + repository; its SQLite file is opened (and created) here."""
    routes = [
        Route("/xds/registry", _endpoint({iti18.ACTION: _stored_query}), methods=["POST"]),
        Route(
            "/xds/repository",
            _endpoint({iti41.ACTION: _provide_and_register, iti43.ACTION: _retrieve}),
            methods=["POST"],
        ),
        Route("/health", _health, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(BodyTimeout)],
        exception_handlers={HTTPException: _http_error, NcpError: _ncp_error},
    )
    app.state.xds = Xds(settings)
    return app


def _endpoint(handlers: dict[str, Handler]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        xds = Xds.of(request)
        relates_to = None
        try:
            data = await _read_bounded(request, xds.settings.max_message_bytes)
            env = parse_message(
                request.headers.get("content-type", ""), data, max_part_bytes=xds.settings.max_part_bytes
            )
            relates_to = env.message_id
            handler = handlers.get(env.action)
            if handler is None:
                raise SoapFault(f"action {env.action!r} is not served here", subcode="wsa:ActionNotSupported")
            message = await handler(xds, env)
        except SoapFault as fault:
            message = fault_message(fault, relates_to=relates_to)
        except NcpError as exc:  # ncp.bodytimeout's 408: the body stopped arriving
            message = fault_message(SoapFault(exc.message, status=exc.status), relates_to=relates_to)
        except Exception:  # a defect of ours: a Receiver fault, never a traceback to the client
            _log.exception("XDS request failed")
            message = fault_message(
                SoapFault("internal error", code="Receiver", status=500), relates_to=relates_to
            )
        return Response(
            message.body, status_code=message.status, headers={"content-type": message.content_type}
        )

    return endpoint


async def _read_bounded(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise SoapFault(f"message larger than {limit} bytes", status=413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise SoapFault(f"message larger than {limit} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


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


def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no route) and 405 (method) as SOAP Faults, like every other refusal."""
    assert isinstance(exc, HTTPException)
    message = fault_message(SoapFault(str(exc.detail), status=exc.status_code))
    return Response(message.body, status_code=message.status, headers={"content-type": message.content_type})


def _ncp_error(request: Request, exc: Exception) -> Response:
    """ncp.bodytimeout's 408 (a body that stopped arriving) as a SOAP Fault."""
    assert isinstance(exc, NcpError)
    message = fault_message(SoapFault(exc.message, status=exc.status))
    headers = {**exc.headers, "content-type": message.content_type}
    return Response(message.body, status_code=message.status, headers=headers)
