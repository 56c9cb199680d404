"""A region's XCA Responding Gateway, grouped with its XDS.b Document Registry + Repository.

=========================  ===========================================================
``POST /xca/iti38``        ITI-38 Cross Gateway Query (``urn:ihe:iti:2007:CrossGatewayQuery``)
``POST /xca/iti39``        ITI-39 Cross Gateway Retrieve (``urn:ihe:iti:2007:CrossGatewayRetrieve``)
``extra_routes``           more Responding Gateway transactions (RAD-75, ``ncp.registry.xca.rad75``)
``/xds/...``, ``/health``  the region's XDS.b role (``ncp.registry.xds.app``): ITI-41 seeding, ITI-18/43
=========================  ===========================================================

The gateway is grouped with the region's registry and repository (ITI TF-1 18.2.1), so it queries and
reads the same store in-process; what crosses the community boundary is SOAP. As in the XDS role, what
cannot be read as a SOAP request is a Fault (HTTP 400, 413, 415), what is read but refused a registry
response with the XDS error code and ``location`` = this region's homeCommunityId (HTTP 200).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from ncp.bodytimeout import BodyTimeout
from ncp.errors import NcpError
from ncp.registry.xca import iti38, iti39
from ncp.registry.xca.settings import QUERY_PATH, RETRIEVE_PATH
from ncp.registry.xds.app import Xds, create_xds_app
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

__all__ = ["Handler", "create_responding_app", "soap_endpoint"]

_log = logging.getLogger(__name__)
Handler = Callable[[Xds, Envelope], Awaitable[SoapMessage]]
_ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def create_responding_app(xds: XdsSettings, extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The region's listener: ITI-38/39, ``extra_routes`` (their handlers find the region's settings and
    store as ``request.app.state.xds``, an ``ncp.registry.xds.app.Xds``), and the XDS.b role."""
    role = create_xds_app(xds)
    routes = [
        Route(QUERY_PATH, soap_endpoint({iti38.ACTION: _query}), methods=_ANY_METHOD),
        Route(RETRIEVE_PATH, soap_endpoint({iti39.ACTION: _retrieve}), methods=_ANY_METHOD),
        *extra_routes,
        Mount("/", role),  # /xds/registry, /xds/repository, /health, and its SOAP Faults for anything else
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(BodyTimeout)],
        exception_handlers={HTTPException: _as_fault, NcpError: _as_fault},
    )
    app.state.xds = role.state.xds
    return app


def soap_endpoint(handlers: dict[str, Handler]) -> Callable[[Request], Awaitable[Response]]:
    """One SOAP endpoint: the message read within the region's bounds, dispatched on its WS-Addressing
    Action (another Action is ``wsa:ActionNotSupported``, WS-Addressing 1.0 SOAP Binding 6.4). Every
    method reaches it: another than POST is this endpoint's Fault (405), not the mounted role's 404."""

    async def endpoint(request: Request) -> Response:
        xds: Xds = request.app.state.xds
        relates_to = None
        try:
            if request.method != "POST":
                raise SoapFault(f"{request.method} is not allowed: SOAP 1.2 requests are POSTed", status=405)
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
            _log.exception("XCA request failed")
            message = fault_message(
                SoapFault("internal error", code="Receiver", status=500), relates_to=relates_to
            )
        return _response(message)

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


async def _query(xds: Xds, env: Envelope) -> SoapMessage:
    body = await run_in_threadpool(iti38.respond, env.body, xds.settings, xds.store)
    return soap_message(body, action=iti38.RESPONSE_ACTION, relates_to=env.message_id)


async def _retrieve(xds: Xds, env: Envelope) -> SoapMessage:
    body, parts = await run_in_threadpool(iti39.respond, env.body, xds.settings, xds.store)
    return mtom_message(body, action=iti39.RESPONSE_ACTION, relates_to=env.message_id, attachments=parts)


def _response(message: SoapMessage) -> Response:
    return Response(message.body, status_code=message.status, headers={"content-type": message.content_type})


def _as_fault(request: Request, exc: Exception) -> Response:
    """A wrong method on ITI-38/39 (405) or a body that stopped arriving (408) as a SOAP Fault."""
    status = exc.status_code if isinstance(exc, HTTPException) else getattr(exc, "status", 400)
    return _response(fault_message(SoapFault(str(exc), status=status)))
