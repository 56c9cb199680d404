"""XCA-I image retrieval (RAD TF-3 4.75 Cross Gateway Retrieve Imaging Document Set): route factories
for the Initiating and the Responding Imaging Gateway, to mount in any Starlette app.

::

    consumer --RAD-69--> initiating_routes --RAD-75--> responding_routes --RAD-69--> imaging source
             (/xcai/rad69)   by HomeCommunityId      (/xcai/rad75)   by RepositoryUniqueId

Both are parametrised by plain mappings: the Initiating Gateway's homeCommunityId -> Responding
Gateway URL, the Responding Gateway's RepositoryUniqueId (a source's Retrieve Location UID) -> RAD-69
URL. Each groups the requested documents by where they go, asks every upstream at once and answers
one ``RetrieveDocumentSetResponse`` (RAD TF-3 4.75.4.2): the documents found, an error for each other,
PartialSuccess when there are both. Refusals of ours are RegistryErrors, ``location`` = this gateway's
homeCommunityId (RAD75-005); the Responding Gateway also sets its homeCommunityId in every
DocumentResponse and as the location of its sources' errors. What cannot be read as a request is a
SOAP Fault; never a 5xx from input.

The images stream through: the upstream answers are read up to their envelopes before the status
line, then their MIME parts are passed on one at a time (one instance in memory, never the study). A
part the envelope does not announce, a missing part or an upstream cut mid-stream aborts our answer,
so the consumer sees a truncated message, never a short set presented as complete.

XUA (ITI-40, docs/xua.md): the Initiating Gateway passes its consumer's ``wsse:Security`` on with every
RAD-75; a Responding Gateway mounted ``guarded`` in a region's listener requires it as the region does.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import aiohttp
from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from ncp.dicom.multipart import Part
from ncp.registry.xds.app import Xds, secured_endpoint
from ncp.soapcore import (
    FAILURE,
    PARTIAL,
    RS,
    SUCCESS,
    Envelope,
    MtomAnswer,
    SoapFault,
    XdsError,
    bounded_endpoint,
    envelope_bytes,
    fault_reason,
    mtom_stream,
    read_mtom,
    registry_response,
    soap_message,
)
from ncp.xdsi import (
    RAD69_ACTION,
    RAD75_ACTION,
    RAD75_RESPONSE_ACTION,
    RETRIEVE_RESPONSE_ACTION,
    DocumentRequest,
    DocumentResponse,
    ImagingRequest,
    add_document_response,
    read_document_responses,
    read_request,
    request_element,
    response_element,
)

__all__ = [
    "INITIATING_PATH",
    "RESPONDING_PATH",
    "Limits",
    "closing_lifespan",
    "gateway_app",
    "initiating_routes",
    "responding_routes",
]

INITIATING_PATH = "/xcai/rad69"
RESPONDING_PATH = "/xcai/rad75"
_AUDITED = {RAD75_ACTION: ("RAD-75", "R")}  # a guarded Responding Gateway's audit (DICOM/ATNA action R)
_CHUNK = 256 * 1024


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int = 1 << 20  # a request lists UIDs only
    max_envelope_bytes: int = 8 << 20  # an upstream answer's SOAP envelope
    max_part_bytes: int = 1 << 30  # one instance
    timeout_s: float = 60.0  # per upstream read


@dataclass(frozen=True)
class _Hop:
    """How a gateway forwards: actions in and out, where each document goes, how answers are rewritten."""

    home: str  # urn:oid:<homeCommunityId>: the location of this gateway's errors
    action_in: str
    action_out: str
    response_action: str
    route: Callable[[DocumentRequest], str]  # the upstream URL, or XdsError
    unavailable: str  # the error code of an upstream that does not answer usably
    rewrite: bool  # Responding Gateway: its homeCommunityId on every DocumentResponse and error
    limits: Limits
    client: _Client
    relay_security: bool = False  # Initiating Gateway: the consumer's wsse:Security goes on upstream


class _Client:
    """One pooled aiohttp session per mounted gateway, made on its first request (inside the app's event
    loop). aiohttp: its C parser costs about a third of httpx's CPU per hop (the XC-WADO data plane's own
    client, h1, speaks GET only); and a client per request cost ~10 ms of TLS context set-up."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, auto_decompress=False, skip_auto_headers=("User-Agent",)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _GatewayRoute(Route):
    """A RAD-75 gateway route; it owns its gateway's pooled session, which its host's
    :func:`closing_lifespan` closes."""

    def __init__(self, path: str, hop: _Hop, *, guarded: bool = False) -> None:
        super().__init__(path, _endpoint(hop, guarded=guarded), methods=["POST"])
        self.client = hop.client


