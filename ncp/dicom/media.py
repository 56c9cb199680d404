"""Media types, transfer syntaxes and ``Accept`` negotiation for DICOMweb (PS3.18 8.7).

``parse_accept`` turns an ``Accept`` header into :class:`MediaRange` objects in preference order
(q value, then specificity, then position; RFC 9110 12.5.1). The ``negotiate_*`` functions pick
what a WADO-RS / QIDO-RS origin server answers or raise :class:`~ncp.errors.NotAcceptable` (406):

- retrieve (PS3.18 8.7.3-8.7.5): ``multipart/related; type="application/dicom"`` with an optional
  ``transfer-syntax`` parameter; no parameter (and no ``Accept`` at all) means Explicit VR Little
  Endian (Table 8.7.3-2), ``*`` means "as the server has it". Whether a syntax can be produced
  from what is stored (transcoding) is the caller's ``produce`` predicate.
- frames (PS3.18 8.7.3.3, 10.4.1.1.3): ``multipart/related; type="application/octet-stream"``
  (uncompressed, the default) or a compressed pixel media type (``image/jpeg``, ``image/jls``...).
- metadata and search: ``application/dicom+json`` (``application/json`` accepted as an alias).
- rendered (PS3.18 8.3.5.1.3): ``image/jpeg`` (default) or ``image/png``, single part or wrapped
  in ``multipart/related`` as MADO's examples ask.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from ncp.dicom.uids import validate_uid
from ncp.errors import InvalidRequest, NotAcceptable

__all__ = [
    "DEFAULT_TRANSFER_SYNTAX",
    "MAX_ACCEPT_LENGTH",
    "MAX_ACCEPT_RANGES",
    "PIXEL_MEDIA_TYPES",
    "DicomRepresentation",
    "FrameRepresentation",
    "MediaRange",
    "MediaType",
    "RenderedRepresentation",
    "TransferSyntax",
    "negotiate",
    "negotiate_dicom",
    "negotiate_frames",
    "negotiate_rendered",
    "parse_accept",
    "parse_media_type",
    "pixel_media_type",
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
    """Uncompressed bulk data and frames (PS3.18 8.7.3.3)."""
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
    JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
    """JPEG Extended (Process 2 and 4), lossy, up to 12 bits."""
    JPEG_LOSSLESS = "1.2.840.10008.1.2.4.57"
    """JPEG Lossless (Process 14)."""
    JPEG_LS_NEAR_LOSSLESS = "1.2.840.10008.1.2.4.81"
    """JPEG-LS near-lossless."""
    JPEG_2000_PART2_LOSSLESS = "1.2.840.10008.1.2.4.92"
    """JPEG 2000 Part 2 multi-component, reversible."""
    JPEG_2000_PART2 = "1.2.840.10008.1.2.4.93"
    """JPEG 2000 Part 2 multi-component."""
    HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
    """High-Throughput JPEG 2000, reversible."""
    HTJ2K_LOSSLESS_RPCL = "1.2.840.10008.1.2.4.202"
    """High-Throughput JPEG 2000 with RPCL options, reversible."""
    HTJ2K = "1.2.840.10008.1.2.4.203"
    """High-Throughput JPEG 2000."""


DEFAULT_TRANSFER_SYNTAX = TransferSyntax.EXPLICIT_VR_LITTLE_ENDIAN

# PS3.18 Table 8.7.3-5 (pixel data media types): each compressed media type and the transfer
# syntaxes it carries, its default first. image/x-dicom-rle is the pre-2019 name of image/dicom-rle.
_T = TransferSyntax
PIXEL_MEDIA_TYPES: Mapping[str, tuple[str, ...]] = {
    "image/jpeg": (_T.JPEG_LOSSLESS_SV1, _T.JPEG_BASELINE_8BIT, _T.JPEG_EXTENDED, _T.JPEG_LOSSLESS),
    "image/jls": (_T.JPEG_LS_LOSSLESS, _T.JPEG_LS_NEAR_LOSSLESS),
    "image/jp2": (_T.JPEG_2000_LOSSLESS, _T.JPEG_2000),
    "image/jpx": (_T.JPEG_2000_PART2_LOSSLESS, _T.JPEG_2000_PART2),
    "image/jphc": (_T.HTJ2K_LOSSLESS, _T.HTJ2K_LOSSLESS_RPCL, _T.HTJ2K),
    "image/dicom-rle": (_T.RLE_LOSSLESS,),
    "image/x-dicom-rle": (_T.RLE_LOSSLESS,),
}
MAX_ACCEPT_LENGTH = 8192
"""An Accept header longer than this is refused (400): browsers send a few hundred bytes."""
MAX_ACCEPT_RANGES = 64
"""At most this many media ranges; more is a refused request, not a longer search."""


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


def _all_ranges(value: str) -> list[MediaRange]:
    """Every well-formed range, q=0 included. A malformed element is skipped (RFC 9110 12.5.1 lets
    a server ignore what it cannot use), unless nothing else is left: then the request is bad.
    Bounded so that a hostile header costs no more than a normal one."""
    if len(value) > MAX_ACCEPT_LENGTH:
        raise InvalidRequest(f"Accept header longer than {MAX_ACCEPT_LENGTH} characters")
    items = split_header_list(value)
    if len(items) > MAX_ACCEPT_RANGES:
        raise InvalidRequest(f"Accept header with {len(items)} media ranges (at most {MAX_ACCEPT_RANGES})")
    ranges: list[MediaRange] = []
    first_error: InvalidRequest | None = None
    for item in items:
        try:
            ranges.append(_parse_range(item))
        except InvalidRequest as exc:
            first_error = first_error or exc
    if first_error is not None and not ranges:
        raise first_error
    return ranges


def parse_accept(value: str | None) -> list[MediaRange]:
    """Media ranges with q > 0, best first; a missing or empty header means ``*/*``."""
    if value is None or not value.strip():
        return [MediaRange("*/*")]
    indexed = sorted(enumerate(_all_ranges(value)), key=lambda p: (-p[1].q, -p[1].specificity, p[0]))
    return [r for _, r in indexed if r.q > 0]


