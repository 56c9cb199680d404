"""ITI-68 Retrieve Document, Document Responder side (MHD 2:3.68).

``GET /fhir/Binary/{document id}`` serves one of the document's representations, negotiated on
``Accept`` (RFC 9110 12.5.1: the most specific matching range gives a representation its q; the
highest q wins, ties go to the DocumentReference's content order; no Accept = the first).
Errors per MHD Table 3.68.4.2.2-1: unknown 404; deprecated (superseded) or deleted 410; no
acceptable type 406.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ncp.errors import Gone, InvalidRequest, NotAcceptable, NotFound
from ncp.registry.fhirhttp import Registry, validate_id
from ncp.registry.store import Representation

__all__ = ["MediaRange", "choose_representation", "parse_accept", "retrieve_document"]

# a client asking for plain JSON gets the FHIR JSON representation
_EQUIVALENT = {"application/json": "application/fhir+json"}


@dataclass(frozen=True)
class MediaRange:
    type: str
    subtype: str
    q: float

    def specificity(self, media_type: str) -> int:
        """2 exact, 1 ``type/*``, 0 ``*/*``, -1 no match."""
        kind, _, sub = media_type.partition("/")
        if self.type == "*":
            return 0
        if self.type != kind:
            return -1
        if self.subtype == "*":
            return 1
        return 2 if self.subtype == sub else -1


def parse_accept(header: str) -> list[MediaRange]:
    """RFC 9110 12.5.1 ``Accept``; a range that is not ``type/subtype`` is a 400."""
    ranges = []
    for item in header.split(","):
        if not item.strip():
            continue
        media, *params = (p.strip() for p in item.split(";"))
        kind, sep, sub = media.lower().partition("/")
        if not sep or not kind or not sub or (kind == "*" and sub != "*"):
            raise InvalidRequest(f"Accept: {media!r} is not a media range")
        full = _EQUIVALENT.get(f"{kind}/{sub}", f"{kind}/{sub}")
        kind, _, sub = full.partition("/")
        ranges.append(MediaRange(kind, sub, _quality(params)))
    return ranges


def _quality(params: Sequence[str]) -> float:
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                raise InvalidRequest(f"Accept: q={value!r} is not a number") from None
            if not 0.0 <= q <= 1.0:
                raise InvalidRequest(f"Accept: q={value!r} is outside 0..1")
            return q
    return 1.0


def choose_representation(accept: str | None, offered: Sequence[Representation]) -> Representation | None:
    """The representation to send, or None when nothing offered is acceptable (406)."""
    if not offered:
        return None
    ranges = parse_accept(accept) if accept and accept.strip() else []
    if not ranges:
        return offered[0]
    best: tuple[float, Representation] | None = None
    for rep in offered:
        q = _q_for(rep.content_type.lower(), ranges)
        if q > 0 and (best is None or q > best[0]):
            best = (q, rep)
    return None if best is None else best[1]


def _q_for(media_type: str, ranges: Sequence[MediaRange]) -> float:
    matching = [(r.specificity(media_type), r.q) for r in ranges if r.specificity(media_type) >= 0]
    if not matching:
        return 0.0
    top = max(s for s, _ in matching)
    return max(q for s, q in matching if s == top)


async def retrieve_document(request: Request) -> Response:
    registry = Registry.of(request)
    doc_id = validate_id(request.path_params["id"], "Binary id")
    found = await run_in_threadpool(registry.store.representations, doc_id)
    if found is None:
        raise NotFound(f"Binary/{doc_id}: document not found")
    doc, offered = found
    if doc.status == "entered-in-error":
        raise Gone(f"Binary/{doc_id}: the document was deleted")
    if doc.status == "superseded":
        by = f" by DocumentReference/{doc.superseded_by}" if doc.superseded_by else ""
        raise Gone(f"Binary/{doc_id}: the document is deprecated (superseded{by})")
    accept = request.headers.get("accept")
    chosen = choose_representation(accept, offered)
    if chosen is None:
        types = ", ".join(r.content_type for r in offered)
        raise NotAcceptable(f"Binary/{doc_id} is available as {types}; Accept {accept!r} allows none of them")
    etag = f'"{chosen.sha1}"'
    headers = {"ETag": etag, "Vary": "Accept", "Cache-Control": "private, no-cache"}
    if etag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers=headers)
    data = await run_in_threadpool(registry.store.representation_bytes, doc_id, chosen.ordinal)
    return Response(data, media_type=chosen.content_type, headers=headers)