@asynccontextmanager
async def closing_lifespan(app: Starlette) -> AsyncIterator[None]:
    """A hosting app's lifespan: the pooled sessions of its RAD-75 routes close on shutdown."""
    try:
        yield
    finally:
        for route in app.routes:
            if isinstance(route, _GatewayRoute):
                await route.client.close()


def gateway_app(routes: Sequence[BaseRoute]) -> Starlette:
    """An app of RAD-75 routes alone (tests, the bench's gateway processes)."""
    return Starlette(routes=list(routes), lifespan=closing_lifespan)


def responding_routes(
    home_community_id: str,
    repositories: Mapping[str, str],
    *,
    limits: Limits = Limits(),
    guarded: bool = False,
) -> list[Route]:
    """RAD-75 in at ``/xcai/rad75``; RAD-69 out to the source ``repositories`` maps each
    RepositoryUniqueId to (its ``POST`` URL). ``guarded``: mounted in a region's listener
    (``ncp.registry.xca.responding``), RAD-75 is one of the region's transactions: with XUA trust anchors
    a valid assertion is required and each message audited, as ITI-38/39 (docs/xua.md). The RAD-69 to
    the sources, inside the community, carries none."""

    def route(doc: DocumentRequest) -> str:
        if doc.home and doc.home.removeprefix("urn:oid:") != home_community_id:
            raise XdsError("XDSUnknownCommunity", f"homeCommunityId {doc.home} is not this community")
        if doc.repository not in repositories:
            raise XdsError("XDSUnknownRepositoryId", f"no imaging document source {doc.repository} here")
        return repositories[doc.repository]

    hop = _Hop(
        f"urn:oid:{home_community_id}", RAD75_ACTION, RAD69_ACTION, RAD75_RESPONSE_ACTION, route,
        "XDSRepositoryError", rewrite=True, limits=limits, client=_Client(limits.timeout_s),
    )  # fmt: skip
    return [_GatewayRoute(RESPONDING_PATH, hop, guarded=guarded)]


def initiating_routes(
    home_community_id: str, communities: Mapping[str, str], *, limits: Limits = Limits()
) -> list[Route]:
    """RAD-69 in at ``/xcai/rad69``; RAD-75 out to the Responding Gateway ``communities`` maps each
    homeCommunityId (bare OID) to. ``home_community_id`` is this gateway's own, the location of its
    errors. The consumer's ``wsse:Security`` (its XUA assertion, ITI TF-2b 3.40) goes on with every RAD-75:
    the Responding Gateways decide whether they require one."""

    def route(doc: DocumentRequest) -> str:
        if not doc.home:  # ITI TF-2b 3.39.4.1.3, which RAD-75 follows
            raise XdsError("XDSMissingHomeCommunityId", f"DocumentRequest {doc.sop} names no homeCommunityId")
        url = communities.get(doc.home.removeprefix("urn:oid:"))
        if url is None:
            raise XdsError("XDSUnknownCommunity", f"homeCommunityId {doc.home} is not known here")
        return url

    hop = _Hop(
        f"urn:oid:{home_community_id}", RAD69_ACTION, RAD75_ACTION, RETRIEVE_RESPONSE_ACTION, route,
        "XDSUnavailableCommunity", rewrite=False, limits=limits, client=_Client(limits.timeout_s),
        relay_security=True,
    )  # fmt: skip
    return [_GatewayRoute(INITIATING_PATH, hop)]


def _endpoint(hop: _Hop, *, guarded: bool = False) -> Callable[[Request], Awaitable[Response]]:
    async def forward(env: Envelope) -> Response:
        return await _forward(hop, read_request(env.body), env.message_id, env.security)

    async def forward_for(_: Xds, env: Envelope) -> Response:
        return await forward(env)

    bound = hop.limits.max_request_bytes
    if guarded:
        return secured_endpoint({hop.action_in: forward_for}, _AUDITED, max_message_bytes=bound)
    return bounded_endpoint(
        {hop.action_in: forward}, max_message_bytes=bound, max_part_bytes=bound, security=hop.relay_security
    )


@dataclass(frozen=True)
class _Upstream:
    """One upstream's answer, read up to its body: what it announced and its parts still to come."""

    errors: list[etree._Element]
    documents: list[DocumentResponse]
    parts: AsyncIterator[Part]