def _refused(value: str | None) -> set[str]:
    """Concrete media types the client explicitly refused with ``q=0``."""
    if value is None or not value.strip():
        return set()
    return {r.media_type for r in _all_ranges(value) if r.q == 0 and r.specificity >= 2}


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


def _transfer_syntax_param(media_range: MediaRange) -> str | None:
    """The range's ``transfer-syntax`` parameter: None, ``*`` or a checked UID (400 if malformed)."""
    ts = media_range.params.get("transfer-syntax")
    if ts is None or ts.strip() == "*":
        return None if ts is None else "*"
    return validate_uid(ts.strip(), "transfer-syntax parameter")


@dataclass(frozen=True)
class DicomRepresentation:
    """How to answer a WADO-RS instance retrieval."""

    multipart: bool
    """``multipart/related`` (True) or a single ``application/dicom`` body (instance level only)."""
    transfer_syntax: str | None
    """The transfer syntax all parts share, or None for ``*``: each part as stored."""


def _dicom_candidate(media_range: MediaRange, single_part: bool) -> tuple[bool, str | None, bool] | None:
    """(multipart, transfer-syntax parameter, named a DICOM type) this range asks for, or None."""
    ts = _transfer_syntax_param(media_range)
    if media_range.media_type in ("*/*", "multipart/*"):
        return True, ts, False
    if media_range.media_type == MediaType.MULTIPART_RELATED:
        # PS3.18 8.7.3.2: "type" is required; a missing one is read as application/dicom.
        part_type = media_range.params.get("type", MediaType.DICOM).strip().lower()
        named = part_type == MediaType.DICOM
        return (True, ts, named) if named or part_type in ("application/*", "*/*") else None
    if media_range.media_type in (MediaType.DICOM, "application/*") and single_part:
        return False, ts, media_range.media_type == MediaType.DICOM
    return None


