"""The country's XCA Initiating Gateway, grouped with an MHD Document Responder (MHD Vol 1, "XCA" grouping).

NCP-A's responding gateway asks one FHIR base for the whole architecture-B country, as any registry
(``ncp.registry.xds.mhd``'s routes, ITI TF-3 4.5.1.1 mapping). Behind it:

- a search (ITI-67, PDQm) is ITI-38 to every region's Responding Gateway at once, each request naming the
  community it is for (``AdhocQuery@home``); answers are merged. A region that is down, too slow, answers
  a Fault, a Failure or unreadable metadata is left out and reported (XCA's PartialSuccess with
  XDSUnavailableCommunity, ITI TF-2b 3.38.4.1.3): an OperationOutcome entry (``search.mode = outcome``)
  naming the region and its homeCommunityId. Only when no region answers is the search a 502 (504 when
  every one timed out).
- a DocumentReference read or a Binary (ITI-68) is ITI-38 GetDocuments to every community (its home
  named), then ITI-39 to the community whose ``home`` the entry carries.

XUA (ITI-40): the assertion NCP-A's gateway hands over in ``X-XUA-Assertion`` travels in ``wsse:Security`` of
every ITI-38 and ITI-39 message (as the XDS facade's ITI-18/43), for the Responding Gateways to verify.

Every DocumentReference names NCP-A's community (``InitiatingSettings.home_community_id``): a consumer
abroad routes RAD-160 by community to the NCP, and the regional communities stay internal to the country.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace

import httpx
from lxml import etree
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ncp.bodytimeout import BodyTimeout
from ncp.errors import NcpError, NotFound, UpstreamError, UpstreamTimeout, fhir_exception_handlers
from ncp.registry.xca import iti38, iti39
from ncp.registry.xca.rad75 import closing_lifespan
from ncp.registry.xca.settings import Community, InitiatingSettings, query_url, retrieve_url
from ncp.registry.xds.consumer import soap_headers
from ncp.registry.xds.ebrim import DocumentEntry, XdsError
from ncp.registry.xds.mhd import BridgeSettings, Found, NotAnswered, Params, facade_routes, serve_facade
from ncp.soapcore import post_soap, registry_errors

__all__ = ["CrossCommunitySource", "create_initiating_app"]

_NOT_HELD = frozenset({"XDSDocumentUniqueIdError"})


def create_initiating_app(settings: InitiatingSettings, extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The MHD facade over every community, ``/health``, and ``extra_routes`` (RAD-75, whose handlers
    find the communities as ``request.app.state.xca``, a :class:`CrossCommunitySource`)."""
    bridge = BridgeSettings(
        public_base_url=settings.public_base_url,
        registry_url="",  # no registry of its own: every query is ITI-38
        repository_url="",
        timeout_s=settings.timeout_s,
        max_message_bytes=settings.max_message_bytes,
        home_community_id=settings.home_community_id,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        timeout = httpx.Timeout(settings.timeout_s, connect=5.0)
        async with httpx.AsyncClient(timeout=timeout) as client, closing_lifespan(app):
            app.state.xca = CrossCommunitySource(client, settings)
            serve_facade(app, bridge, app.state.xca)
            yield

    return Starlette(
        routes=[Route("/health", _health, methods=["GET"]), *extra_routes, *facade_routes()],
        middleware=[Middleware(BodyTimeout)],
        exception_handlers=fhir_exception_handlers(),
        lifespan=lifespan,
    )


class CrossCommunitySource:
    """Every region's Responding Gateway, reached with one pooled client (an ``mhd.DocumentSource``)."""

    def __init__(self, client: httpx.AsyncClient, settings: InitiatingSettings) -> None:
        self.client = client
        self.settings = settings

    async def find(self, query_id: str, params: Params, headers: Mapping[str, str]) -> Found:
        communities = self.settings.communities
        out, security = soap_headers(headers)  # an unreadable assertion is the caller's 400, asked of nobody
        answers = await asyncio.gather(
            *(self._query(c, query_id, params, out, security) for c in communities), return_exceptions=True
        )
        entries: list[DocumentEntry] = []
        failed: list[tuple[Community, BaseException]] = []
        for community, answer in zip(communities, answers, strict=True):
            if isinstance(answer, NcpError | XdsError):
                failed.append((community, answer))
            elif isinstance(answer, BaseException):
                raise answer
            else:
                entries += answer
        if failed and len(failed) == len(communities):
            raise _nobody_answered(failed)
        return Found(entries, tuple(NotAnswered(_name(c), _why(exc)) for c, exc in failed))

    async def _query(
        self,
        community: Community,
        query_id: str,
        params: Params,
        headers: Mapping[str, str],
        security: etree._Element | None,
    ) -> list[DocumentEntry]:
        """One community's entries, each routed back to it (``home``); a Failure raises."""
        env = await post_soap(
            self.client,
            query_url(community.base),
            iti38.request(community.home, query_id, params),
            iti38.ACTION,
            headers=headers,
            max_bytes=self.settings.max_message_bytes,
            security=security,
        )
        answer = iti38.read_answer(env.body)
        if answer.failed:
            raise XdsError("XDSRegistryError", _codes(answer.errors) or "Failure without an error")
        return [replace(e, home_community_id=community.home) for e in answer.entries]

    async def retrieve(self, entry: DocumentEntry, headers: Mapping[str, str]) -> bytes:
        """ITI-39 to the entry's community; a document it no longer holds is 404."""
        community = next((c for c in self.settings.communities if c.home == entry.home_community_id), None)
        if community is None:
            raise NotFound(f"no community {entry.home_community_id!r} behind this gateway")
        out, security = soap_headers(headers)
        try:
            env = await post_soap(
                self.client,
                retrieve_url(community.base),
                iti39.request(community.home, entry.repository_unique_id, entry.unique_id),
                iti39.ACTION,
                headers=out,
                max_bytes=self.settings.max_message_bytes,
                security=security,
            )
        except UpstreamError as exc:
            raise type(exc)(f"{_name(community)} {exc.message}") from None
        data = iti39.document(env.body, env.attachments, entry.unique_id)
        if data is not None:
            return data
        errors = registry_errors(env.body)
        if errors and {code for code, _, _ in errors} <= _NOT_HELD:
            raise NotFound(f"{_name(community)} does not hold the document ({_codes(errors)})")
        raise UpstreamError(f"{_name(community)} refused ITI-39 ({_codes(errors) or 'no document'})")


def _name(community: Community) -> str:
    return f"region {community.name!r} (homeCommunityId {community.home_community_id})"


def _why(exc: BaseException) -> str:
    return exc.message if isinstance(exc, NcpError) else f"answered {exc}"  # an XdsError: its code first


def _codes(errors: list[tuple[str, str, str]]) -> str:
    return "; ".join(f"{code} at {location}: {context}" for code, context, location in errors)


def _nobody_answered(failed: list[tuple[Community, BaseException]]) -> UpstreamError:
    text = "; ".join(f"{_name(c)} did not answer: {_why(exc)}" for c, exc in failed)
    if all(isinstance(exc, UpstreamTimeout) for _, exc in failed):
        return UpstreamTimeout(f"no community answered in time: {text}")
    return UpstreamError(f"no community answered: {text}")


async def _health(request: Request) -> Response:
    source: CrossCommunitySource = request.app.state.xca
    settings = source.settings
    body = {
        "status": "ok",
        "home_community_id": settings.home_community_id,
        "communities": {c.name: c.home_community_id for c in settings.communities},
    }
    return Response(json.dumps(body), media_type="application/json")
