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

from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route

from ncp.bodytimeout import BodyTimeout
from ncp.errors import NcpError
from ncp.registry.xca import iti38, iti39
from ncp.registry.xca.rad75 import closing_lifespan
from ncp.registry.xca.settings import QUERY_PATH, RETRIEVE_PATH
from ncp.registry.xds.app import Xds, create_xds_app, secured_endpoint
from ncp.registry.xds.settings import XdsSettings
from ncp.soapcore import Envelope, SoapMessage, fault_response, mtom_message, soap_message

__all__ = ["create_responding_app"]

# Every method reaches the SOAP endpoints: another than POST is their Fault (405), not the mounted role's 404
_ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_AUDITED = {iti38.ACTION: ("ITI-38", "E"), iti39.ACTION: ("ITI-39", "R")}


def create_responding_app(xds: XdsSettings, extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The region's listener: ITI-38/39, ``extra_routes`` (their handlers find the region's settings and
    store as ``request.app.state.xds``, an ``ncp.registry.xds.app.Xds``), and the XDS.b role.

    ITI-38/39 are served as the role's own transactions (``secured_endpoint``): with XUA trust anchors
    (``XdsSettings.xua_trust``) every message needs a valid assertion in ``wsse:Security`` (ITI TF-2b 3.40,
    the Responding Gateway as X-Service Provider), and each message read is audited with its user."""
    role = create_xds_app(xds)
    routes = [
        Route(QUERY_PATH, secured_endpoint({iti38.ACTION: _query}, _AUDITED), methods=_ANY_METHOD),
        Route(RETRIEVE_PATH, secured_endpoint({iti39.ACTION: _retrieve}, _AUDITED), methods=_ANY_METHOD),
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


async def _query(xds: Xds, env: Envelope) -> SoapMessage:
    body = await run_in_threadpool(iti38.respond, env.body, xds.settings, xds.store)
    return soap_message(body, action=iti38.RESPONSE_ACTION, relates_to=env.message_id)


async def _retrieve(xds: Xds, env: Envelope) -> SoapMessage:
    body, parts = await run_in_threadpool(iti39.respond, env.body, xds.settings, xds.store)
    return mtom_message(body, action=iti39.RESPONSE_ACTION, relates_to=env.message_id, attachments=parts)
