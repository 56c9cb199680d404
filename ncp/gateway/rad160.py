"""XC-WADO, IHE RAD-160 (MADO Appendix XA): the Initiating and Responding Imaging Gateways.

Initiating (country B, consumer-facing)::

    GET {B}/wado/homeCommunityId/{oid}/RetrieveLocationUID/{rluid}/studies/{s}[/series/{se}[/instances/{i}
        [/frames/{list}|/bulkdata/{tag path}]]][/rendered|/metadata][?retrieveURL=host/path/]

is mapped by homeCommunityId to the responding gateway of that community (prefix swap only)::

    GET {A}/wado-rs/homeCommunityId/{oid}/RetrieveLocationUID/{rluid}/studies/...

which checks the community is its own and maps the Retrieve Location UID (or an allowlisted
``retrieveURL``) to a PACS, then issues RAD-107 ``{P}/studies/...``. Both spellings of the
appendix are accepted (``study/``|``studies/``, ``retrieveurl``|``retrieveURL``). Unknown
communities and Retrieve Location UIDs are refused with 404 + ``Warning`` before any upstream call.
Frames and bulk data, for viewers, go beyond the appendix: a country offers them unless its topology
says ``viewer_resources = false``.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from email.message import Message
from urllib.parse import unquote, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ncp.dicom.uids import validate_oid, validate_uid
from ncp.errors import Forbidden, InvalidRequest, NotFound, warning_header
from ncp.forwarded import forwarded_headers, public_base
from ncp.gateway.context import Hop
from ncp.gateway.fhir import fhir_get
from ncp.gateway.proxy import relay
from ncp.gateway.settings import AllowedBase
from ncp.security.tokens import Claims, PatientRef
from ncp.topology import CountryEndpoints

__all__ = [
    "NextHop",
    "XcWadoPath",
    "initiating_imaging_gateway",
    "initiating_next_hop",
    "match_retrieve_url",
    "parse_request",
    "responding_imaging_gateway",
    "responding_next_hop",
    "responding_next_hop_now",
]

_TAILS = ("rendered", "metadata")
_BULK = ("bulkdata", "bulk")  # the embedded PACS's spelling, Orthanc's
_FRAME_LIST = re.compile(r"[1-9][0-9]{0,8}(?:,[1-9][0-9]{0,8})*")
_MAX_FRAMES = 1024  # one request's frame list; a viewer asks for one or a few
_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_ITEM = re.compile(r"0|[1-9][0-9]{0,5}")
_MAX_DEPTH = 8  # sequence nesting in a bulk data tag path
_MAX_ACCEPT = 4096  # characters: a viewer's Accept is well under 200
_MAX_PART_HEADERS = 16 * 1024  # one part's header block; larger is passed on unread
_FORWARDED = frozenset({"accept", "range"})
_CREDENTIALS = frozenset(
    {"access_token", "id_token", "token", "assertion", "client_assertion", "jwt", "code"}
)


@dataclass(frozen=True)
class XcWadoPath:
    """The validated parts of an XC-WADO request path.

    MADO Appendix XA names studies, series, instances, ``rendered`` and ``metadata``; viewers also need
    PS3.18 frames (10.4.1.1.3), frame-level ``rendered`` and bulk data (10.4, Bulkdata resources):
    ``.../instances/{i}/frames/{1-based list}[/rendered]`` and ``.../instances/{i}/bulkdata/{tag path}``
    (``bulk`` as Orthanc writes it), a tag path being ``tag(/item/tag)*`` with 8-hex-digit tags
    (docs/decisions.md, "XC-WADO for viewers").
    """

    home_community_id: str
    retrieve_location_uid: str
    study: str
    series: str | None = None
    instance: str | None = None
    tail: str | None = None  # 'rendered' or 'metadata'
    frames: str | None = None  # validated frame list, e.g. "1,3"
    bulk: tuple[str, str] | None = None  # ('bulkdata' | 'bulk', tag path)

    @classmethod
    def parse(cls, path: str) -> XcWadoPath:
        segs = [s for s in path.split("/") if s]
        if len(segs) < 6 or segs[0] != "homeCommunityId" or segs[2] != "RetrieveLocationUID":
            raise InvalidRequest(
                "expected homeCommunityId/{oid}/RetrieveLocationUID/{uid}/studies/{study}[...] (RAD-160)"
            )
        if segs[4] not in ("studies", "study"):
            raise InvalidRequest(f"unexpected resource {segs[4][:64]!r}; expected 'studies' (or 'study')")
        oid = validate_oid(segs[1], "homeCommunityId")
        rluid = validate_uid(segs[3], "RetrieveLocationUID")
        study = validate_uid(segs[5], "Study Instance UID")
        rest = segs[6:]
        tail = rest.pop() if rest and rest[-1] in _TAILS else None
        series = _level(rest, "series")
        instance = _level(rest, "instances") if series else None
        frames = _frame_list(rest) if instance and rest[:1] == ["frames"] else None
        bulk = _bulk(rest) if instance and rest[:1] and rest[0] in _BULK else None
        if rest:
            raise InvalidRequest(f"unexpected path segments {'/'.join(rest)[:64]!r} (RAD-160, PS3.18 10.4)")
        if (bulk and tail) or (frames and tail == "metadata"):
            raise InvalidRequest(f"no '{tail}' resource under {'bulk data' if bulk else 'frames'}")
        return cls(oid, rluid, study, series, instance, tail, frames, bulk)

    @property
    def for_viewers(self) -> bool:
        """Beyond MADO Appendix XA: frames (also rendered) and bulk data (topology ``viewer_resources``)."""
        return self.frames is not None or self.bulk is not None

    def resource(self) -> str:
        """The DICOMweb resource part:
        ``studies/{s}[/series/{se}[/instances/{i}[/frames/{f}|/bulkdata/{t}]]][/tail]``."""
        parts = ["studies", self.study]
        if self.series:
            parts += ["series", self.series]
        if self.instance:
            parts += ["instances", self.instance]
        if self.frames:
            parts += ["frames", self.frames]
        if self.bulk:
            parts += list(self.bulk)
        if self.tail:
            parts.append(self.tail)
        return "/".join(parts)

    def location(self) -> str:
        return f"homeCommunityId/{self.home_community_id}/RetrieveLocationUID/{self.retrieve_location_uid}"

    def xc_path(self) -> str:
        return f"{self.location()}/{self.resource()}"


def _level(rest: list[str], level: str) -> str | None:
    """Take ``{level}/{uid}`` off the front of ``rest`` when it starts with ``level``."""
    if rest[:1] != [level]:
        return None
    if len(rest) < 2:
        raise InvalidRequest(f"expected '{level}/{{uid}}'")
    uid = validate_uid(rest[1], f"{level} UID")
    del rest[:2]
    return uid


def _frame_list(rest: list[str]) -> str:
    """PS3.18 10.4.1.1.3: a comma-separated list of 1-based frame numbers, at most ``_MAX_FRAMES``."""
    value = rest[1] if len(rest) > 1 else ""
    if value.count(",") >= _MAX_FRAMES:
        raise InvalidRequest(f"at most {_MAX_FRAMES} frame numbers per request")
    if _FRAME_LIST.fullmatch(value) is None:
        raise InvalidRequest(f"frame list {value[:64]!r}: expected 1-based frame numbers separated by commas")
    del rest[:2]
    return value


def _bulk(rest: list[str]) -> tuple[str, str]:
    """A bulk data tag path ``tag(/item/tag)*`` (the rest of the path), nested at most ``_MAX_DEPTH``."""
    keyword, path = rest[0], rest[1:]
    valid = len(path) % 2 == 1 and len(path) <= 2 * _MAX_DEPTH - 1
    if not valid or not all((_TAG if i % 2 == 0 else _ITEM).fullmatch(s) for i, s in enumerate(path)):
        shown = "/".join(path)[:64]
        raise InvalidRequest(f"bulk data path {shown!r}: expected tag(/item/tag)*, 8-hex-digit tags")
    del rest[:]
    return keyword, "/".join(path)


def _query(items: Iterable[tuple[str, str]]) -> tuple[str | None, dict[str, str]]:
    """Split the query into retrieveURL (either spelling) and the other parameters."""
    retrieve_url = None
    others = {}
    for key, value in items:
        if key.lower() == "retrieveurl":
            if retrieve_url is not None:
                raise InvalidRequest("retrieveURL given more than once")
            retrieve_url = value
        elif key.lower() in _CREDENTIALS or key.lower().startswith("saml"):
            # forwarded, it would carry a credential of country B to country A and its PACS
            raise InvalidRequest(f"query parameter {key!r}: credentials go in the Authorization header")
        else:
            others[key] = value
    return retrieve_url, others


@dataclass(frozen=True)
class NextHop:
    """Where an XC-WADO request goes next, decided (and every check made) before any upstream call; the
    Python data plane and the nginx front (:mod:`ncp.gateway.front`) both follow it."""

    url: str
    headers: dict[str, str]  # what this hop adds to the forwarded Accept and Range
    peer: str | None = None  # initiating: the country whose border it reaches
    base: str = ""  # responding: the PACS base ``url`` starts with
    public: str = ""  # responding: the base the answer's URLs must name instead


def initiating_next_hop(
    hop: Hop, claims: Claims | None, xc: XcWadoPath, query: Iterable[tuple[str, str]]
) -> NextHop:
    """RAD-160 initiating: homeCommunityId -> that community's responding gateway (prefix swap only)."""
    retrieve_url, params = _query(query)
    country = hop.settings.topology.by_home_community(xc.home_community_id)
    if country is None:
        raise NotFound(f"Unknown homeCommunityId {xc.home_community_id}")
    border = hop.settings.endpoints[country.code].border
    if retrieve_url is not None:
        params = {"retrieveURL": retrieve_url, **params}
    url = f"{border}/wado-rs/{xc.xc_path()}" + (f"?{urlencode(params)}" if params else "")
    public = forwarded_headers(_gateway_base(hop.settings.my_endpoints, xc))
    return NextHop(url, {**hop.guard.assertion_for(claims, country.code), **public}, peer=country.code)


