"""Media types, transfer syntaxes and ``Accept`` negotiation for DICOMweb (PS3.18 8.7).

``parse_accept`` turns an ``Accept`` header into :class:`MediaRange` objects in preference order
(q value, then specificity, then position; RFC 9110 12.5.1). The ``negotiate_*`` functions pick
what a WADO-RS / QIDO-RS origin server answers or raise :class:`~ncp.errors.NotAcceptable` (406):

- retrieve (PS3.18 8.7.3-8.7.5): ``multipart/related; type="application/dicom"`` with an optional
  ``transfer-syntax`` parameter; no parameter means Explicit VR Little Endian (Table 8.7.3-2),
  ``*`` means "as the server has it". This server never transcodes: a stored file is served as
  is, so a transfer syntax other than the stored one is not acceptable.
- metadata and search: ``application/dicom+json`` (``application/json`` accepted as an alias).
- rendered (PS3.18 8.3.5.1.3): ``image/jpeg`` (default) or ``image/png``, single part or wrapped
  in ``multipart/related`` as MADO's examples ask.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from ncp.dicom.uids import validate_uid
from ncp.errors import InvalidRequest, NotAcceptable

__all__ = [
    "DEFAULT_TRANSFER_SYNTAX",
    "DicomRepresentation",
    "MediaRange",
    "MediaType",
    "RenderedRepresentation",
    "TransferSyntax",
    "negotiate",
    "negotiate_dicom",
    "negotiate_rendered",
    "parse_accept",
    "parse_media_type",
    "split_header_list",
]


class MediaType(StrEnum):
    """Media types a DICOMweb origin server deals in (PS3.18 Table 8.7.3-1 and 8.7.4-1)."""

    DICOM = "application/dicom"
    """A PS3.10 file: one instance."""
    DICOM_JSON = "application/dicom+json"
    """DICOM JSON model (PS3.18 Annex F): metadata, search results, STOW responses."""
    DICOM_XML = "application/dicom+xml"
    """Native DICOM Model XML (PS3.19 A.1); not served here."""
    JSON = "application/json"
    """Plain JSON, accepted as an alias of application/dicom+json."""
    OCTET_STREAM = "application/octet-stream"
    """Uncompressed bulk data and frames; not served here."""
    MULTIPART_RELATED = "multipart/related"
    """RFC 2387 container of several parts, each of the ``type`` parameter's media type."""
    JPEG = "image/jpeg"
    """Rendered image, default of the rendered resources (PS3.18 8.3.5.1.3)."""
    PNG = "image/png"
    """Rendered image, lossless."""
    ANY = "*/*"
    """Any media type."""


class TransferSyntax(StrEnum):
    """Transfer syntax UIDs (PS3.5 Chapter 10, PS3.6 Table A-1) the server knows by name."""

    IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
    """Default DIMSE syntax; shall not be used with Web Services (PS3.18 8.7.3)."""
    EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
    """Default for application/dicom on the Web (PS3.18 Table 8.7.3-2)."""
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
    """zlib-deflated dataset; refused at STOW (unbounded inflation)."""
    EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
    """Retired; shall not be used with Web Services (PS3.18 8.7.3)."""
    JPEG_BASELINE_8BIT = "1.2.840.10008.1.2.4.50"
    """JPEG Baseline (Process 1), lossy."""
    JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
    """JPEG Lossless, first-order prediction (Process 14, SV1)."""
    JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
    """JPEG-LS lossless."""
    JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
    """JPEG 2000 reversible."""
    JPEG_2000 = "1.2.840.10008.1.2.4.91"
    """JPEG 2000, possibly irreversible."""
    RLE_LOSSLESS = "1.2.840.10008.1.2.5"
    """DICOM RLE."""


DEFAULT_TRANSFER_SYNTAX = TransferSyntax.EXPLICIT_VR_LITTLE_ENDIAN


