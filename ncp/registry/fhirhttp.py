"""FHIR-over-HTTP plumbing of the registry: the per-app context, JSON bodies and responses."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ncp.errors import InvalidRequest, NotAcceptable, PayloadTooLarge, UnsupportedMediaType
from ncp.registry.settings import RegistrySettings
from ncp.registry.store import Store

__all__ = [
    "FHIR_JSON",
    "Registry",
    "check_format",
    "fhir_response",
    "read_json_body",
    "render_document",
    "validate_id",
]

FHIR_JSON = "application/fhir+json"
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_JSON_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})
_JSON_FORMATS = frozenset({"json", *_JSON_TYPES})


@dataclass(frozen=True)
class Registry:
    """What every handler needs; lives on ``app.state`` (no module-level state)."""

    settings: RegistrySettings
    store: Store

    @classmethod
    def of(cls, request: Request) -> Registry:
        registry = request.app.state.registry
        assert isinstance(registry, Registry)
        return registry

    @property
    def base(self) -> str:
        return self.settings.public_base_url.rstrip("/")


def validate_id(value: str, what: str) -> str:
    if not _FHIR_ID.fullmatch(value):
        raise InvalidRequest(f"{what} {value[:80]!r} is not a valid FHIR id ([A-Za-z0-9-.]{{1,64}})")
    return value


def check_format(request: Request) -> None:
    """Only JSON is offered; ``_format`` asking for anything else is 406 (FHIR http 3.1.0.1.10)."""
    for value in request.query_params.getlist("_format"):
        if value.split(";")[0].strip().lower() not in _JSON_FORMATS:
            raise NotAcceptable(f"_format={value!r}: this registry answers application/fhir+json only")


def fhir_response(
    body: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(json.dumps(body), status_code=status, media_type=FHIR_JSON, headers=dict(headers or {}))


async def read_json_body(request: Request, limit: int) -> dict[str, Any]:
    """The request's FHIR JSON resource, bounded by ``limit`` bytes before parsing."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in _JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {media_type or '(none)'!r}: send application/fhir+json (XML is not supported)"
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (ValueError, RecursionError):
        raise InvalidRequest("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("body is not a FHIR resource (a JSON object)")
    return body


def render_document(resource: dict[str, Any], base: str) -> dict[str, Any]:
    """A stored DocumentReference as served: relative ``Binary/{id}`` URLs made absolute under ``base``.

    URLs are stored relative so a registry that moves (new port, new host) serves correct links.
    """
    out = dict(resource)
    contents = []
    for content in resource.get("content", []):
        attachment = dict(content.get("attachment", {}))
        url = attachment.get("url")
        if isinstance(url, str) and url.startswith("Binary/"):
            attachment["url"] = f"{base}/{url}"
        contents.append({**content, "attachment": attachment})
    out["content"] = contents
    return out