async def responding_next_hop(
    hop: Hop, claims: Claims | None, xc: XcWadoPath, query: Sequence[tuple[str, str]], named: str | None
) -> NextHop:
    """RAD-160 responding: this community only, the asserted patient's study only, Retrieve Location UID
    (or an allowlisted ``retrieveURL``) -> PACS; ``named`` is the public base the request names."""
    nxt = responding_next_hop_now(hop, claims, xc, query, named)
    if nxt is None:
        await hop.guard.require_ownership(claims, xc.study, lambda patient, study: _owns(hop, patient, study))
        nxt = responding_next_hop_now(hop, claims, xc, query, named, owned=True)
    assert nxt is not None
    return nxt


def responding_next_hop_now(
    hop: Hop,
    claims: Claims | None,
    xc: XcWadoPath,
    query: Sequence[tuple[str, str]],
    named: str | None,
    *,
    owned: bool = False,
) -> NextHop | None:
    """:func:`responding_next_hop` when it needs no wait: None when the registries must first be asked
    whether the study is the asserted patient's (unless ``owned``: they have just said so)."""
    retrieve_url, params = _query(query)
    settings = hop.settings
    if xc.home_community_id != settings.me.home_community_id:
        raise NotFound(f"homeCommunityId {xc.home_community_id} is not this community's")
    if not (owned or hop.guard.owned(claims, xc.study)):
        return None
    if retrieve_url is not None:
        allowed = match_retrieve_url(retrieve_url, settings.allowed_bases())
        if allowed is None:
            raise Forbidden("retrieveURL is not an allowlisted imaging source of this community")
        base = allowed.url
    else:
        found = settings.pacs_base(xc.retrieve_location_uid)
        if found is None:
            raise NotFound(f"Unknown RetrieveLocationUID {xc.retrieve_location_uid}")
        base = found if found.endswith("/") else found + "/"
    url = base + xc.resource() + (f"?{urlencode(params)}" if params else "")
    # URLs in the answer name the consumer's gateway, or this border, never the PACS; both come from
    # configuration: a named base that is not a configured gateway's is ignored, whoever sends it.
    gateways = {_gateway_base(ep, xc) for ep in settings.endpoints.countries.values()}
    public = named if named in gateways else f"{settings.my_endpoints.border}/wado-rs/{xc.location()}"
    return NextHop(url, forwarded_headers(public), base=base, public=public)


