"""The nginx front's questions to the gateway (:mod:`ncp.gateway.front`): RAD-160 decisions over a unix
socket, and the audit of what nginx then streamed.

nginx asks with ``auth_request`` before each XC-WADO image request, passing the original request line
and headers. The answer is 204 with where the request goes and what to add to it (the
:data:`~ncp.gateway.front.FRONT_HEADERS`), made by the same functions as the gateway's own route
(:func:`~ncp.gateway.rad160.initiating_next_hop`, :func:`~ncp.gateway.rad160.responding_next_hop_now`), or
403: nginx then hands the request to the gateway's own listener, which answers refusals with their
reasons and audits them. It is a small HTTP/1.1 server on asyncio and httptools, not an ASGI app: it
is asked on every image request, and its cost is the front's.

A request nginx carried is audited when nginx logs it (``syslog`` over a unix datagram socket, one line
per request, after the answer's last byte): the record waits here, keyed by ``x-xcwado-audit``, until
its line brings the status answered and whether the answer was complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

import httptools

from ncp.errors import NcpError
from ncp.forwarded import public_base
from ncp.gateway.context import Clients, Hop, valid_request_id
from ncp.gateway.front import ERROR_TAG, FRONT_HEADERS, tls_name, upstream_name
from ncp.gateway.guard import Guard, exchange_fields, outcome_of
from ncp.gateway.rad160 import (
    NextHop,
    XcWadoPath,
    initiating_next_hop,
    parse_request,
    responding_next_hop,
    responding_next_hop_now,
)
from ncp.gateway.settings import GatewaySettings
from ncp.security.audit import AuditRecord, AuditStore, random_uuid
from ncp.security.tokens import Claims

__all__ = ["FrontAuthz"]

log = logging.getLogger(__name__)

_DENY = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n"
_PENDING_MAX = 10_000  # records whose log line has not come (a request handed back to the gateway's lane)
_PENDING_TTL_S = 6 * 3600.0
_CUT = "while reading upstream"  # nginx's error context for a next hop failing mid-answer
_CONNECTION = re.compile(r"\*(\d+) ")  # nginx's connection number in an error line


class _State:
    """What :class:`Hop` reads of a request's state (the national XUA assertion is signed from it)."""

    __slots__ = ("claims", "peer", "xua_header")

    def __init__(self, claims: Claims | None, peer: str | None) -> None:
        self.claims, self.peer = claims, peer
        self.xua_header: str | None = None


@dataclass
class _Question:
    """One question of nginx's, its credentials verified, before the route is chosen."""

    hop: Hop
    state: _State
    xc: XcWadoPath
    query: list[tuple[str, str]]
    text: dict[str, str]  # nginx's headers
    target: str  # "GET /wado/...", for the audit
    raw_query: str

    @property
    def named(self) -> str | None:
        return public_base(self.text)


