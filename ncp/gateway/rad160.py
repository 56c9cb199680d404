"""XC-WADO, IHE RAD-160 (MADO Appendix XA): the Initiating and Responding Imaging Gateways.

Initiating (country B, consumer-facing)::

    GET {B}/wado/homeCommunityId/{oid}/RetrieveLocationUID/{rluid}/studies/{s}[/series/{se}[/instances/{i}]]
        [/rendered|/metadata][?retrieveURL=host/path/]

is mapped by homeCommunityId to the responding gateway of that community (prefix swap only)::

    GET {A}/wado-rs/homeCommunityId/{oid}/RetrieveLocationUID/{rluid}/studies/...

which checks the community is its own and maps the Retrieve Location UID (or an allowlisted
``retrieveURL``) to a PACS, then issues RAD-107 ``{P}/studies/...``. Both spellings of the
appendix are accepted (``study/``|``studies/``, ``retrieveurl``|``retrieveURL``). Unknown
communities and Retrieve Location UIDs are refused with 404 + ``Warning`` before any upstream call.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from urllib.parse import unquote, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import Response

from ncp.dicom.uids import validate_oid, validate_uid
from ncp.errors import Forbidden, InvalidRequest, NotFound
from ncp.forwarded import forwarded_headers, public_base
from ncp.gateway.context import Hop
from ncp.gateway.fhir import fhir_get
from ncp.gateway.proxy import relay
from ncp.gateway.settings import AllowedBase
from ncp.security.tokens import PatientRef
from ncp.topology import CountryEndpoints

__all__ = ["XcWadoPath", "initiating_imaging_gateway", "match_retrieve_url", "responding_imaging_gateway"]

_LEVELS = ("series", "instances")
_TAILS = ("rendered", "metadata")
_FORWARDED = frozenset({"accept", "range"})
_CREDENTIALS = frozenset(
    {"access_token", "id_token", "token", "assertion", "client_assertion", "jwt", "code"}
)


@dataclass(frozen=True)
class XcWadoPath:
    """The validated parts of an XC-WADO request path."""

    home_community_id: str
    retrieve_location_uid: str
    study: str
    series: str | None = None
    instance: str | None = None
    tail: str | None = None  # 'rendered' or 'metadata'

    @classmethod
    def parse(cls, path: str) -> XcWadoPath:
        segs = [s for s in path.split("/") if s]
        if len(segs) < 6 or segs[0] != "homeCommunityId" or segs[2] != "RetrieveLocationUID":
            raise InvalidRequest(
                "expected homeCommunityId/{oid}/RetrieveLocationUID/{uid}/studies/{study}[...] (RAD-160)"
            )
        if segs[4] not in ("studies", "study"):
            raise InvalidRequest(f"unexpected resource {segs[4]!r}; expected 'studies' (or 'study')")
        oid = validate_oid(segs[1], "homeCommunityId")
        rluid = validate_uid(segs[3], "RetrieveLocationUID")
        study = validate_uid(segs[5], "Study Instance UID")
        uids: list[str] = []
        rest = segs[6:]
        tail = None
        if rest and rest[-1] in _TAILS:
            tail = rest.pop()
        for level, i in zip(_LEVELS, range(0, len(rest), 2), strict=False):
            if rest[i] != level or i + 1 >= len(rest):
                raise InvalidRequest(f"expected '{level}/{{uid}}' after {'/'.join(segs[4 : 6 + i])}")
            uids.append(validate_uid(rest[i + 1], f"{level} UID"))
        if len(rest) > 2 * len(_LEVELS) or len(rest) % 2:
            raise InvalidRequest("unexpected path segments after the instance UID")
        series = uids[0] if uids else None
        instance = uids[1] if len(uids) > 1 else None
        return cls(oid, rluid, study, series, instance, tail)

    def resource(self) -> str:
        """The DICOMweb resource part: ``studies/{s}[/series/{se}[/instances/{i}]][/tail]``."""
        parts = ["studies", self.study]
        if self.series:
            parts += ["series", self.series]
        if self.instance:
            parts += ["instances", self.instance]
        if self.tail:
            parts.append(self.tail)
        return "/".join(parts)

    def location(self) -> str:
        return f"homeCommunityId/{self.home_community_id}/RetrieveLocationUID/{self.retrieve_location_uid}"

    def xc_path(self) -> str:
        return f"{self.location()}/{self.resource()}"


def _query(request: Request) -> tuple[str | None, dict[str, str]]:
    """Split the query into retrieveURL (either spelling) and the other parameters."""
    retrieve_url = None
    others = {}
    for key, value in request.query_params.multi_items():
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


async def initiating_imaging_gateway(request: Request) -> Response:
    hop = Hop.of(request)
    claims = hop.guard.consumer(request)
    xc = XcWadoPath.parse(request.path_params["path"])
    retrieve_url, params = _query(request)
    country = hop.settings.topology.by_home_community(xc.home_community_id)
    if country is None:
        raise NotFound(f"Unknown homeCommunityId {xc.home_community_id}")
    border = hop.settings.endpoints[country.code].border
    if retrieve_url is not None:
        params = {"retrieveURL": retrieve_url, **params}
    url = f"{border}/wado-rs/{xc.xc_path()}" + (f"?{urlencode(params)}" if params else "")
    public = forwarded_headers(_gateway_base(hop.settings.my_endpoints, xc))
    headers = hop.outbound_headers(
        request, _FORWARDED, {**hop.guard.assertion_for(claims, country.code), **public}
    )
    _, upstream = hop.clients.peer(country.code)
    return await relay(upstream, url, headers, hop=hop.name, request_id=hop.request_id)


async def responding_imaging_gateway(request: Request) -> Response:
    hop = Hop.of(request)
    claims = hop.guard.peer(request)
    xc = XcWadoPath.parse(request.path_params["path"])
    retrieve_url, params = _query(request)
    settings = hop.settings
    if xc.home_community_id != settings.me.home_community_id:
        raise NotFound(f"homeCommunityId {xc.home_community_id} is not this community's")
    await hop.guard.require_ownership(claims, xc.study, lambda patient, study: _owns(hop, patient, study))
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
    # Orthanc writes its own configured host into metadata, so a metadata answer is rebased too (it is
    # JSON, never an image payload).
    named = public_base(request.headers)
    gateways = {_gateway_base(ep, xc) for ep in settings.endpoints.countries.values()}
    public = named if named in gateways else f"{settings.my_endpoints.border}/wado-rs/{xc.location()}"
    headers = hop.outbound_headers(request, _FORWARDED, forwarded_headers(public))
    rebase = (base, public + "/") if xc.tail == "metadata" else None
    return await relay(hop.upstream, url, headers, hop=hop.name, request_id=hop.request_id, rebase=rebase)


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