async def initiating_imaging_gateway(request: Request) -> Response:
    hop = Hop.of(request)
    claims = hop.guard.consumer(request)
    xc = parse_request(hop, request.path_params["path"], request.headers.get("accept", ""))
    nxt = initiating_next_hop(hop, claims, xc, request.query_params.multi_items())
    headers = hop.outbound_headers(request, _FORWARDED, nxt.headers)
    _, upstream = hop.clients.peer(nxt.peer or "")
    return _warned(await relay(upstream, nxt.url, headers, hop=hop.name, request_id=hop.request_id), hop.name)


async def responding_imaging_gateway(request: Request) -> Response:
    hop = Hop.of(request)
    claims = hop.guard.peer(request)
    xc = parse_request(hop, request.path_params["path"], request.headers.get("accept", ""))
    query = request.query_params.multi_items()
    nxt = await responding_next_hop(hop, claims, xc, query, public_base(request.headers))
    headers = hop.outbound_headers(request, _FORWARDED, nxt.headers)
    # Orthanc writes its own configured host into metadata, so a metadata answer is rebased too (it is
    # JSON, never an image payload).
    rebase = (nxt.base, nxt.public + "/") if xc.tail == "metadata" else None
    answer = await relay(
        hop.upstream, nxt.url, headers, hop=hop.name, request_id=hop.request_id, rebase=rebase
    )
    if xc.for_viewers:  # Orthanc names itself in each frame's Content-Location
        _rebase_part_headers(answer, nxt.base.encode(), f"{nxt.public}/".encode())
    return _warned(answer, hop.name)


