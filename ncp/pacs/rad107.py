"""WADO-RS Retrieve (IHE RAD-107, PS3.18 10.4): instances and metadata of a study, series or instance.

Instances stream from their files, one bounded chunk at a time, as ``multipart/related;
type="application/dicom"`` with a ``Content-Location`` per part (PS3.18 8.7.3, 10.4.3). A single
instance may also be asked for as a bare ``application/dicom`` body. If a file vanishes after
the response started, the stream is aborted so the client sees a truncated message, never a
clean short one. Metadata is the DICOM JSON kept at STOW time (PS3.18 F.2), bulk data omitted.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Route

from ncp.dicom.media import MediaType, negotiate, negotiate_dicom
from ncp.dicom.multipart import Part, encode_multipart, multipart_content_type, new_boundary
from ncp.pacs.context import PacsContext, Target, dicomweb_base, instance_url
from ncp.pacs.store import StoredInstance

__all__ = ["retrieve_routes"]


def _part_type(transfer_syntax: str) -> str:
    return f"{MediaType.DICOM}; transfer-syntax={transfer_syntax}"


async def _parts(ctx: PacsContext, base: str, instances: Sequence[StoredInstance]) -> AsyncIterator[Part]:
    for inst in instances:
        path = ctx.store.path(inst)
        yield Part.from_file(path, _part_type(inst.transfer_syntax), instance_url(base, inst))


def retrieve_routes(ctx: PacsContext) -> list[Route]:
    async def retrieve(request: Request) -> Response:
        """RAD-107 / PS3.18 10.4.1: Retrieve Study, Series or Instance."""
        target = Target.from_request(request)
        resolved = await ctx.resolve(target)
        stored = {i.transfer_syntax for i in resolved.available}
        rep = negotiate_dicom(request.headers.get("accept"), stored, single_part=target.sop is not None)
        status, headers = ctx.partial(resolved)
        if not rep.multipart:
            inst = resolved.available[0]
            return FileResponse(ctx.store.path(inst), media_type=_part_type(inst.transfer_syntax))
        boundary = new_boundary()
        body = encode_multipart(_parts(ctx, dicomweb_base(request), resolved.available), boundary)
        media_type = multipart_content_type(MediaType.DICOM, boundary, rep.transfer_syntax)
        return StreamingResponse(body, status_code=status, headers=headers, media_type=media_type)

    async def metadata(request: Request) -> Response:
        """PS3.18 10.4.1.1.2: Retrieve Study, Series or Instance Metadata as DICOM JSON."""
        target = Target.from_request(request)
        media_type = negotiate(request.headers.get("accept"), [MediaType.DICOM_JSON, MediaType.JSON])
        resolved = await ctx.resolve(target)
        datasets = await run_in_threadpool(ctx.store.metadata, [i.sop_uid for i in resolved.available])
        status, headers = ctx.partial(resolved)
        return Response(json.dumps(datasets), status_code=status, headers=headers, media_type=media_type)

    studies = "/dicom-web/studies/{study}"
    series = studies + "/series/{series}"
    instance = series + "/instances/{sop}"
    return [
        *(Route(path, retrieve, methods=["GET"]) for path in (studies, series, instance)),
        *(Route(path + "/metadata", metadata, methods=["GET"]) for path in (studies, series, instance)),
    ]
