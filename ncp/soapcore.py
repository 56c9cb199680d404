"""SOAP 1.2 for every role that speaks it: hardened parsing, WS-Addressing, WS-Security headers, Faults,
registry responses, MTOM/XOP (whole or streamed), the endpoint wrapper and the client call.

IHE ITI TF-2x Appendix V: SOAP 1.2 (W3C SOAP 1.2 Part 1), WS-Addressing 1.0 headers on every message,
MTOM/XOP (W3C XOP 1.0). Messages are bounded before they are read: the whole message by
:func:`read_bounded`, each MIME part by :func:`parse_message`. XDS documents (reports, KOS manifests) are
small and travel whole (:func:`mtom_message`); the DICOM instances of XDS-I.b (RAD-69, RAD-75) stream:
:func:`mtom_stream` writes an answer part by part, :func:`read_mtom` reads one holding at most one part
in memory (:mod:`ncp.dicom.multipart`).
"""

from __future__ import annotations

import base64
import copy
import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

import httpx
from lxml import etree
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ncp.dicom.media import parse_media_type
from ncp.dicom.multipart import (
    DecodedPart,
    MultipartDecoder,
    Part,
    encode_multipart,
    iter_parts,
    new_boundary,
)
from ncp.errors import InvalidRequest, NcpError, PayloadTooLarge, UpstreamError, UpstreamTimeout

__all__ = [
    "FAILURE",
    "NS",
    "PARTIAL",
    "RS",
    "SUCCESS",
    "Envelope",
    "Handler",
    "MtomAnswer",
    "Served",
    "SoapFault",
    "SoapMessage",
    "XdsError",
    "append_errors",
    "binary_content",
    "bounded_endpoint",
    "envelope_bytes",
    "fault_message",
    "fault_reason",
    "fault_response",
    "mtom_message",
    "mtom_stream",
    "parse_message",
    "parse_xml",
    "post_soap",
    "q",
    "read_bounded",
    "read_mtom",
    "registry_errors",
    "registry_response",
    "serve_soap",
    "soap_message",
    "soap_response",
]

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://www.w3.org/2005/08/addressing",
    "xop": "http://www.w3.org/2004/08/xop/include",
    "xml": "http://www.w3.org/XML/1998/namespace",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
}
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
PARTIAL = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
_ERROR_SEVERITY = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
_SOAP_XML = 'application/soap+xml; charset="utf-8"'
_XOP_ROOT = 'application/xop+xml; charset=UTF-8; type="application/soap+xml"'
_ENVELOPE_NAMESPACES = {"s": NS["s"], "wsa": NS["wsa"]}
_FAULT_NAMESPACES = {**_ENVELOPE_NAMESPACES, "wsse": NS["wsse"]}  # WSS 1.1 fault subcodes are wsse: QNames
_log = logging.getLogger(__name__)
_UNDERSTOOD_HEADERS = {
    f"{{{NS['wsa']}}}{n}" for n in ("Action", "MessageID", "To", "ReplyTo", "RelatesTo", "From")
}


def q(prefix: str, local: str) -> str:
    """Clark notation ``{namespace}local`` for one of ``NS``'s prefixes."""
    return f"{{{NS[prefix]}}}{local}"


class SoapFault(Exception):
    """A SOAP 1.2 Fault (Part 1 5.4): ``code`` Sender or Receiver, an optional subcode QName."""

    def __init__(self, reason: str, *, code: str = "Sender", subcode: str | None = None, status: int = 400):
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.subcode = subcode
        self.status = status


# -- hardened parsing ------------------------------------------------------------------------------
def _parser() -> etree.XMLParser:
    # No entity substitution, no DTD loading, no network, libxml2's own size limits (huge_tree off).
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_pis=True
    )


def parse_xml(data: bytes) -> etree._Element:
    """Parse one XML document, refusing any DOCTYPE: SOAP 1.2 Part 1 5 ("MUST NOT contain a Document
    Type Declaration"), which also rules out external entities (XXE) and entity expansion bombs."""
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:  # before libxml2 sees a single declaration
        raise SoapFault("a SOAP message must not contain a document type declaration")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise SoapFault(f"malformed XML: {exc.msg}") from None
    if root.getroottree().docinfo.internalDTD is not None:
        raise SoapFault("a SOAP message must not contain a document type declaration")
    return root


