"""WADO-RS metadata and bulk data (IHE RAD-107, PS3.18 10.4.1: the Metadata and Bulkdata resources).

Metadata of a study, series or instance is every attribute of each instance, from the DICOM JSON
the store keeps (PS3.18 F.2: character sets decoded, person names by component group), as
``application/dicom+json`` or as ``multipart/related; type="application/dicom+xml"`` with one PS3.19
Native DICOM Model document per instance (PS3.18 8.7.3.4; a bare ``application/dicom+xml`` is
answered the same way). Bulk data (:func:`ncp.pacs.store.is_bulk`) is a ``BulkDataURI`` under the
instance's URL on the base the request reached (:func:`~ncp.pacs.context.dicomweb_base`, so a
forwarded public base is honoured): ``{instance}/bulkdata/{tag}[/{item}/{tag}...]``, items numbered
from 1. Such a URI answers the value as ``multipart/related; type="application/octet-stream"`` (or a
bare ``application/octet-stream``): a top-level value streams from the file; encapsulated Pixel Data
is one part per item (Basic Offset Table, then each fragment, as Orthanc answers it). A URI that the
instance's metadata does not declare is 404 with a Warning.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element, SubElement, tostring

import anyio
import pydicom
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ncp.dicom.media import MediaType, parse_accept
from ncp.dicom.multipart import CHUNK_SIZE, Part, encode_multipart, multipart_content_type, new_boundary
from ncp.errors import NotAcceptable, NotFound
from ncp.pacs.context import PacsContext, Target, dicomweb_base
from ncp.pacs.store import BULK_THRESHOLD, resolve_bulk

__all__ = ["metadata_routes", "native_xml"]

_NATIVE_NS = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
_XML_SPACE = "{http://www.w3.org/XML/1998/namespace}space"
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_PN_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")  # XML 1.0 Char
_BULK_PATH = re.compile(r"[0-9A-Fa-f]{8}(/[1-9][0-9]{0,5}/[0-9A-Fa-f]{8})*")
_ITEM = b"\xfe\xff\x00\xe0"


# -- representations ---------------------------------------------------------------------------------
def _metadata_type(accept: str | None) -> str:
    """application/dicom+json (or application/json as asked) or application/dicom+xml (PS3.18 8.7.3.4)."""
    for media_range in parse_accept(accept):
        kind = media_range.media_type
        if kind in (MediaType.DICOM_JSON, MediaType.JSON):
            return kind
        if kind in ("*/*", "application/*"):
            return MediaType.DICOM_JSON
        inner = media_range.params.get("type", "").strip().lower()
        if kind == MediaType.DICOM_XML or (
            kind == MediaType.MULTIPART_RELATED and inner == MediaType.DICOM_XML
        ):
            return MediaType.DICOM_XML
    raise NotAcceptable(
        'metadata is application/dicom+json or multipart/related; type="application/dicom+xml"'
    )


def _bulk_multipart(accept: str | None) -> bool:
    """Whether bulk data goes as multipart/related (the default) or as a bare octet-stream."""
    for media_range in parse_accept(accept):
        kind = media_range.media_type
        inner = media_range.params.get("type", MediaType.OCTET_STREAM).strip().lower()
        if kind in (MediaType.MULTIPART_RELATED, "multipart/*", "*/*") and inner in (
            MediaType.OCTET_STREAM,
            "application/*",
            "*/*",
        ):
            return True
        if kind in (MediaType.OCTET_STREAM, "application/*"):
            return False
    raise NotAcceptable(
        'bulk data is multipart/related; type="application/octet-stream" or application/octet-stream'
    )


def _instance_url(base: str, meta: dict[str, Any]) -> str:
    study, series, sop = (meta[t]["Value"][0] for t in ("0020000D", "0020000E", "00080018"))
    return f"{base}/studies/{study}/series/{series}/instances/{sop}"


# -- PS3.19 Native DICOM Model -----------------------------------------------------------------------
def _xml_text(value: Any) -> str:
    return _NOT_XML.sub("\ufffd", value if isinstance(value, str) else json.dumps(value))


def _private_creator(meta: dict[str, Any], tag: str) -> str | None:
    """The Private Creator of a private data element (PS3.5 7.8.1), None for anything else."""
    group, element = int(tag[:4], 16), int(tag[4:], 16)
    if group % 2 == 0 or element < 0x1000:
        return None
    creator = meta.get(f"{group:04X}00{element >> 8:02X}", {}).get("Value", [""])
    return str(creator[0] or "")


def _person_name(parent: Element, number: int, value: dict[str, str] | None) -> None:
    name = SubElement(parent, "PersonName", number=str(number))
    for group in _PN_GROUPS:
        text = (value or {}).get(group)
        if text:
            node = SubElement(name, group)
            for component, part in zip(_PN_COMPONENTS, text.split("^"), strict=False):
                if part:
                    SubElement(node, component).text = _xml_text(part)


def _attribute(parent: Element, meta: dict[str, Any], tag: str, attr: dict[str, Any]) -> None:
    vr = attr.get("vr", "UN")
    node = SubElement(parent, "DicomAttribute", {"tag": tag, "vr": vr})
    keyword, creator = keyword_for_tag(int(tag, 16)), _private_creator(meta, tag)
    if keyword:
        node.set("keyword", keyword)
    if creator is not None:
        node.set("privateCreator", _xml_text(creator))
    if "BulkDataURI" in attr:
        SubElement(node, "BulkData", uri=attr["BulkDataURI"])
    elif "InlineBinary" in attr:
        SubElement(node, "InlineBinary").text = attr["InlineBinary"]
    for number, value in enumerate(attr.get("Value", []), 1):
        if vr == "SQ":
            _attributes(SubElement(node, "Item", number=str(number)), value)
        elif vr == "PN":
            _person_name(node, number, value)
        else:
            SubElement(node, "Value", number=str(number)).text = None if value is None else _xml_text(value)


def _attributes(parent: Element, meta: dict[str, Any]) -> None:
    for tag, attr in meta.items():
        _attribute(parent, meta, tag, attr)


def native_xml(meta: dict[str, Any]) -> bytes:
    """One instance's DICOM JSON as a PS3.19 A.1 NativeDicomModel document, UTF-8."""
    root = Element("NativeDicomModel", {"xmlns": _NATIVE_NS, _XML_SPACE: "preserve"})
    _attributes(root, meta)
    body: bytes = tostring(root, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body


async def _xml_parts(documents: Sequence[bytes]) -> AsyncIterator[Part]:
    for document in documents:
        yield Part.from_bytes(document, MediaType.DICOM_XML)


# -- bulk data ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Steps:
    """A bulk data path: the tags from the dataset down, each but the last followed by an item number."""

    tags: tuple[int, ...]
    items: tuple[int, ...]

    @classmethod
    def parse(cls, path: str) -> _Steps | None:
        if not _BULK_PATH.fullmatch(path):
            return None
        parts = path.split("/")
        return cls(tuple(int(t, 16) for t in parts[::2]), tuple(int(n) for n in parts[1::2]))

    def declared(self, meta: dict[str, Any]) -> bool:
        """Whether the stored metadata names this path as bulk data."""
        node: Any = meta
        for depth, tag in enumerate(self.tags):
            attr = node.get(f"{tag:08X}") if isinstance(node, dict) else None
            if not isinstance(attr, dict):
                return False
            if depth == len(self.items):
                return "BulkDataURI" in attr
            items = attr.get("Value", [])
            if attr.get("vr") != "SQ" or self.items[depth] > len(items):
                return False
            node = items[self.items[depth] - 1]
        return False


@dataclass(frozen=True)
class _FileRange:
    path: Path
    offset: int
    length: int


def _items(value: bytes) -> list[bytes]:
    """The items of encapsulated Pixel Data (PS3.5 A.4): Basic Offset Table, then each fragment."""
    out, pos = [], 0
    while pos + 8 <= len(value) and value[pos : pos + 4] == _ITEM:
        length = int.from_bytes(value[pos + 4 : pos + 8], "little")
        out.append(value[pos + 8 : pos + 8 + length])
        pos += 8 + length
    return out


def _locate(path: Path, steps: _Steps) -> _FileRange | list[bytes]:
    """Where a bulk value is: a range of the file (a deferred top-level value) or its bytes."""
    ds: Dataset = pydicom.dcmread(path, defer_size=BULK_THRESHOLD)
    try:
        for tag, item in zip(steps.tags, steps.items, strict=False):
            ds = ds[tag].value[item - 1]
    except (KeyError, IndexError):  # the file was replaced since its metadata was read
        raise NotFound("bulk data no longer in the stored instance") from None
    last = steps.tags[-1]
    if last not in ds:
        raise NotFound("bulk data no longer in the stored instance")
    raw = ds.get_item(last, keep_deferred=True)
    if isinstance(raw, RawDataElement) and raw.value is None and raw.length != 0xFFFFFFFF:
        return _FileRange(path, raw.value_tell, raw.length)
    elem = ds[last]
    value = elem.value if isinstance(elem.value, bytes) else b""
    return _items(value) if elem.is_undefined_length else [value]


async def _file_range(source: _FileRange) -> AsyncIterator[bytes]:
    async with await anyio.open_file(source.path, "rb") as f:
        await f.seek(source.offset)
        left = source.length
        while left > 0:
            chunk = await f.read(min(CHUNK_SIZE, left))
            if not chunk:
                raise OSError(f"{source.path.name} shorter than its {source.offset + source.length} bytes")
            left -= len(chunk)
            yield chunk


async def _bulk_parts(source: _FileRange | list[bytes]) -> AsyncIterator[Part]:
    if isinstance(source, _FileRange):
        yield Part(MediaType.OCTET_STREAM, _file_range(source))
        return
    for value in source:
        yield Part.from_bytes(value, MediaType.OCTET_STREAM)


async def _single(source: _FileRange | list[bytes]) -> AsyncIterator[bytes]:
    if isinstance(source, _FileRange):
        async for chunk in _file_range(source):
            yield chunk
    else:
        yield source[0]


# -- routes ------------------------------------------------------------------------------------------
def metadata_routes(ctx: PacsContext) -> list[Route]:
    async def metadata(request: Request) -> Response:
        """PS3.18 10.4.1.1.2: Retrieve Study, Series or Instance Metadata."""
        target = Target.from_request(request)
        media_type = _metadata_type(request.headers.get("accept"))
        resolved = await ctx.resolve(target)
        stored = await run_in_threadpool(ctx.store.metadata, [i.sop_uid for i in resolved.available])
        base = dicomweb_base(request)
        datasets = [resolve_bulk(meta, _instance_url(base, meta)) for meta in stored]
        status, headers = ctx.partial(resolved)
        if media_type != MediaType.DICOM_XML:
            return Response(json.dumps(datasets), status_code=status, headers=headers, media_type=media_type)
        documents = await run_in_threadpool(lambda: [native_xml(d) for d in datasets])
        boundary = new_boundary()
        body = encode_multipart(_xml_parts(documents), boundary)
        content_type = multipart_content_type(MediaType.DICOM_XML, boundary)
        return StreamingResponse(body, status_code=status, headers=headers, media_type=content_type)

    async def bulkdata(request: Request) -> Response:
        """PS3.18 10.4.1: Retrieve Bulkdata named by a BulkDataURI of our metadata."""
        target = Target.from_request(request)
        path = request.path_params["path"]
        multipart = _bulk_multipart(request.headers.get("accept"))
        resolved = await ctx.resolve(target)
        inst = resolved.available[0]
        stored = await run_in_threadpool(ctx.store.metadata, [inst.sop_uid])
        steps = _Steps.parse(path)
        if steps is None or not stored or not steps.declared(stored[0]):
            raise NotFound(f"no bulk data {path[:80]!r} in {target.describe()}")
        source = await run_in_threadpool(_locate, ctx.store.path(inst), steps)
        if not multipart:
            if isinstance(source, list) and len(source) != 1:
                raise NotAcceptable(f"{len(source)} fragments: ask for multipart/related")
            return StreamingResponse(_single(source), media_type=MediaType.OCTET_STREAM)
        boundary = new_boundary()
        content_type = multipart_content_type(MediaType.OCTET_STREAM, boundary)
        return StreamingResponse(encode_multipart(_bulk_parts(source), boundary), media_type=content_type)

    studies = "/dicom-web/studies/{study}"
    series = studies + "/series/{series}"
    instance = series + "/instances/{sop}"
    return [
        *(Route(p + "/metadata", metadata, methods=["GET"]) for p in (studies, series, instance)),
        Route(instance + "/bulkdata/{path:path}", bulkdata, methods=["GET"]),
    ]
