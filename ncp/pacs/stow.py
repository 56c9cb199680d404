"""STOW-RS Store Instances (PS3.18 10.5): ``POST /studies[/{study}]`` with multipart/related DICOM.

The body is decoded as it arrives (memory bounded by the largest part) and counted against
``max_stow_bytes`` (413 beyond, checked on Content-Length first). Each part is staged by the
store in a worker thread; a part it refuses becomes an item of FailedSOPSequence (0008,1198)
with its Failure Reason, the others of ReferencedSOPSequence (0008,1199). Only a complete
message is committed: a truncated body (400) or an oversized one (413) leaves the store
unchanged. Status (PS3.18 Table 10.5.3-1): 200 all stored, 202 some failed; none stored is 400
when every part was unreadable (failure reason 0xC000: "bad syntax") and 409 otherwise (a conflict
such as another study than the target, an unsupported transfer syntax, or a mixture of reasons).
A Warning header gives the reasons in words.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ncp.dicom.media import MediaType, negotiate, parse_media_type
from ncp.dicom.multipart import DecodedPart, MultipartDecoder
from ncp.dicom.uids import validate_uid
from ncp.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType, warning_header
from ncp.pacs.context import PacsContext, dicomweb_base, header_safe, instance_url
from ncp.pacs.store import FAILURE_CANNOT_UNDERSTAND, StagedInstance, StoreFailure

__all__ = ["stow_routes"]

_MAX_WARNED = 10


@dataclass
class _Outcome:
    staged: list[StagedInstance] = field(default_factory=list)
    failed: list[tuple[int, StoreFailure]] = field(default_factory=list)  # (part number, failure)

    @property
    def parts(self) -> int:
        return len(self.staged) + len(self.failed)


def _check_content_type(value: str | None) -> None:
    if not value:
        raise UnsupportedMediaType('STOW-RS needs Content-Type: multipart/related; type="application/dicom"')
    media_type, params = parse_media_type(value)
    part_type = params.get("type", MediaType.DICOM).strip().lower()
    if media_type != MediaType.MULTIPART_RELATED or part_type != MediaType.DICOM:
        raise UnsupportedMediaType(
            f'{value[:120]!r} not supported; send multipart/related; type="application/dicom" (PS3.18 10.5.2)'
        )


def _check_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the {limit}-byte STOW-RS bound")


def _item(*pairs: tuple[str, str, Any]) -> dict[str, Any]:
    return {tag: ({"vr": vr, "Value": [v]} if v not in (None, "") else {"vr": vr}) for tag, vr, v in pairs}


def _response_body(outcome: _Outcome, base: str, study: str | None) -> dict[str, Any]:
    """PS3.18 10.5.3.3 response payload in DICOM JSON."""
    body: dict[str, Any] = {}
    studies = {s.instance.study_uid for s in outcome.staged}
    target = study or (next(iter(studies)) if len(studies) == 1 else None)
    if target is not None and outcome.staged:
        body["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{target}"]}
    if outcome.failed:
        body["00081198"] = {
            "vr": "SQ",
            "Value": [
                _item(
                    ("00081150", "UI", f.sop_class_uid),
                    ("00081155", "UI", f.sop_instance_uid),
                    ("00081197", "US", f.reason),
                )
                for _, f in outcome.failed
            ],
        }
    if outcome.staged:
        body["00081199"] = {
            "vr": "SQ",
            "Value": [
                _item(
                    ("00081150", "UI", s.instance.sop_class_uid),
                    ("00081155", "UI", s.instance.sop_uid),
                    ("00081190", "UR", instance_url(base, s.instance)),
                )
                for s in outcome.staged
            ],
        }
    return body


def _status(outcome: _Outcome) -> int:
    """PS3.18 Table 10.5.3-1."""
    if outcome.staged:
        return 202 if outcome.failed else 200
    unreadable = all(f.reason == FAILURE_CANNOT_UNDERSTAND for _, f in outcome.failed)
    return 400 if unreadable else 409


def stow_routes(ctx: PacsContext) -> list[Route]:
    limit = ctx.settings.max_stow_bytes

    async def stage(
        part: DecodedPart, default_type: str | None, study: str | None, outcome: _Outcome
    ) -> None:
        number = outcome.parts + 1
        part_type = (part.content_type or default_type or "").split(";")[0].strip().lower()
        if part_type != MediaType.DICOM:
            failure = StoreFailure(FAILURE_CANNOT_UNDERSTAND, f"part media type {part_type or 'missing'!r}")
            outcome.failed.append((number, failure))
            return
        try:
            outcome.staged.append(await run_in_threadpool(ctx.store.stage, part.body, study_uid=study))
        except StoreFailure as failure:
            outcome.failed.append((number, failure))

    async def receive(request: Request, study: str | None, outcome: _Outcome) -> None:
        decoder = MultipartDecoder(request.headers["content-type"], max_part_bytes=limit)
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise PayloadTooLarge(f"request body exceeds the {limit}-byte STOW-RS bound")
            for part in decoder.feed(chunk):
                await stage(part, decoder.part_type, study, outcome)
        decoder.close()
        if not outcome.parts:
            raise InvalidRequest("multipart message without any part")

    async def store_instances(request: Request) -> Response:
        """PS3.18 10.5.1: Store Instances (RAD-107 counterpart for loading a PACS)."""
        raw_study = request.path_params.get("study")
        study = None if raw_study is None else validate_uid(raw_study, "StudyInstanceUID")
        _check_content_type(request.headers.get("content-type"))
        _check_length(request, limit)
        media_type = negotiate(request.headers.get("accept"), [MediaType.DICOM_JSON, MediaType.JSON])
        outcome = _Outcome()
        committed = False
        try:
            await receive(request, study, outcome)
            if outcome.staged:
                await run_in_threadpool(ctx.store.commit, outcome.staged)
            committed = True
        finally:
            if not committed:
                await run_in_threadpool(ctx.store.discard, outcome.staged)
        status = _status(outcome)
        headers = {}
        if outcome.failed:
            reasons = "; ".join(f"part {n}: {f.message}" for n, f in outcome.failed[:_MAX_WARNED])
            more = (
                f" (+{len(outcome.failed) - _MAX_WARNED} more)" if len(outcome.failed) > _MAX_WARNED else ""
            )
            text = f"{len(outcome.failed)} of {outcome.parts} instance(s) not stored: {reasons}{more}"
            headers["Warning"] = warning_header(ctx.settings.agent, header_safe(text))
        body = _response_body(outcome, dicomweb_base(request), study)
        return Response(json.dumps(body), status_code=status, headers=headers, media_type=media_type)

    return [
        Route("/dicom-web/studies", store_instances, methods=["POST"]),
        Route("/dicom-web/studies/{study}", store_instances, methods=["POST"]),
    ]