# -- messages --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Envelope:
    """A received request: its body's single child, the WS-Addressing headers, the MIME parts and the
    ``wsse:Security`` header (for a receiver that processes it, see :func:`parse_message`)."""

    body: etree._Element
    action: str
    message_id: str | None
    attachments: dict[str, bytes] = field(default_factory=dict)
    security: etree._Element | None = None


@dataclass(frozen=True)
class SoapMessage:
    """A message to send: HTTP status, Content-Type and body."""

    status: int
    content_type: str
    body: bytes


def parse_message(content_type: str, data: bytes, *, max_part_bytes: int, security: bool = False) -> Envelope:
    """A SOAP 1.2 request, plain (``application/soap+xml``) or MTOM (``multipart/related``).

    ``security``: the caller processes ``wsse:Security`` (XUA, ITI TF-2b 3.40), so a mustUnderstand one is
    understood; otherwise it is a MustUnderstand fault as any other header block we do not process."""
    start = _mtom_start(content_type)
    if start is None:
        return _envelope(parse_xml(data), {}, security)
    root_part, attachments = _split_related(data, content_type, start, max_part_bytes)
    return _envelope(parse_xml(root_part), attachments, security)


def _mtom_start(content_type: str) -> str | None:
    """None for a plain SOAP 1.2 message; for MTOM (XOP 1.0, ITI TF-2x V.3.2) the root part's Content-ID
    from ``start``, "" when unnamed. Any other media type, or one that cannot be read, is a 415 Fault."""
    try:
        media, params = parse_media_type(content_type)
    except InvalidRequest:
        media, params = content_type[:80], {}
    if media == "application/soap+xml":
        return None
    if media != "multipart/related" or params.get("type", "").lower() != "application/xop+xml":
        raise SoapFault(f"unsupported media type {media!r}", status=415)
    return _content_id(params.get("start", ""))


def _content_id(value: str) -> str:
    return value.strip().strip("<>")  # RFC 2392: a Content-ID's angle brackets are not part of it


def _split_related(
    data: bytes, content_type: str, start: str, max_part_bytes: int
) -> tuple[bytes, dict[str, bytes]]:
    """The root part and the attachments by Content-ID of a multipart/related body (RFC 2387)."""
    try:
        decoder = MultipartDecoder(content_type, max_part_bytes=max_part_bytes)
        parts = decoder.feed(data)
        decoder.close()
    except PayloadTooLarge:
        raise SoapFault(f"a MIME part is larger than {max_part_bytes} bytes", status=413) from None
    except InvalidRequest as exc:
        raise SoapFault(f"malformed multipart/related body: {exc.message}") from None
    ids = [part.headers.get("content-id") for part in parts]
    if any(cid is not None and not cid.isascii() for cid in ids):
        raise SoapFault("a MIME part's Content-ID is not ASCII (RFC 2392)")
    named = [(_content_id(cid) if cid else None, part.body) for cid, part in zip(ids, parts, strict=True)]
    # RFC 2387 3.2: the root is the part ``start`` names; without one, the first unnamed part, else the first
    root_index = next((i for i, (cid, _) in enumerate(named) if cid == (start or None)), -1 if start else 0)
    if not named or root_index < 0:
        raise SoapFault("the start part of the multipart/related body is missing")
    root = named.pop(root_index)[1]
    return root, {cid: body for cid, body in named if cid is not None}


def _envelope(root: etree._Element, attachments: dict[str, bytes], security: bool) -> Envelope:
    if root.tag != q("s", "Envelope"):
        # SOAP 1.2 Part 1 5.4.7: another envelope namespace (SOAP 1.1) is a VersionMismatch
        code = "VersionMismatch" if etree.QName(root).localname == "Envelope" else "Sender"
        raise SoapFault("not a SOAP 1.2 Envelope", code=code)
    header = root.find(q("s", "Header"))
    body = root.find(q("s", "Body"))
    children = [c for c in body if isinstance(c.tag, str)] if body is not None else []
    if len(children) != 1:
        raise SoapFault("the SOAP Body must hold exactly one element")
    headers = [h for h in (header if header is not None else []) if isinstance(h.tag, str)]
    understood = _UNDERSTOOD_HEADERS | ({q("wsse", "Security")} if security else set())
    for h in headers:
        # SOAP 1.2 Part 1 5.2.3: a mustUnderstand header block we do not process is a fault
        if h.get(q("s", "mustUnderstand")) in ("true", "1") and h.tag not in understood:
            raise SoapFault(f"header {h.tag} not understood", code="MustUnderstand")
    wsse = [h for h in headers if h.tag == q("wsse", "Security")] if security else []
    if len(wsse) > 1:  # WSS 1.1 SOAP Message Security 6.1: one per role; we are the only one
        raise SoapFault("more than one wsse:Security header", subcode="wsse:InvalidSecurity")
    found = {h.tag: (h.text or "").strip() for h in headers}
    action = found.get(q("wsa", "Action"))
    if not action:
        raise SoapFault("WS-Addressing Action header missing", subcode="wsa:MessageAddressingHeaderRequired")
    _resolve_includes(children[0], attachments)
    message_id = found.get(q("wsa", "MessageID"))
    return Envelope(children[0], action, message_id, attachments, wsse[0] if wsse else None)