class FrontAuthz:
    """One listener's answers to nginx, and the audit of what nginx carried for it."""

    def __init__(
        self,
        settings: GatewaySettings,
        clients: Clients,
        guard: Guard,
        listener: str,
        audit: AuditStore | None,
    ) -> None:
        self.settings, self.clients, self.guard, self.listener = settings, clients, guard, listener
        self.name = f"{settings.agent}-{listener}"
        self.audit = audit
        self._pending: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._servers: list[Any] = []
        self._upstreams: dict[str, str] = {}  # origin -> nginx upstream block
        self._cut: deque[str] = deque(maxlen=1024)  # nginx connections whose answer its upstream broke

    async def start(self, authz: Path, audit: Path) -> None:
        loop = asyncio.get_running_loop()
        for path in (authz, audit):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        server = await loop.create_unix_server(lambda: _Asked(self), str(authz))
        self._servers.append(server)
        sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sink.bind(str(audit))
        sink.setblocking(False)
        transport, _ = await loop.create_datagram_endpoint(lambda: _LogLines(self), sock=sink)
        self._servers.append(transport)
        os.chmod(authz, 0o600)
        os.chmod(audit, 0o600)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        self._servers.clear()

    def answer_now(self, headers: Mapping[bytes, bytes]) -> bytes | _Question:
        """The answer to one question: 204 and the route, or 403 (the gateway's own lane decides); or the
        question itself, parsed and its credentials verified, when the registries must first be asked
        whether the study is the patient's (:meth:`answer_later`)."""
        try:
            question = self._question(headers)
            if question is None:
                return _DENY  # not for this lane: the gateway's listener answers, with the reason if refused
            nxt = self._next_hop_now(question)
            return question if nxt is None else self._approved(question, nxt)
        except Exception as exc:
            return _denied(exc)

    async def answer_later(self, q: _Question) -> bytes:
        """The answer to a question :meth:`answer_now` left open, once the registries have said."""
        try:
            return self._approved(q, await responding_next_hop(q.hop, q.state.claims, q.xc, q.query, q.named))
        except Exception as exc:
            return _denied(exc)

    async def answer(self, headers: Mapping[bytes, bytes]) -> bytes:
        """:meth:`answer_now`, waiting for the registries when it must."""
        now = self.answer_now(headers)
        return now if isinstance(now, bytes) else await self.answer_later(now)

    def _question(self, headers: Mapping[bytes, bytes]) -> _Question | None:
        """What nginx asks, its credentials verified; None when the request is not for this lane."""
        method = headers.get(b"x-xcwado-method", b"").decode("latin-1")
        uri = headers.get(b"x-xcwado-uri", b"").decode("latin-1")
        path, _, query = uri.partition("?")
        prefix = "/wado/" if self.listener == "gateway" else "/wado-rs/"
        if method not in ("GET", "HEAD") or not path.startswith(prefix):
            return None
        text = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()}  # what nginx sends
        rid = text.get("x-request-id", "")
        rid = rid if valid_request_id(rid) else random_uuid()
        state = _State(None, None)
        hop = Hop(self.settings, self.clients, self.guard, self.name, rid, state)
        items = parse_qsl(query, keep_blank_values=True)
        decoded = unquote(path)
        xc = parse_request(hop, decoded[len(prefix) :], text.get("accept", ""))
        if self.listener == "gateway":
            state.claims = self.guard.verify_consumer(text.get("authorization"))
        else:
            found = self.guard.verify_peer(text.get("x-xcwado-client-cert"), text.get("x-ncp-assertion"))
            if found is not None:
                state.claims, state.peer = found
            if xc.tail == "metadata" or (xc.for_viewers and not self._names_itself(xc, items)):
                return None  # the answer's URLs are rewritten on the way: the gateway's own lane
        return _Question(hop, state, xc, items, text, f"{method} {decoded}", query)

    def _next_hop_now(self, q: _Question) -> NextHop | None:
        if self.listener == "gateway":
            return initiating_next_hop(q.hop, q.state.claims, q.xc, q.query)
        return responding_next_hop_now(q.hop, q.state.claims, q.xc, q.query, q.named)

    def _approved(self, q: _Question, nxt: NextHop) -> bytes:
        key = random_uuid()
        self._hold(key, q)
        origin = q.text.get("origin", "")
        route = {
            FRONT_HEADERS["xc_target"]: _target(nxt.url, self._upstreams),
            FRONT_HEADERS["xc_tls_name"]: tls_name(nxt.url, nxt.peer),
            FRONT_HEADERS["xc_rid"]: q.hop.request_id,
            FRONT_HEADERS["xc_assertion"]: nxt.headers.get("x-ncp-assertion", ""),
            FRONT_HEADERS["xc_forwarded"]: nxt.headers.get("forwarded", ""),
            FRONT_HEADERS["xc_prefix"]: nxt.headers.get("x-forwarded-prefix", ""),
            FRONT_HEADERS["xc_origin"]: origin if origin in self.settings.me.cors_origins else "",
            FRONT_HEADERS["xc_audit"]: key,
        }
        lines = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode("latin-1")) for k, v in route.items() if v)
        return b"HTTP/1.1 204 No Content\r\n" + lines + b"\r\n"

    def _names_itself(self, xc: XcWadoPath, query: list[tuple[str, str]]) -> bool:
        """Whether the PACS that will answer names the public base in its part headers itself (chosen by
        Retrieve Location UID: a ``retrieveURL`` may name another). Metadata is always rewritten: it also
        carries URLs stored in the instances."""
        by_url = any(key.lower() == "retrieveurl" for key, _ in query)
        return not by_url and self.settings.names_public_base(xc.retrieve_location_uid)

    def _hold(self, key: str, q: _Question) -> None:
        """The transaction's audit record, all but what nginx will tell of the answer."""
        if self.audit is None:
            return
        fields = exchange_fields(
            self.name,
            self.settings.me.home_community_id,
            q.hop.request_id,
            q.target,
            q.raw_query,
            q.state.peer or q.text.get("x-xcwado-client", "?"),
            q.state.claims,
        )
        now = time.monotonic()
        self._pending[key] = (now, fields)
        while self._pending and (
            len(self._pending) > _PENDING_MAX or next(iter(self._pending.values()))[0] < now - _PENDING_TTL_S
        ):
            self._pending.popitem(last=False)

    def logged(self, line: str) -> None:
        """One of nginx's lines for a request it carried: ``<syslog header> xcwado: key|status|completion|
        connection|warning`` once the answer is over, or an error line (:data:`ERROR_TAG`) before it."""
        tag, _, text = line.partition(": ")
        if tag.endswith(ERROR_TAG):
            if _CUT in text and (found := _CONNECTION.search(text)):  # nginx then closes the connection
                self._cut.append(found[1])
            return
        fields = text.rstrip("\n").split("|", 4)
        if len(fields) != 5:
            raise ValueError("expected key|status|completion|connection|warning")
        key, status, completion, connection, warning = fields
        held = self._pending.pop(key, None)
        if held is None or self.audit is None:
            return
        code = int(status) if status.isdigit() else 0
        complete = completion == "OK" and connection not in self._cut
        detail = None if complete else "answer aborted: the stream did not complete"
        if detail is None and code >= 400 and warning not in ("", "-"):
            detail = warning
        outcome = outcome_of(code, broken=not complete)
        self.audit.later(AuditRecord("RAD-160", outcome, status=code, detail=detail, **held[1]))