def _rebase_part_headers(answer: Response, internal: bytes, public: bytes) -> None:
    """Name ``public`` instead of ``internal`` in the part headers (PS3.18 8.7.3 ``Content-Location``) of a
    multipart answer as it streams; part bodies pass untouched. Its length may change: sent chunked."""
    boundary = _boundary(answer)
    if boundary is None or not isinstance(answer, StreamingResponse):
        return
    answer.body_iterator = _part_headers_rebased(answer.body_iterator, b"--" + boundary, internal, public)
    answer.raw_headers = [(k, v) for k, v in answer.raw_headers if k != b"content-length"]


def _boundary(answer: Response) -> bytes | None:
    kind = Message()
    kind["content-type"] = next(
        (v.decode("latin-1") for k, v in answer.raw_headers if k == b"content-type"), ""
    )
    boundary = kind.get_param("boundary") if kind.get_content_maintype() == "multipart" else None
    return boundary.encode("latin-1") if isinstance(boundary, str) and boundary.isascii() else None


async def _part_headers_rebased(
    body: AsyncIterable[str | bytes | memoryview], delimiter: bytes, internal: bytes, public: bytes
) -> AsyncIterator[bytes]:
    """Scan for ``delimiter``: each part's header block (to CRLF CRLF, at most ``_MAX_PART_HEADERS`` bytes)
    is rewritten whole; the rest is passed on, holding back only what may be the start of a delimiter."""
    pending, in_headers = b"", False
    async for chunk in body:
        pending += bytes(chunk) if not isinstance(chunk, str) else chunk.encode()
        out: list[bytes] = []
        while pending:
            if in_headers:
                end = pending.find(b"\r\n\r\n")
                if end < 0 and len(pending) <= _MAX_PART_HEADERS:
                    break
                cut = end + 4 if end >= 0 else len(pending)  # an oversized block passes as it is
                out.append(pending[:cut].replace(internal, public))
                pending, in_headers = pending[cut:], False
            else:
                at = pending.find(delimiter)
                if at < 0:
                    keep = min(len(pending), len(delimiter) - 1)
                    out.append(pending[: len(pending) - keep])
                    pending = pending[len(pending) - keep :]
                    break
                out.append(pending[: at + len(delimiter)])
                pending, in_headers = pending[at + len(delimiter) :], True
        if out:
            yield b"".join(out)
    if pending:
        yield pending


