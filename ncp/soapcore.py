"""SOAP 1.2 for every role that speaks it: hardened parsing, WS-Addressing, Faults, registry
responses, and MTOM/XOP written and read as a stream, one MIME part at a time.

IHE ITI TF-2x Appendix V: SOAP 1.2 (W3C SOAP 1.2 Part 1), WS-Addressing 1.0 headers on every message,
MTOM/XOP (W3C XOP 1.0). The parsing, the envelope and Fault writers and ``registry_response`` are the
same as ncp.registry.xds.soap / ebrim's (role packages do not import each other; one copy is to go).
What is new here is the streaming MTOM of XDS-I.b (RAD-69, RAD-75), whose parts are DICOM instances:
:func:`mtom_stream` writes an answer part by part, :func:`read_mtom` reads one, holding at most one
part in memory (:mod:`ncp.dicom.multipart`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from urllib.parse import unquote

from lxml import etree

from ncp.dicom.multipart import DecodedPart, Part, encode_multipart, iter_parts, new_boundary
from ncp.errors import NcpError

__all__ = [
    "FAILURE",
    "NS",
    "PARTIAL",
    "RS",
    "SUCCESS",
    "Envelope",
    "MtomAnswer",
    "SoapFault",
    "SoapMessage",
    "XdsError",
    "envelope_bytes",
    "fault_message",
    "mtom_stream",
    "parse_message",
    "parse_xml",
    "q",
    "read_bounded",
    "read_mtom",
    "registry_response",
    "soap_message",
]

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://www.w3.org/2005/08/addressing",
    "xop": "http://www.w3.org/2004/08/xop/include",
    "xml": "http://www.w3.org/XML/1998/namespace",
}
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
PARTIAL = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
_ERROR_SEVERITY = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
_SOAP_XML = 'application/soap+xml; charset="utf-8"'
_XOP_ROOT = 'application/xop+xml; charset=UTF-8; type="application/soap+xml"'
_ENVELOPE_NAMESPACES = {"s": NS["s"], "wsa": NS["wsa"]}
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
    """A received request: its body's single child, the WS-Addressing headers and the MIME parts."""

    body: etree._Element
    action: str
    message_id: str | None
    attachments: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class SoapMessage:
    """A message to send: HTTP status, Content-Type and body."""

    status: int
    content_type: str
    body: bytes


def parse_message(content_type: str, data: bytes, *, max_part_bytes: int) -> Envelope:
    """A SOAP 1.2 request, plain (``application/soap+xml``) or MTOM (``multipart/related``)."""
    media, params = _media_type(content_type)
    if media == "application/soap+xml":
        return _envelope(parse_xml(data), {})
    if media != "multipart/related" or params.get("type", "").lower() != "application/xop+xml":
        raise SoapFault(f"unsupported media type {media!r}", status=415)
    root_part, attachments = _split_related(data, params, max_part_bytes)
    return _envelope(parse_xml(root_part), attachments)


def _media_type(value: str) -> tuple[str, dict[str, str]]:
    msg = Message()
    msg["content-type"] = value
    params = {k.lower(): v for k, v in msg.get_params(failobj=[])[1:]}
    return msg.get_content_type(), params


def _split_related(
    data: bytes, params: dict[str, str], max_part_bytes: int
) -> tuple[bytes, dict[str, bytes]]:
    """The root part and the attachments by Content-ID of a multipart/related body (RFC 2387)."""
    boundary = params.get("boundary")
    if not boundary or not isinstance(boundary, str) or not boundary.isascii():
        raise SoapFault("multipart/related without an ASCII boundary")
    delimiter = b"--" + boundary.encode("ascii")
    chunks = data.split(b"\r\n" + delimiter)
    if not chunks[0].startswith(delimiter) or len(chunks) < 2 or not chunks[-1].startswith(b"--"):
        raise SoapFault("malformed multipart/related body")
    parts: list[tuple[str | None, bytes]] = []
    for chunk in [chunks[0][len(delimiter) :], *chunks[1:-1]]:
        head, sep, body = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            raise SoapFault("a MIME part without headers")
        if len(body) > max_part_bytes:
            raise SoapFault(f"a MIME part is larger than {max_part_bytes} bytes", status=413)
        headers = BytesHeaderParser().parsebytes(head + b"\r\n\r\n")
        cid = headers.get("content-id")
        if cid is not None and not (isinstance(cid, str) and cid.isascii()):  # email gives a Header object
            raise SoapFault("a MIME part's Content-ID is not ASCII (RFC 2392)")
        parts.append((cid.strip().strip("<>") if cid else None, body))
    start = params.get("start", "").strip().strip("<>") or None
    root_index = next((i for i, (cid, _) in enumerate(parts) if cid == start), 0 if start is None else -1)
    if root_index < 0:
        raise SoapFault("the start part of the multipart/related body is missing")
    root = parts.pop(root_index)[1]
    return root, {cid: body for cid, body in parts if cid is not None}