def _resolve_includes(body: etree._Element, attachments: dict[str, bytes]) -> None:
    """Every xop:Include must name an attachment (XOP 1.0); checked before any handler runs."""
    for include in body.iter(q("xop", "Include")):
        href = include.get("href", "")
        if not href.startswith("cid:") or unquote(href[4:]) not in attachments:
            raise SoapFault(f"xop:Include {href!r} names no MIME part")


def binary_content(element: etree._Element, attachments: dict[str, bytes]) -> bytes:
    """An xs:base64Binary element's bytes: its xop:Include's part, or its inline base64 text."""
    include = element.find(q("xop", "Include"))
    if include is not None:
        return attachments[unquote(include.get("href", "")[4:])]
    try:
        return base64.b64decode("".join((element.text or "").split()), validate=True)
    except ValueError:
        raise SoapFault("a document is neither an xop:Include nor valid base64") from None


# -- writing ---------------------------------------------------------------------------------------
def envelope_bytes(
    body: etree._Element,
    *,
    action: str,
    relates_to: str | None = None,
    to: str | None = None,
    security: etree._Element | None = None,
) -> bytes:
    """An envelope with WS-Addressing Action (mustUnderstand), MessageID, and RelatesTo (a response)
    or To and an anonymous ReplyTo (a request), as ITI TF-2x Appendix V asks; ``security`` is a
    ``wsse:Security`` header block (an XUA assertion, ITI TF-2b 3.40.4.1)."""
    env = etree.Element(q("s", "Envelope"), nsmap=_ENVELOPE_NAMESPACES)
    header = etree.SubElement(env, q("s", "Header"))
    action_el = etree.SubElement(header, q("wsa", "Action"))
    action_el.set(q("s", "mustUnderstand"), "true")
    action_el.text = action
    etree.SubElement(header, q("wsa", "MessageID")).text = f"urn:uuid:{uuid.uuid4()}"
    if relates_to:
        etree.SubElement(header, q("wsa", "RelatesTo")).text = relates_to
    if to:
        reply_to = etree.SubElement(header, q("wsa", "ReplyTo"))
        etree.SubElement(reply_to, q("wsa", "Address")).text = f"{NS['wsa']}/anonymous"
        to_el = etree.SubElement(header, q("wsa", "To"))
        to_el.set(q("s", "mustUnderstand"), "true")
        to_el.text = to
    if security is not None:
        header.append(copy.deepcopy(security))  # the caller's block may go into several messages
    etree.SubElement(env, q("s", "Body")).append(body)
    result: bytes = etree.tostring(env, xml_declaration=True, encoding="UTF-8")
    return result


def fault_message(fault: SoapFault, *, relates_to: str | None = None) -> SoapMessage:
    """SOAP 1.2 Part 1 5.4 Fault; HTTP status 400 for what the client caused (docs/decisions.md, where
    SOAP 1.2 Part 2 7.5 gives 500 for VersionMismatch and MustUnderstand), 500 only for a defect of ours."""
    el = etree.Element(q("s", "Fault"), nsmap=_FAULT_NAMESPACES)
    code = etree.SubElement(el, q("s", "Code"))
    etree.SubElement(code, q("s", "Value")).text = f"s:{fault.code}"
    if fault.subcode:
        etree.SubElement(etree.SubElement(code, q("s", "Subcode")), q("s", "Value")).text = fault.subcode
    text = etree.SubElement(etree.SubElement(el, q("s", "Reason")), q("s", "Text"))
    text.set(q("xml", "lang"), "en")
    text.text = fault.reason
    body = envelope_bytes(el, action=f"{NS['wsa']}/fault", relates_to=relates_to)
    return SoapMessage(fault.status, _SOAP_XML, body)


