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

import functools
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
from ncp.registry.xca.rad75 import closing_lifespan
from ncp.registry.xca.settings import QUERY_PATH, RETRIEVE_PATH
from ncp.registry.xds.app import Xds, create_xds_app
from ncp.registry.xds.settings import XdsSettings
from ncp.soapcore import Envelope, SoapMessage, fault_response, mtom_message, serve_soap, soap_message

__all__ = ["Handler", "create_responding_app", "soap_endpoint"]

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
        exception_handlers={HTTPException: fault_response, NcpError: fault_response},
        lifespan=closing_lifespan,
    )
    app.state.xds = role.state.xds
    return app


def soap_endpoint(handlers: dict[str, Handler]) -> Callable[[Request], Awaitable[Response]]:
    """One SOAP endpoint with the region's bounds (ncp.soapcore.serve_soap). Every method reaches it:
    another than POST is this endpoint's Fault (405), not the mounted role's 404."""

    async def endpoint(request: Request) -> Response:
        xds: Xds = request.app.state.xds
        served = await serve_soap(
            request,
            {action: functools.partial(handler, xds) for action, handler in handlers.items()},
            max_message_bytes=xds.settings.max_message_bytes,
            max_part_bytes=xds.settings.max_part_bytes,
        )
        return served.response

    return endpoint


async def _query(xds: Xds, env: Envelope) -> SoapMessage:
    body = await run_in_threadpool(iti38.respond, env.body, xds.settings, xds.store)
    return soap_message(body, action=iti38.RESPONSE_ACTION, relates_to=env.message_id)


async def _retrieve(xds: Xds, env: Envelope) -> SoapMessage:
    body, parts = await run_in_threadpool(iti39.respond, env.body, xds.settings, xds.store)
    return mtom_message(body, action=iti39.RESPONSE_ACTION, relates_to=env.message_id, attachments=parts)