def negotiate_dicom(
    accept: str | None,
    stored: Collection[str],
    *,
    single_part: bool = False,
    produce: Callable[[str], bool] | None = None,
) -> DicomRepresentation:
    """Choose the representation of instances stored in the transfer syntaxes ``stored``.

    ``produce(ts)`` says whether every instance can be served in ``ts`` (default: only if stored
    so). PS3.18 8.7.3.5: without a ``transfer-syntax`` parameter Explicit VR Little Endian is due;
    ``*`` lets the server choose (as stored). A wildcard range that names no DICOM type falls back
    to ``*`` when the default cannot be produced.
    """
    kinds = set(stored)
    can = produce or (lambda ts: kinds <= {ts})
    wanted: list[str] = []
    for media_range in parse_accept(accept):
        candidate = _dicom_candidate(media_range, single_part)
        if candidate is None:
            continue
        multipart, ts, named = candidate
        if ts == "*":
            return DicomRepresentation(multipart, next(iter(kinds)) if len(kinds) == 1 else None)
        target = ts or DEFAULT_TRANSFER_SYNTAX.value
        if can(target):
            return DicomRepresentation(multipart, target)
        if ts is None and not named:
            return DicomRepresentation(multipart, next(iter(kinds)) if len(kinds) == 1 else None)
        wanted.append(target)
    shown = ", ".join(sorted(kinds)) or "none"
    names = ", ".join(dict.fromkeys(wanted))
    refused = f"transfer syntax {names} cannot be produced (no codec); " if wanted else ""
    raise NotAcceptable(
        f"no acceptable representation: {refused}instances are stored in transfer syntax {shown}; "
        'ask for multipart/related; type="application/dicom" with transfer-syntax=* to have them as stored'
    )


def pixel_media_type(transfer_syntax: str) -> str | None:
    """The compressed media type that carries frames in ``transfer_syntax``; None if uncompressed."""
    return next((t for t, syntaxes in PIXEL_MEDIA_TYPES.items() if transfer_syntax in syntaxes), None)


@dataclass(frozen=True)
class FrameRepresentation:
    """How to answer a frames retrieval (PS3.18 10.4.1.1.3, 8.7.3.3)."""

    media_type: str
    """application/octet-stream (decoded, native) or the compressed media type of the frames."""
    transfer_syntax: str
    """Explicit VR Little Endian for octet-stream, else the compressed syntax the frames are in."""
    multipart: bool
    """``multipart/related`` (True) or one frame as a single body."""


def _frame_candidate(
    media_range: MediaRange, stored: str, *, decodable: bool, single_part: bool
) -> FrameRepresentation | None:
    multipart = media_range.media_type in (MediaType.MULTIPART_RELATED, "multipart/*", "*/*")
    if not multipart and not single_part:
        return None
    inner = media_range.params.get("type", "*/*").strip().lower() if multipart else media_range.media_type
    ts = _transfer_syntax_param(media_range)
    evle = DEFAULT_TRANSFER_SYNTAX.value
    stored_type = pixel_media_type(stored)
    octet = FrameRepresentation(MediaType.OCTET_STREAM, evle, multipart)
    as_stored = octet if stored_type is None else FrameRepresentation(stored_type, stored, multipart)
    if inner in (MediaType.OCTET_STREAM, "application/*", "*/*"):
        if ts == "*":
            return as_stored
        # PS3.18 8.7.3.3: uncompressed frames are the default; decoding needs a codec.
        return octet if ts in (None, evle) and (decodable or stored_type is None) else None
    # A compressed media type: served as stored when the stored syntax is one it carries.
    if stored in PIXEL_MEDIA_TYPES.get(inner, ()) and ts in (None, "*", stored):
        return FrameRepresentation(inner, stored, multipart)
    if inner == "image/*" and stored_type is not None and ts in (None, "*", stored):
        return as_stored
    return None


def negotiate_frames(
    accept: str | None, stored: str, *, decodable: bool, single_part: bool
) -> FrameRepresentation:
    """Choose how to send frames of an instance stored in ``stored``.

    ``decodable``: a codec for ``stored`` is installed, so frames can be decoded to octet-stream.
    ``single_part``: one frame was asked for, so a bare (non-multipart) body is allowed.
    """
    for media_range in parse_accept(accept):
        chosen = _frame_candidate(media_range, stored, decodable=decodable, single_part=single_part)
        if chosen is not None:
            return chosen
    stored_type = pixel_media_type(stored)
    offers = [MediaType.OCTET_STREAM.value] if decodable or stored_type is None else []
    offers += [f"{stored_type}; transfer-syntax={stored}"] if stored_type else []
    shown = " or ".join(f'multipart/related; type="{o}"' for o in offers) or "nothing (no codec)"
    raise NotAcceptable(f"frames stored in transfer syntax {stored} are available as {shown}")


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