def soap_message(
    body: etree._Element,
    *,
    action: str,
    relates_to: str | None = None,
    to: str | None = None,
    security: etree._Element | None = None,
) -> SoapMessage:
    """A plain (inline) SOAP 1.2 message."""
    data = envelope_bytes(body, action=action, relates_to=relates_to, to=to, security=security)
    return SoapMessage(200, _SOAP_XML, data)


def mtom_message(
    body: etree._Element,
    *,
    action: str,
    attachments: list[tuple[str, bytes]],
    relates_to: str | None = None,
    to: str | None = None,
) -> SoapMessage:
    """An MTOM/XOP message: the envelope as ``application/xop+xml`` root part, then one part per
    ``(content id, bytes)``; the body already holds the matching ``xop:Include`` elements."""
    boundary = f"MIMEBoundary_{uuid.uuid4().hex}"
    root_id = f"root.{uuid.uuid4().hex}@xcwado"
    envelope = envelope_bytes(body, action=action, relates_to=relates_to, to=to)
    pieces = [
        f"--{boundary}\r\nContent-Type: {_XOP_ROOT}\r\n"
        f"Content-Transfer-Encoding: binary\r\nContent-ID: <{root_id}>\r\n\r\n".encode(),
        envelope,
    ]
    for cid, data in attachments:
        # No Content-Transfer-Encoding: HTTP does not use it (RFC 7231 A.5), and zeep strips CR/LF from
        # both ends of a part declared "binary" (zeep.wsdl.attachments), which corrupts a PDF ending in LF.
        pieces += [
            f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-ID: <{cid}>\r\n\r\n".encode(),
            data,
        ]
    pieces.append(f"\r\n--{boundary}--\r\n".encode())
    content_type = (
        f'multipart/related; type="application/xop+xml"; boundary="{boundary}"; '
        f'start="<{root_id}>"; start-info="application/soap+xml"'
    )
    return SoapMessage(200, content_type, b"".join(pieces))


# -- serving and calling over HTTP ---------------------------------------------------------------------
Handler = Callable[[Envelope], Awaitable[SoapMessage | Response]]


@dataclass(frozen=True)
class Served:
    """What a request came to: its envelope (None when unreadable), the response, and the reason of
    the SoapFault it was refused with (None when answered, or for a 408 or a defect of ours)."""

    envelope: Envelope | None
    response: Response
    fault: str | None


async def serve_soap(
    request: Request,
    handlers: Mapping[str, Handler],
    *,
    max_message_bytes: int,
    max_part_bytes: int,
    security: bool = False,
) -> Served:
    """One SOAP request: POSTed, read within ``max_message_bytes``, parsed, and dispatched on its
    WS-Addressing Action (another is ``wsa:ActionNotSupported``, WS-Addressing 1.0 SOAP Binding 6.4).
    A handler answers a message, or a Response of its own (a streamed MTOM answer); every failure
    is a Fault, never a traceback: the client's 4xx, a defect of ours a Receiver fault (500)."""
    env = None
    try:
        if request.method != "POST":
            raise SoapFault(f"{request.method} is not allowed: SOAP 1.2 requests are POSTed", status=405)
        declared = request.headers.get("content-length", "")
        data = await read_bounded(request.stream(), max_message_bytes, declared)
        content_type = request.headers.get("content-type", "")
        env = parse_message(content_type, data, max_part_bytes=max_part_bytes, security=security)
        handler = handlers.get(env.action)
        if handler is None:
            raise SoapFault(f"action {env.action!r} is not served here", subcode="wsa:ActionNotSupported")
        answer = await handler(env)
        return Served(env, soap_response(answer) if isinstance(answer, SoapMessage) else answer, None)
    except SoapFault as fault:
        return Served(env, _fault(fault, env), fault.reason)
    except NcpError as exc:  # ncp.bodytimeout's 408: the body stopped arriving
        return Served(env, _fault(SoapFault(exc.message, status=exc.status), env), None)
    except Exception:  # a defect of ours: a Receiver fault, never a traceback to the client
        _log.exception("SOAP request to %s failed", request.url.path)
        return Served(env, _fault(SoapFault("internal error", code="Receiver", status=500), env), None)


