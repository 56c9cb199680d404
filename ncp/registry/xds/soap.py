"""SOAP 1.2 for the XDS.b endpoints: a hardened XML parser, WS-Addressing, Faults and MTOM/XOP.

IHE ITI TF-2x Appendix V: SOAP 1.2 (W3C SOAP 1.2 Part 1), WS-Addressing 1.0 headers on every message,
MTOM/XOP (W3C XOP 1.0) for documents. Messages are bounded before they are read: the whole message by
the app, each MIME part here; XDS documents (reports, KOS manifests) are small, images never travel
in SOAP (MCWG: images always by WADO-RS).
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from urllib.parse import unquote

from lxml import etree

__all__ = [
    "NS",
    "Envelope",
    "SoapFault",
    "SoapMessage",
    "binary_content",
    "envelope_bytes",
    "fault_message",
    "mtom_message",
    "parse_message",
    "parse_xml",
    "q",
    "soap_message",
]

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://www.w3.org/2005/08/addressing",
    "xop": "http://www.w3.org/2004/08/xop/include",
    "xml": "http://www.w3.org/XML/1998/namespace",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
}
_SOAP_XML = 'application/soap+xml; charset="utf-8"'
_ENVELOPE_NAMESPACES = {"s": NS["s"], "wsa": NS["wsa"]}
_FAULT_NAMESPACES = {**_ENVELOPE_NAMESPACES, "wsse": NS["wsse"]}  # WSS 1.1 fault subcodes are wsse: QNames
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
    media, params = _media_type(content_type)
    if media == "application/soap+xml":
        return _envelope(parse_xml(data), {}, security)
    if media != "multipart/related" or params.get("type", "").lower() != "application/xop+xml":
        raise SoapFault(f"unsupported media type {media!r}", status=415)
    root_part, attachments = _split_related(data, params, max_part_bytes)
    return _envelope(parse_xml(root_part), attachments, security)


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
        header.append(security)
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
        f'--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; type="application/soap+xml"\r\n'
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
