"""A request body that stops arriving is answered 408 (RFC 9110 15.5.9) instead of being waited for.

uvicorn bounds the idle time between requests (keep-alive), not the time a request body takes: a client
that announces ``Content-Length: 1000`` and sends 10 bytes holds a handler, and its connection, for as
long as it likes. :class:`BodyTimeout` bounds each wait for the next piece of a request body. When the
bound passes, the handler's read raises :class:`~ncp.errors.RequestTimeout`, an NcpError, so each app
answers in its own shape (OperationOutcome on FHIR routes, ``Warning`` on DICOMweb ones), and the
answer closes the connection: the rest of the body, should it come, must not be read as a request.

The bound is on silence, not on the whole body: a large STOW-RS upload over a slow link keeps going as
long as bytes keep arriving. A client that disconnects mid-body gets no answer and leaves no traceback
(Starlette's ``ClientDisconnect`` would otherwise reach uvicorn as an unhandled error).

Wiring: ``Middleware(BodyTimeout)`` in a Starlette app's middleware list, or ``BodyTimeout(app)``.
"""

from __future__ import annotations

import anyio
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ncp.errors import RequestTimeout

__all__ = ["BODY_IDLE_TIMEOUT_S", "BodyTimeout"]

BODY_IDLE_TIMEOUT_S = 5.0


class BodyTimeout:
    def __init__(self, app: ASGIApp, idle_s: float = BODY_IDLE_TIMEOUT_S) -> None:
        self.app = app
        self.idle_s = idle_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # a request without a body (every image GET) has nothing to wait for: receive and send go as they are
        exchange = _Exchange(receive, send, self.idle_s) if _has_body(scope) else None
        try:
            if exchange is None:
                await self.app(scope, receive, send)
            else:
                await self.app(scope, exchange.receive, exchange.send)
        except ClientDisconnect:
            return  # nobody is left to answer
        except RequestTimeout as exc:  # an app without an NcpError handler: answer plainly
            if exchange is not None and not exchange.started:
                await exchange.send_plain_408(exc.message)


def _has_body(scope: Scope) -> bool:
    """Whether the request announces a body (RFC 9112 6.3: without Content-Length or Transfer-Encoding a
    request has none), as image GETs do not."""
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


class _Exchange:
    """One request's receive/send, bounding the silence while its body is incomplete."""

    def __init__(self, receive: Receive, send: Send, idle_s: float) -> None:
        self._receive, self._send, self._idle_s = receive, send, idle_s
        self.body_complete = False
        self.started = False
        self.timed_out = False

    async def receive(self) -> Message:
        # After the body (or once answering), receive() only waits for a disconnect: no bound then.
        if self.body_complete or self.started:
            return await self._receive()
        with anyio.move_on_after(self._idle_s):
            message = await self._receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                self.body_complete = True
            return message
        self.timed_out = True
        raise RequestTimeout(f"the request body stopped arriving: nothing for {self._idle_s:g} s")

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            if self.timed_out:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
        await self._send(message)

    async def send_plain_408(self, text: str) -> None:
        body = text.encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await self.send({"type": "http.response.start", "status": 408, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})
