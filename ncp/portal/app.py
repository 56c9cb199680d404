"""The clinician's portal and the WIA facade at NCP-B, on the gateway listener (``/portal``, ``/wia``).

The portal is a consumer of its own NCP: it reaches the gateway over HTTP at its consumer-facing URL
(``PortalSettings.gateway``) and imports no role package. :func:`with_portal` puts both apps behind one
listener; ``ncp.app.build_role`` is the only place that does.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ncp.cors import CorsMiddleware
from ncp.errors import NcpError, UpstreamError, dicomweb_error_response, from_http_exception
from ncp.portal import wia
from ncp.portal.pages import BASE, Pages, template_environment
from ncp.portal.sessions import SessionStore
from ncp.portal.settings import PortalSettings
from ncp.portal.upstream import Gateway, scrub
from ncp.portal.viewing import image

__all__ = ["create_portal_app", "with_portal"]

PREFIXES = (BASE, wia.BASE)
_LOG = logging.getLogger(__name__)
_TITLES = {400: "Bad request", 401: "Not signed in", 403: "Refused", 404: "Not found", 502: "Not reachable"}
# no inline script or style, nothing from elsewhere, no framing by another site (CSP Level 3)
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "object-src 'none'; frame-ancestors 'self'; base-uri 'none'; form-action 'self'"
)


def create_portal_app(settings: PortalSettings) -> Starlette:
    store = SessionStore()
    pages = Pages(settings, store, template_environment())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0)) as client:
            app.state.gateway = Gateway(settings.gateway, client)
            yield

    get = ["GET"]
    routes = [
        Route(f"{BASE}/", pages.home, methods=get),
        Route(BASE, pages.home, methods=get),
        Route(f"{BASE}/signin", pages.sign_in, methods=["POST"]),
        Route(f"{BASE}/signout", pages.sign_out, methods=["POST"]),
        Route(f"{BASE}/patient", pages.patient_form, methods=get),
        Route(f"{BASE}/patient", pages.identify, methods=["POST"]),
        Route(f"{BASE}/documents", pages.documents, methods=get),
        Route(f"{BASE}/report/{{doc}}", pages.report, methods=get),
        Route(f"{BASE}/report/{{doc}}/content", pages.report_content, methods=get),
        Route(f"{BASE}/study/{{doc}}", pages.study, methods=get),
        Route(f"{BASE}/view/{{doc}}/{{series}}", pages.viewer, methods=get),
        Route(f"{BASE}/image/{{option}}/{{doc}}/{{series}}/{{sop}}", image, methods=get),
        Mount(f"{BASE}/static", StaticFiles(packages=[("ncp.portal", "static")]), name="static"),
        *wia.routes(),
    ]
    handler = _error_handler(pages)
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        # outermost: a viewer on another origin reads the WIA facade as it reads RAD-160 (ncp.cors)
        middleware=[
            Middleware(CorsMiddleware, origins=settings.cors_origins, agent=f"{settings.country}-wia"),
            Middleware(_SecurityHeaders),
        ],
        exception_handlers={
            NcpError: handler,
            HTTPException: handler,
            httpx.HTTPError: handler,
            Exception: handler,
        },
    )
    app.state.pages = pages
    return app


def _error_handler(pages: Pages) -> Callable[[Request, Exception], Awaitable[Response]]:
    """A refusal is a page that says what happened (or a DICOMweb status + Warning on /wia); never a trace."""

    async def handle(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            exc = from_http_exception(exc)
        elif isinstance(exc, httpx.HTTPError):
            exc = UpstreamError(f"this NCP's gateway did not answer ({type(exc).__name__})")
        elif not isinstance(exc, NcpError):
            _LOG.exception("portal: unexpected failure on %s", request.url.path)
            exc = NcpError("something went wrong on our side; the event is logged")
        if request.url.path.startswith(wia.BASE):
            return dicomweb_error_response(exc, "xcwado-wia")
        if request.url.path.startswith(f"{BASE}/image/"):  # the viewer shows the reason under the image
            return PlainTextResponse(scrub(exc.message), exc.status)
        title = _TITLES.get(exc.status, "Failed")
        return pages.page(
            request, "error.html", exc.status, status=exc.status, title=title, text=scrub(exc.message)
        )

    return handle


class _SecurityHeaders:
    """CSP, no sniffing, no referrer to other sites (same-origin keeps a form post's Origin), no caching."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def add(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                extra = {
                    b"content-security-policy": _CSP.encode(),
                    b"x-content-type-options": b"nosniff",
                    b"referrer-policy": b"same-origin",
                    b"cache-control": b"no-store",
                }
                headers += [(k, v) for k, v in extra.items() if k not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, add if scope["type"] == "http" else send)


def with_portal(gateway: Starlette, portal: Starlette) -> ASGIApp:
    """One listener: ``/portal`` and ``/wia`` go to the portal, everything else to the gateway, paths
    untouched; both apps' lifespans run."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespans((gateway, portal), receive, send)
            return
        path: str = scope.get("path", "")
        mine = any(path == p or path.startswith(p + "/") for p in PREFIXES)
        await (portal if mine else gateway)(scope, receive, send)

    return app


async def _lifespans(apps: tuple[Starlette, ...], receive: Receive, send: Send) -> None:
    await receive()  # lifespan.startup
    started = False
    try:
        async with contextlib.AsyncExitStack() as stack:
            for one in apps:
                await stack.enter_async_context(one.router.lifespan_context(one))
            await send({"type": "lifespan.startup.complete"})
            started = True
            await receive()  # lifespan.shutdown
    except BaseException as exc:
        failed = "lifespan.shutdown.failed" if started else "lifespan.startup.failed"
        await send({"type": failed, "message": str(exc)})
        raise
    await send({"type": "lifespan.shutdown.complete"})