@dataclass(frozen=True)
class MediaRange:
    """One element of an ``Accept`` header: a (possibly wildcard) media type, its parameters and q."""

    media_type: str
    params: Mapping[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def specificity(self) -> int:
        """0 for ``*/*``, 1 for ``type/*``, 2 for a full type, 3 with parameters (RFC 9110 12.5.1)."""
        if self.media_type == "*/*":
            return 0
        if self.media_type.endswith("/*"):
            return 1
        return 3 if self.params else 2

    def matches(self, media_type: str) -> bool:
        """Whether this range covers the concrete ``media_type`` (parameters not considered)."""
        if self.media_type == "*/*":
            return True
        if self.media_type.endswith("/*"):
            return media_type.split("/", 1)[0] == self.media_type[:-2]
        return media_type == self.media_type


def _split_outside_quotes(value: str, sep: str) -> Iterator[str]:
    """Split on ``sep`` except inside RFC 9110 quoted-strings (which may hold backslash escapes)."""
    start, quoted, escaped = 0, False, False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            yield value[start:i]
            start = i + 1
    if quoted:
        raise InvalidRequest(f"unterminated quoted string in header value {value[:120]!r}")
    yield value[start:]


def split_header_list(value: str) -> list[str]:
    """Elements of a comma-separated header (RFC 9110 5.6.1), quotes respected, empties dropped."""
    return [item.strip() for item in _split_outside_quotes(value, ",") if item.strip()]


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        out, escaped = [], False
        for ch in inner:
            if escaped or ch != "\\":
                out.append(ch)
                escaped = False
            else:
                escaped = True
        return "".join(out)
    return value


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """``'Multipart/Related; type="application/dicom"; boundary=x'`` -> ``('multipart/related', {...})``.

    Type and parameter names are lower-cased; parameter values are unquoted, case kept (a
    boundary is case-sensitive). Quoted and unquoted ``type`` values are equivalent (RFC 9110 5.6.6).
    """
    head, *rest = list(_split_outside_quotes(value, ";"))
    media_type = head.strip().lower()
    if media_type.count("/") != 1 or not all(media_type.split("/")):
        raise InvalidRequest(f"malformed media type {head.strip()[:80]!r}")
    params: dict[str, str] = {}
    for item in rest:
        if not item.strip():
            continue
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise InvalidRequest(f"malformed media type parameter {item.strip()[:80]!r}")
        params[name.strip().lower()] = _unquote(raw)
    return media_type, params


def _parse_range(item: str) -> MediaRange:
    media_type, params = parse_media_type(item)
    q = 1.0
    if "q" in params:
        raw = params.pop("q")
        try:
            q = float(raw)
        except ValueError:
            raise InvalidRequest(f"Accept: q value {raw!r} is not a number") from None
        if not 0.0 <= q <= 1.0:
            raise InvalidRequest(f"Accept: q value {raw!r} is outside 0..1")
    return MediaRange(media_type, params, q)


def parse_accept(value: str | None) -> list[MediaRange]:
    """Media ranges with q > 0, best first; a missing or empty header means ``*/*``."""
    if value is None or not value.strip():
        return [MediaRange("*/*")]
    ranges = [_parse_range(item) for item in split_header_list(value)]
    indexed = sorted(enumerate(ranges), key=lambda p: (-p[1].q, -p[1].specificity, p[0]))
    return [r for _, r in indexed if r.q > 0]


def _refused(value: str | None) -> set[str]:
    """Concrete media types the client explicitly refused with ``q=0``."""
    if value is None or not value.strip():
        return set()
    ranges = (_parse_range(item) for item in split_header_list(value))
    return {r.media_type for r in ranges if r.q == 0 and r.specificity >= 2}


def negotiate(accept: str | None, offers: Sequence[str]) -> str:
    """The first of ``offers`` (server preference order) covered by the best acceptable range."""
    refused = _refused(accept)
    for media_range in parse_accept(accept):
        for offer in offers:
            if offer not in refused and media_range.matches(offer):
                return offer
    raise NotAcceptable(
        f"none of the acceptable media types is available; this resource offers {list(offers)}"
    )


@dataclass(frozen=True)
class DicomRepresentation:
    """How to answer a WADO-RS instance retrieval."""

    multipart: bool
    """``multipart/related`` (True) or a single ``application/dicom`` body (instance level only)."""
    transfer_syntax: str | None
    """The transfer syntax all parts share, or None for ``*``: each part as stored."""


def _dicom_candidate(media_range: MediaRange, single_part: bool) -> tuple[bool, str | None] | None:
    """(multipart, transfer-syntax parameter) this range asks for, or None if it is not DICOM."""
    ts = media_range.params.get("transfer-syntax")
    if media_range.media_type in ("*/*", "multipart/*"):
        return True, ts or "*"  # no DICOM type named, so no default transfer syntax applies
    if media_range.media_type == MediaType.MULTIPART_RELATED:
        # PS3.18 8.7.3.2: "type" is required; a missing one is read as application/dicom.
        part_type = media_range.params.get("type", MediaType.DICOM).strip().lower()
        return (True, ts) if part_type in (MediaType.DICOM, "application/*", "*/*") else None
    if media_range.media_type in (MediaType.DICOM, "application/*") and single_part:
        return False, ts
    return None


def negotiate_dicom(
    accept: str | None, stored: Collection[str], *, single_part: bool = False
) -> DicomRepresentation:
    """Choose the representation of instances stored in the transfer syntaxes ``stored``.

    PS3.18 8.7.3.5: without a ``transfer-syntax`` parameter the default, Explicit VR Little
    Endian, is due; ``*`` lets the server choose (here: as stored). Since nothing is transcoded,
    a range is acceptable only if every stored syntax equals the one it names.
    """
    kinds = set(stored)
    for media_range in parse_accept(accept):
        candidate = _dicom_candidate(media_range, single_part)
        if candidate is None:
            continue
        multipart, ts = candidate
        if ts is not None and ts != "*":
            validate_uid(ts.strip(), "transfer-syntax parameter")
        wanted = DEFAULT_TRANSFER_SYNTAX.value if ts is None else ts.strip()
        if wanted == "*":
            only = next(iter(kinds)) if len(kinds) == 1 else None
            return DicomRepresentation(multipart, only)
        if kinds <= {wanted}:
            return DicomRepresentation(multipart, wanted)
    shown = ", ".join(sorted(kinds)) or "none"
    raise NotAcceptable(
        "no acceptable representation: instances are available as multipart/related; "
        f'type="application/dicom" in transfer syntax {shown} (or transfer-syntax=*); no transcoding'
    )


@dataclass(frozen=True)
class RenderedRepresentation:
    """How to answer a rendered retrieval (PS3.18 8.3.5.1.3)."""

    media_type: MediaType
    """image/jpeg or image/png."""
    multipart: bool
    """Wrapped in multipart/related (MADO's example Accept) or a single body."""


def negotiate_rendered(accept: str | None) -> RenderedRepresentation:
    """image/jpeg by default, image/png on request; 406 for anything else."""
    refused = _refused(accept)
    images = [m for m in (MediaType.JPEG, MediaType.PNG) if m not in refused]
    for media_range in parse_accept(accept):
        multipart = media_range.media_type == MediaType.MULTIPART_RELATED
        inner = MediaRange(media_range.params.get("type", "").strip().lower()) if multipart else media_range
        if multipart and inner.media_type.count("/") != 1:
            continue
        for image in images:
            if inner.matches(image):
                return RenderedRepresentation(image, multipart)
    raise NotAcceptable("rendered resources are available as image/jpeg or image/png")