def _envelope(root: etree._Element, attachments: dict[str, bytes]) -> Envelope:
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
    for h in headers:
        # SOAP 1.2 Part 1 5.2.3: a mustUnderstand header block we do not process is a fault
        if h.get(q("s", "mustUnderstand")) in ("true", "1") and h.tag not in _UNDERSTOOD_HEADERS:
            raise SoapFault(f"header {h.tag} not understood", code="MustUnderstand")
    found = {h.tag: (h.text or "").strip() for h in headers}
    action = found.get(q("wsa", "Action"))
    if not action:
        raise SoapFault("WS-Addressing Action header missing", subcode="wsa:MessageAddressingHeaderRequired")
    _resolve_includes(children[0], attachments)
    return Envelope(children[0], action, found.get(q("wsa", "MessageID")), attachments)


def _resolve_includes(body: etree._Element, attachments: dict[str, bytes]) -> None:
    """Every xop:Include must name an attachment (XOP 1.0); checked before any handler runs."""
    for include in body.iter(q("xop", "Include")):
        href = include.get("href", "")
        if not href.startswith("cid:") or unquote(href[4:]) not in attachments:
            raise SoapFault(f"xop:Include {href!r} names no MIME part")


# -- writing ---------------------------------------------------------------------------------------
def envelope_bytes(
    body: etree._Element, *, action: str, relates_to: str | None = None, to: str | None = None
) -> bytes:
    """An envelope with WS-Addressing Action (mustUnderstand), MessageID, and RelatesTo (a response)
    or To and an anonymous ReplyTo (a request), as ITI TF-2x Appendix V asks."""
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
    etree.SubElement(env, q("s", "Body")).append(body)
    result: bytes = etree.tostring(env, xml_declaration=True, encoding="UTF-8")
    return result


def fault_message(fault: SoapFault, *, relates_to: str | None = None) -> SoapMessage:
    """SOAP 1.2 Part 1 5.4 Fault; HTTP status 400 for what the client caused (docs/decisions.md, where
    SOAP 1.2 Part 2 7.5 gives 500 for VersionMismatch and MustUnderstand), 500 only for a defect of ours."""
    el = etree.Element(q("s", "Fault"), nsmap=_ENVELOPE_NAMESPACES)
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
    body: etree._Element, *, action: str, relates_to: str | None = None, to: str | None = None
) -> SoapMessage:
    """A plain (inline) SOAP 1.2 message."""
    return SoapMessage(200, _SOAP_XML, envelope_bytes(body, action=action, relates_to=relates_to, to=to))


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


# -- registry responses (ITI TF-3 4.2.4) -------------------------------------------------------------
class XdsError(Exception):
    """A refusal reported as a RegistryError (ITI TF-3 Table 4.2.4.1-2), not a SOAP Fault."""

    def __init__(self, code: str, context: str, location: str | None = None) -> None:
        super().__init__(f"{code}: {context}")
        self.code = code
        self.context = context
        self.location = location  # when not the responder's: RAD-69 names the document (RAD69-016)


def registry_response(errors: list[XdsError], location: str, *, partial: bool = False) -> etree._Element:
    """An rs:RegistryResponse: Success, Failure, or PartialSuccess; every error's ``location`` is the
    responding homeCommunityId (XCA-I RAD75-005)."""
    status = SUCCESS if not errors else PARTIAL if partial else FAILURE
    el = etree.Element(f"{{{RS}}}RegistryResponse", status=status, nsmap={"rs": RS})
    if errors:
        error_list = etree.SubElement(el, f"{{{RS}}}RegistryErrorList")
        for error in errors:
            etree.SubElement(
                error_list, f"{{{RS}}}RegistryError", errorCode=error.code, codeContext=error.context,
                severity=_ERROR_SEVERITY, location=error.location or location,
            )  # fmt: skip
    return el


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
    media, params = _media_type(content_type)
    if media == "application/soap+xml":
        return MtomAnswer(_answer_body(parse_xml(await read_bounded(chunks, max_root_bytes))), _no_parts())
    if media != "multipart/related" or params.get("type", "").lower() != "application/xop+xml":
        raise SoapFault(f"unsupported media type {media!r}", status=415)
    parts = iter_parts(chunks, content_type, max_part_bytes=max(max_part_bytes, max_root_bytes))
    try:
        root = await anext(parts)
    except (StopAsyncIteration, NcpError) as exc:
        raise SoapFault(f"unreadable MTOM answer: {exc}") from None
    start = params.get("start", "").strip().strip("<>")
    if start and root.headers.get("content-id", "").strip().strip("<>") != start:
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
