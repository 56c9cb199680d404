"""The PACS (IHE Imaging Document Source) as one Starlette app under ``/dicom-web``.

WADO-RS retrieve (RAD-107, :mod:`ncp.pacs.rad107`), metadata and bulk data
(:mod:`ncp.pacs.metadata`), rendered (:mod:`ncp.pacs.rendered`), QIDO-RS search (RAD-129,
:mod:`ncp.pacs.rad129`), STOW-RS (:mod:`ncp.pacs.stow`) and XDS-I.b RAD-69 over SOAP
(:mod:`ncp.pacs.rad69`, its own SOAP Faults) over one
:class:`~ncp.pacs.store.InstanceStore`; ``GET /health``.
Errors leave only through :func:`ncp.errors.dicomweb_error_response`: status + ``Warning``.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route

from ncp.bodytimeout import BodyTimeout
from ncp.errors import NcpError, dicomweb_error_response, warning_header
from ncp.pacs.context import PacsContext, header_safe
from ncp.pacs.metadata import metadata_routes
from ncp.pacs.rad69 import rad69_routes
from ncp.pacs.rad107 import retrieve_routes
from ncp.pacs.rad129 import search_routes
from ncp.pacs.rendered import rendered_routes
from ncp.pacs.settings import PacsSettings
from ncp.pacs.store import InstanceStore
from ncp.pacs.stow import stow_routes

__all__ = ["PacsSettings", "create_pacs_app"]


def _allowed(routes: Sequence[BaseRoute], request: Request) -> str:
    """RFC 9110 10.2.1: every method some route of this path takes, OPTIONS included."""
    methods = {"OPTIONS"}
    for route in routes:
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    return ", ".join(sorted(methods))


def create_pacs_app(settings: PacsSettings) -> Starlette:
    ctx = PacsContext(settings, InstanceStore(settings.storage_dir, max_inflated=settings.max_stow_bytes))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def on_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, NcpError)
        exc.message = header_safe(exc.message)
        return dicomweb_error_response(exc, settings.agent)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        """Starlette's own 404 (no route) and 405 (method), in the same DICOMweb shape."""
        assert isinstance(exc, HTTPException)
        headers = {**(exc.headers or {}), "Warning": warning_header(settings.agent, header_safe(exc.detail))}
        if exc.status_code == 405:  # Starlette names only the first matching route's methods
            headers["Allow"] = _allowed(routes, request)
            if request.method == "OPTIONS":
                return Response(status_code=204, headers={"Allow": headers["Allow"]})
        return JSONResponse({"status": exc.status_code, "message": exc.detail}, exc.status_code, headers)

    routes = [
        Route("/health", health, methods=["GET"]),
        *search_routes(ctx),
        *stow_routes(ctx),
        *rendered_routes(ctx),
        *metadata_routes(ctx),  # before retrieve_routes: first match wins
        *retrieve_routes(ctx),
        *rad69_routes(ctx),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(BodyTimeout)],
        exception_handlers={NcpError: on_error, HTTPException: on_http_error},
    )