async def _forward(
    hop: _Hop, request: ImagingRequest, relates_to: str | None, security: etree._Element | None
) -> Response:
    groups: dict[str, list[DocumentRequest]] = {}
    errors: list[XdsError] = []
    for doc in request.documents:
        try:
            groups.setdefault(hop.route(doc), []).append(doc)
        except XdsError as error:
            errors.append(error)
    stack = AsyncExitStack()
    try:
        answers = await asyncio.gather(
            *(_ask(hop, hop.client.get(), stack, url, ImagingRequest(tuple(docs), request.transfer_syntaxes),
                   security if hop.relay_security else None)
              for url, docs in groups.items())
        )  # fmt: skip
        upstreams = []
        for docs, answer in zip(groups.values(), answers, strict=True):
            if isinstance(answer, XdsError):
                errors += [XdsError(hop.unavailable, f"{answer.context} (document {d.sop})") for d in docs]
            else:
                upstreams.append(answer)
        root = _response(hop, errors, upstreams)
    except BaseException:
        await stack.aclose()
        raise
    envelope = envelope_bytes(root, action=hop.response_action, relates_to=relates_to)
    content_type, chunks = mtom_stream(envelope, _relay(upstreams, stack))
    return StreamingResponse(chunks, headers={"content-type": content_type})


async def _ask(
    hop: _Hop,
    session: aiohttp.ClientSession,
    stack: AsyncExitStack,
    url: str,
    request: ImagingRequest,
    security: etree._Element | None,
) -> _Upstream | XdsError:
    """Send one upstream request and read its answer up to the body; a failure is an XdsError."""
    message = soap_message(request_element(request), action=hop.action_out, to=url, security=security)
    headers = {"content-type": message.content_type}
    try:
        response = await stack.enter_async_context(
            session.post(url, data=message.body, headers=headers, allow_redirects=False)
        )
        answer = await read_mtom(
            response.headers.get("content-type", ""), response.content.iter_chunked(_CHUNK),
            max_root_bytes=hop.limits.max_envelope_bytes, max_part_bytes=hop.limits.max_part_bytes,
        )  # fmt: skip
        return _upstream(answer)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return XdsError(hop.unavailable, f"{url} failed ({type(exc).__name__}: {exc})")
    except SoapFault as fault:
        return XdsError(hop.unavailable, f"{url} answered no usable RAD-69/75 answer: {fault.reason}")


def _upstream(answer: MtomAnswer) -> _Upstream:
    reason = fault_reason(answer.body)
    if reason is not None:
        raise SoapFault(f"a SOAP Fault: {reason}")
    documents = read_document_responses(answer.body)
    errors = list(
        answer.body.iterfind(f"{{{RS}}}RegistryResponse/{{{RS}}}RegistryErrorList/{{{RS}}}RegistryError")
    )
    return _Upstream(errors, documents, _checked(answer, {d.content_id for d in documents}))


async def _checked(answer: MtomAnswer, expected: set[str]) -> AsyncIterator[Part]:
    """The upstream's parts, each one announced by its envelope, all of them (else abort)."""
    seen: set[str] = set()
    async for part in answer.parts:
        cid = part.headers.get("content-id", "").strip().strip("<>")
        if cid not in expected or cid in seen:
            raise SoapFault(f"an upstream sent MIME part {cid!r} that its envelope does not announce")
        seen.add(cid)
        relayed = Part.from_bytes(part.body, part.content_type or "application/octet-stream")
        yield dataclasses.replace(relayed, headers={"Content-ID": f"<{cid}>"})
    if seen != expected:
        raise SoapFault(f"an upstream answer lacks {len(expected - seen)} announced part(s)")


async def _relay(upstreams: list[_Upstream], stack: AsyncExitStack) -> AsyncIterator[Part]:
    async with stack:  # the upstream responses close when the relay ends or aborts
        for upstream in upstreams:
            async for part in upstream.parts:
                yield part


def _response(hop: _Hop, errors: list[XdsError], upstreams: list[_Upstream]) -> etree._Element:
    """One RetrieveDocumentSetResponse: our errors and the upstreams', then every DocumentResponse."""
    documents = [d for u in upstreams for d in u.documents]
    upstream_errors = [copy.deepcopy(e) for u in upstreams for e in u.errors]
    registry = registry_response(errors, hop.home)
    if upstream_errors:
        error_list = registry.find(f"{{{RS}}}RegistryErrorList")
        if error_list is None:
            error_list = etree.SubElement(registry, f"{{{RS}}}RegistryErrorList")
        for error in upstream_errors:
            if hop.rewrite:  # RAD75-005: the Responding Gateway's homeCommunityId
                error.set("location", hop.home)
            error_list.append(error)
    failed = bool(errors or upstream_errors)
    registry.set("status", FAILURE if not documents else PARTIAL if failed else SUCCESS)
    root = response_element(registry)
    for doc in documents:
        home = hop.home if hop.rewrite else doc.home
        add_document_response(
            root, DocumentResponse(home, doc.repository, doc.unique_id, doc.mime_type, doc.content_id)
        )
    return root