def _warned(answer: Response, agent: str) -> Response:
    """An error answer carries a ``Warning`` (PS3.18 8.6.2); a next hop that sends none (Orthanc does not)
    gets one from this hop, so the consumer always learns whose refusal it is."""
    if answer.status_code >= 400 and all(name != b"warning" for name, _ in answer.raw_headers):
        text = warning_header(agent, f"the next hop answered {answer.status_code} without a reason")
        answer.raw_headers.append((b"warning", text.encode("latin-1")))
    return answer


def parse_request(hop: Hop, path: str, accept: str) -> XcWadoPath:
    """The request's XC-WADO path, refused (before any upstream call) when this country does not offer
    the resource or the ``Accept`` is beyond any viewer's: it is forwarded to every next hop."""
    xc = XcWadoPath.parse(path)
    if xc.for_viewers and not hop.settings.me.viewer_resources:
        raise NotFound("frames and bulk data are not offered here (topology viewer_resources = false)")
    if len(accept) > _MAX_ACCEPT:
        raise InvalidRequest(f"Accept header over {_MAX_ACCEPT} characters")
    return xc


def _gateway_base(endpoints: CountryEndpoints, xc: XcWadoPath) -> str:
    """The RAD-160 base at a country's gateway as its consumers reach it (configured public base)."""
    return f"{endpoints.public_base}/wado/{xc.location()}"


async def _owns(hop: Hop, patient: PatientRef, study: str) -> bool:
    """Whether one of this country's registries lists the study for the patient (current manifests)."""
    params = [
        ("patient.identifier", patient.search_token()),
        ("status", "current"),
        ("study-instance-uid", study),
        ("_count", "1"),
    ]
    for base in hop.settings.my_endpoints.registries.values():
        answer = await fhir_get(hop, f"{base}/DocumentReference", params)
        if answer.status == 200 and answer.body.get("total", len(answer.body.get("entry", []))):
            return True
    return False


def match_retrieve_url(value: str, allowed: tuple[AllowedBase, ...]) -> AllowedBase | None:
    """The allowlisted base a ``retrieveURL`` designates, or None.

    The value is never used to connect: only the matching allowlist entry is. Anything
    ambiguous (userinfo, backslashes, percent-escapes, dot segments, non-ASCII, control
    characters, odd schemes or ports) matches nothing.
    """
    if not value or len(value) > 2048 or not value.isascii() or any(c in value for c in "\\@%\t\r\n #?"):
        return None
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        return None
    scheme: str | None = None
    if "://" in value:
        scheme, _, rest = value.partition("://")
        scheme = scheme.lower()
        if scheme not in ("http", "https"):
            return None
    else:
        rest = value
    try:
        parts = urlsplit("//" + rest)
        port = parts.port
    except ValueError:  # e.g. a bracketed host that is no IPv6 address
        return None
    host = (parts.hostname or "").lower()
    path = parts.path or "/"
    if not host or unquote(path) != path or posixpath.normpath(path) + "/" not in (path, path + "/"):
        return None
    if not path.endswith("/"):
        path += "/"
    for base in allowed:
        default_port = 443 if (scheme or "https") == "https" else 80
        if (
            base.host == host
            and base.port == (port if port is not None else default_port)
            and (scheme is None or scheme == base.scheme)
            and path.startswith(base.path)
        ):
            return base
    return None