def bounded_endpoint(
    handlers: Mapping[str, Handler], *, max_message_bytes: int, max_part_bytes: int, security: bool = False
) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint serving ``handlers`` within fixed bounds (:func:`serve_soap`; ``security``: the
    handlers process ``wsse:Security``, found as ``Envelope.security``)."""

    async def endpoint(request: Request) -> Response:
        served = await serve_soap(
            request,
            handlers,
            max_message_bytes=max_message_bytes,
            max_part_bytes=max_part_bytes,
            security=security,
        )
        return served.response

    return endpoint


def _fault(fault: SoapFault, env: Envelope | None) -> Response:
    return soap_response(fault_message(fault, relates_to=env.message_id if env else None))


async def read_bounded(chunks: AsyncIterable[bytes], limit: int, declared: str = "") -> bytes:
    """A whole (small) SOAP message, refused with 413 as soon as it exceeds ``limit``."""
    if declared.isdigit() and int(declared) > limit:
        raise SoapFault(f"message larger than {limit} bytes", status=413)
    data, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise SoapFault(f"message larger than {limit} bytes", status=413)
        data.append(chunk)
    return b"".join(data)


def soap_response(message: SoapMessage, headers: Mapping[str, str] | None = None) -> Response:
    """``message`` as HTTP, with ``headers`` (such as a 408's) besides its Content-Type."""
    out = {**(headers or {}), "content-type": message.content_type}
    return Response(message.body, status_code=message.status, headers=out)


def fault_response(request: Request, exc: Exception) -> Response:
    """A Starlette exception handler: its own 404 (no route) and 405 (method), and an NcpError (such
    as ncp.bodytimeout's 408, a body that stopped arriving), as SOAP Faults like every other refusal."""
    if isinstance(exc, NcpError):
        return soap_response(fault_message(SoapFault(exc.message, status=exc.status)), exc.headers)
    assert isinstance(exc, HTTPException)
    return soap_response(fault_message(SoapFault(str(exc.detail), status=exc.status_code)))


async def post_soap(
    client: httpx.AsyncClient,
    url: str,
    body: etree._Element,
    action: str,
    *,
    headers: Mapping[str, str],
    max_bytes: int,
    security: etree._Element | None = None,
) -> Envelope:
    """POST one SOAP request (``security``: its ``wsse:Security`` header block) and read the answer, plain
    or MTOM, within ``max_bytes``. Every failure is an UpstreamError (UpstreamTimeout when too slow)
    saying what the peer did, for the caller to name the peer: unreachable, too large, unreadable, or a
    SOAP Fault."""
    message = soap_message(body, action=action, to=url, security=security)
    out = {**headers, "content-type": message.content_type}
    try:
        async with client.stream("POST", url, content=message.body, headers=out) as response:
            data = await _answer_bytes(response, max_bytes)
            content_type = response.headers.get("content-type", "")
    except httpx.TimeoutException:
        raise UpstreamTimeout("did not answer in time") from None
    except httpx.HTTPError as exc:
        raise UpstreamError(f"unreachable ({type(exc).__name__})") from None
    try:
        env = parse_message(content_type, data, max_part_bytes=max_bytes)
    except SoapFault as fault:
        raise UpstreamError(f"answered no readable SOAP message ({fault})") from None
    reason = fault_reason(env.body)
    if reason is not None:
        raise UpstreamError(f"answered a SOAP Fault: {reason}")
    return env


def fault_reason(body: etree._Element) -> str | None:
    """The reason text of a SOAP Fault body, None when the body is an answer."""
    if body.tag != q("s", "Fault"):
        return None
    return body.findtext(f"{q('s', 'Reason')}/{q('s', 'Text')}", "")


async def _answer_bytes(response: httpx.Response, limit: int) -> bytes:
    try:
        return await read_bounded(response.aiter_bytes(), limit)
    except SoapFault:
        raise UpstreamError(f"answered more than {limit} bytes") from None


# -- registry responses (ITI TF-3 4.2.4) -------------------------------------------------------------
class XdsError(Exception):
    """A refusal reported as a RegistryError (ITI TF-3 Table 4.2.4.1-2), not a SOAP Fault."""

    def __init__(self, code: str, context: str, location: str | None = None) -> None:
        super().__init__(f"{code}: {context}")
        self.code = code
        self.context = context
        self.location = location  # when not the responder's: RAD-69 names the document (RAD69-016)


def registry_response(errors: list[XdsError], location: str, *, partial: bool = False) -> etree._Element:
    """An rs:RegistryResponse: Success, Failure, or PartialSuccess; an error's ``location`` is its own or
    else the responding homeCommunityId (XCA-I RAD75-005, kept so that a gateway can pass it on)."""
    status = SUCCESS if not errors else PARTIAL if partial else FAILURE
    el = etree.Element(f"{{{RS}}}RegistryResponse", status=status, nsmap={"rs": RS})
    append_errors(el, errors, location)
    return el


def append_errors(response: etree._Element, errors: list[XdsError], location: str) -> None:
    """An rs:RegistryErrorList of ``errors`` in ``response``, if there are any."""
    if not errors:
        return
    error_list = etree.SubElement(response, f"{{{RS}}}RegistryErrorList")
    for error in errors:
        etree.SubElement(
            error_list, f"{{{RS}}}RegistryError", errorCode=error.code, codeContext=error.context,
            severity=_ERROR_SEVERITY, location=error.location or location,
        )  # fmt: skip


def registry_errors(body: etree._Element) -> list[tuple[str, str, str]]:
    """(errorCode, codeContext, location) of each rs:RegistryError anywhere in an answer."""
    return [
        (e.get("errorCode", ""), e.get("codeContext", ""), e.get("location", ""))
        for e in body.iter(f"{{{RS}}}RegistryError")
    ]


# -- streamed MTOM (XOP 1.0, RFC 2387) ---------------------------------------------------------------
def mtom_stream(envelope: bytes, parts: AsyncIterable[Part]) -> tuple[str, AsyncIterator[bytes]]:
    """The Content-Type and the chunks of an MTOM message: the envelope as root part, then ``parts``
    (each with its ``Content-ID`` header), encoded as their sources yield."""
    boundary, root_id = f"MIMEBoundary_{new_boundary()}", f"root.{uuid.uuid4().hex}@xcwado"

    async def all_parts() -> AsyncIterator[Part]:
        yield Part(_XOP_ROOT, _once(envelope), headers={"Content-ID": f"<{root_id}>"})
        async for part in parts:
            yield part

    content_type = (
        f'multipart/related; type="application/xop+xml"; boundary="{boundary}"; '
        f'start="<{root_id}>"; start-info="application/soap+xml"'
    )
    return content_type, encode_multipart(all_parts(), boundary)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


@dataclass(frozen=True)
class MtomAnswer:
    """An answer being read: its body's element (a Fault included) and its remaining MIME parts."""

    body: etree._Element
    parts: AsyncIterator[DecodedPart]


async def read_mtom(
    content_type: str, chunks: AsyncIterator[bytes], *, max_root_bytes: int, max_part_bytes: int
) -> MtomAnswer:
    """Read a SOAP answer up to its body; the parts after the root are left to be read one at a time.

    The parts iterator raises (an NcpError) on a truncated message or a part over ``max_part_bytes``,
    so a short answer can never pass for a complete one (ncp.dicom.multipart).
    """
    start = _mtom_start(content_type)
    if start is None:
        return MtomAnswer(_answer_body(parse_xml(await read_bounded(chunks, max_root_bytes))), _no_parts())
    parts = iter_parts(chunks, content_type, max_part_bytes=max(max_part_bytes, max_root_bytes))
    try:
        root = await anext(parts)
    except (StopAsyncIteration, NcpError) as exc:
        raise SoapFault(f"unreadable MTOM answer: {exc}") from None
    if start and _content_id(root.headers.get("content-id", "")) != start:
        raise SoapFault("the first MIME part is not the start part")  # we write the root part first
    if len(root.body) > max_root_bytes:
        raise SoapFault(f"a SOAP envelope larger than {max_root_bytes} bytes", status=413)
    return MtomAnswer(_answer_body(parse_xml(root.body)), parts)


async def _no_parts() -> AsyncIterator[DecodedPart]:
    return
    yield  # an async generator that yields nothing


def _answer_body(root: etree._Element) -> etree._Element:
    body = root.find(q("s", "Body")) if root.tag == q("s", "Envelope") else None
    children = [c for c in body if isinstance(c.tag, str)] if body is not None else []
    if len(children) != 1:
        raise SoapFault("an answer that is not a SOAP 1.2 envelope with one body element")
    return children[0]