def _denied(error: Exception) -> bytes:
    """403 for nginx, which then hands the request to the gateway's own lane: it answers with the reason."""
    if not isinstance(error, NcpError):
        log.error("front authorisation failed; the request goes to the gateway's own lane", exc_info=error)
    return _DENY


def _target(url: str, upstreams: dict[str, str]) -> str:
    """``url`` with its origin replaced by the nginx upstream block standing for it (``upstreams`` remembers
    them by origin): the front has one for every border and PACS of the settings, and an origin without
    one fails in nginx, which then hands the request to the gateway's own lane."""
    scheme, _, host, path = url.split("/", 3)
    origin = f"{scheme}//{host}"
    name = upstreams.get(origin)
    if name is None:
        name = upstreams[origin] = upstream_name(url)
    return f"{scheme}//{name}/{path}"


class _Asked(asyncio.Protocol):
    """One nginx connection: requests one at a time (nginx does not pipeline), answered in order."""

    def __init__(self, authz: FrontAuthz) -> None:
        self._authz = authz
        self._parser = httptools.HttpRequestParser(self)
        self._headers: dict[bytes, bytes] = {}
        self._transport: asyncio.Transport | None = None
        self._last: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_message_complete(self) -> None:
        headers, self._headers = self._headers, {}
        answer = self._authz.answer_now(headers)
        if isinstance(answer, bytes) and (self._last is None or self._last.done()):
            self._send(answer)  # no task, unless the registries must be asked or an answer is still due
            return
        self._last = asyncio.ensure_future(self._reply(answer, self._last))

    async def _reply(self, answer: bytes | _Question, before: asyncio.Task[None] | None) -> None:
        if not isinstance(answer, bytes):
            answer = await self._authz.answer_later(answer)
        if before is not None:
            await before
        self._send(answer)

    def _send(self, answer: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(answer)


class _LogLines(asyncio.DatagramProtocol):
    def __init__(self, authz: FrontAuthz) -> None:
        self._authz = authz

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            self._authz.logged(data.decode("latin-1"))
        except Exception:  # a malformed line must not stop the audit of the next one
            log.exception("front audit line not understood: %r", data[:200])
