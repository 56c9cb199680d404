"""Regions for the XCA tests: a Responding Gateway per community with a recorder on the wire in front."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from xds_support import (
    PATIENT_ISSUER,
    REPOSITORY,
    Answer,
    post,
    read_answer,
    study_documents,
    submission_request,
)

from ncp.model import ReportRecord, StudyRecord
from ncp.registry.xca.responding import create_responding_app
from ncp.registry.xca.settings import Community
from ncp.registry.xds import iti41
from ncp.registry.xds.settings import XdsSettings
from ncp.soapcore import NS

NORTH = "2.999.250.1.1"
SOUTH = "2.999.250.1.2"
COUNTRY = "2.999.250.1"


@dataclass
class Exchange:
    """One request that crossed the wire and its answer."""

    action: str
    request: etree._Element  # the SOAP Body's child
    answer: Answer
    security: etree._Element | None = None  # the request's wsse:Security header (XUA), if any


@dataclass
class Wire:
    exchanges: list[Exchange] = field(default_factory=list)
    fault: Callable[[], Response] | None = None  # answer this instead of forwarding


@dataclass
class Region:
    name: str
    home_community_id: str
    base: str  # the recorder in front of the Responding Gateway
    direct: str  # the Responding Gateway itself
    wire: Wire
    documents: dict[str, bytes]  # uniqueId -> bytes as published

    @property
    def home(self) -> str:
        return f"urn:oid:{self.home_community_id}"

    def community(self) -> Community:
        return Community(self.name, self.home_community_id, self.base)


def recorder(target: str, wire: Wire) -> Starlette:
    """Forwards every POST to ``target`` (same path), keeping both ways; or answers ``wire.fault``."""

    async def forward(request: Request) -> Response:
        body = await request.body()
        if wire.fault is not None:
            return wire.fault()
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.post(
                f"{target}{request.url.path}",
                content=body,
                headers={"content-type": request.headers["content-type"]},
            )
        envelope = etree.fromstring(body)
        action = str(envelope.findtext(f"{{{NS['s']}}}Header/{{{NS['wsa']}}}Action"))
        security = envelope.find(f"{{{NS['s']}}}Header/{{{NS['wsse']}}}Security")
        request_body = envelope.find(f"{{{NS['s']}}}Body")[0]  # type: ignore[index]
        wire.exchanges.append(Exchange(action, request_body, read_answer(answer), security))
        return Response(
            answer.content, answer.status_code, headers={"content-type": answer.headers["content-type"]}
        )

    return Starlette(routes=[Route("/{path:path}", forward, methods=["POST"])])


def start_region(
    serve: Callable[..., str],
    tmp_path: Path,
    http: httpx.Client,
    home_community_id: str,
    studies: list[tuple[StudyRecord, ReportRecord | None]],
    **overrides: Any,
) -> Region:
    """A region seeded with ITI-41 (without XUA: with trust anchors, give ``xua_system_submissions``);
    ``overrides``: more XdsSettings (XUA trust, audit)."""
    settings = XdsSettings(
        tmp_path / home_community_id / "xds.sqlite",
        home_community_id,
        REPOSITORY,
        PATIENT_ISSUER,
        **overrides,
    )
    direct = serve(create_responding_app(settings))
    documents: dict[str, bytes] = {}
    for study, report in studies:
        docs = study_documents(study, report)
        body, parts = submission_request(docs)
        answer = post(http, f"{direct}/xds/repository", body, iti41.ACTION, parts)
        assert answer.body.get("status", "").endswith(":Success"), answer.errors()
        documents |= {entry.unique_id: data for entry, data in docs}
    wire = Wire()
    name = "north" if home_community_id == NORTH else "south"
    return Region(name, home_community_id, serve(recorder(direct, wire)), direct, wire, documents)
