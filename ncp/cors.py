"""CORS (WHATWG Fetch, "CORS protocol") for the consumer-facing gateway listener (RAD-160 and the portal's
WIA facade), never the border.

A browser viewer served from another origin (``https://viewer.example``) reads RAD-160 answers only if
the gateway names its origin. Only the origins the topology lists (``cors_origins``) are named; a
preflight from any other origin is refused with 403 and no ``Access-Control-Allow-Origin``. Credentials
stay in the ``Authorization`` header: no cookies, so no ``Access-Control-Allow-Credentials``.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ncp.asgi import raw_header
from ncp.errors import Forbidden, dicomweb_error_response, fhir_error_response

__all__ = ["CorsMiddleware"]

ALLOW_METHODS = "GET, HEAD, POST"
ALLOW_HEADERS = "Authorization, Accept, Content-Type, Range, X-Request-Id"
# What a viewer's script may read beyond the CORS-safelisted response headers (PS3.18 8.6.2 Warning,
# 8.7.3 Content-Location, our correlation id).
EXPOSE_HEADERS = "Content-Location, Warning, X-Request-Id"
MAX_AGE_S = 600
_PREFLIGHT = (
    ("access-control-allow-methods", ALLOW_METHODS),
    ("access-control-allow-headers", ALLOW_HEADERS),
    ("access-control-max-age", str(MAX_AGE_S)),
)


class CorsMiddleware:
    """Answers preflights itself (before routing and audit) and names a listed origin on every answer."""

    def __init__(self, app: ASGIApp, origins: tuple[str, ...], agent: str) -> None:
        self.app, self.origins, self.agent = app, frozenset(origins), agent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = raw_header(scope, b"origin") if scope["type"] == "http" else ""
        if not origin:  # not a browser's cross-origin call: one look at the headers, then on
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and "access-control-request-method" in Headers(scope=scope):
            await self._preflight(origin, scope, receive, send)
            return
        if origin not in self.origins:
            await self.app(scope, receive, send)
            return

        async def named(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                out["access-control-allow-origin"] = origin
                out["access-control-expose-headers"] = EXPOSE_HEADERS
                out.append("vary", "Origin")
            await send(message)

        await self.app(scope, receive, named)

    async def _preflight(self, origin: str, scope: Scope, receive: Receive, send: Send) -> None:
        if origin in self.origins:
            answer = Response(
                status_code=204, headers={**dict(_PREFLIGHT), "access-control-allow-origin": origin}
            )
        else:
            refused = Forbidden(f"origin {origin[:100]!r} is not allowed to call this gateway (CORS)")
            fhir = scope["path"].startswith(("/fhir", "/idp"))  # the shapes of the app's error handler
            answer = fhir_error_response(refused) if fhir else dicomweb_error_response(refused, self.agent)
        answer.headers["vary"] = "Origin"
        await answer(scope, receive, send)
