"""WADO-RS Retrieve (IHE RAD-107, PS3.18 10.4): instances of a study, series or instance.

Instances stream as ``multipart/related; type="application/dicom"`` with a ``Content-Location``
per part (PS3.18 8.7.3, 10.4.3). A single instance may also be asked for as a bare
``application/dicom`` body. Files already in the negotiated transfer syntax stream from disk, one
bounded chunk at a time; others are transcoded (:mod:`ncp.pacs.transcode`) one instance at a time,
just before their part is sent: Explicit VR Little Endian unless the client asks otherwise
(PS3.18 8.7.3.5). If a file vanishes after the response started, the stream is aborted so the
client sees a truncated message, never a clean short one. Metadata and bulk data are
:mod:`ncp.pacs.metadata`'s. Frames (``.../instances/{i}/frames/{list}``) are served by
:mod:`ncp.pacs.frames`, routed from here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Route

from ncp.dicom.media import MediaType, negotiate_dicom
from ncp.dicom.multipart import Part, encode_multipart, multipart_content_type, new_boundary
from ncp.pacs.context import PacsContext, Target, dicomweb_base, instance_url
from ncp.pacs.frames import frame_routes
from ncp.pacs.store import StoredInstance
from ncp.pacs.transcode import can_produce, transcode

__all__ = ["retrieve_routes"]


def _part_type(transfer_syntax: str) -> str:
    return f"{MediaType.DICOM}; transfer-syntax={transfer_syntax}"


async def _part(ctx: PacsContext, base: str, inst: StoredInstance, target: str | None) -> Part:
    """The instance as stored (streamed from its file) or transcoded to ``target`` in a worker thread."""
    path, url = ctx.store.path(inst), instance_url(base, inst)
    if target is None or target == inst.transfer_syntax:
        return Part.from_file(path, _part_type(inst.transfer_syntax), url)
    return Part.from_bytes(await run_in_threadpool(transcode, path, target), _part_type(target), url)


async def _parts(
    ctx: PacsContext, base: str, first: Part, rest: Sequence[StoredInstance], target: str | None
) -> AsyncIterator[Part]:
    yield first
    for inst in rest:
        yield await _part(ctx, base, inst, target)


async def _single(ctx: PacsContext, inst: StoredInstance, target: str | None) -> Response:
    """One instance as a bare ``application/dicom`` body (PS3.18 8.7.3.1)."""
    path = ctx.store.path(inst)
    if target is None or target == inst.transfer_syntax:
        return FileResponse(path, media_type=_part_type(inst.transfer_syntax))
    return Response(await run_in_threadpool(transcode, path, target), media_type=_part_type(target))


def _producer(instances: Sequence[StoredInstance]) -> Callable[[str], bool]:
    kinds = {(i.transfer_syntax, i.has_pixels) for i in instances}
    return lambda target: all(can_produce(ts, target, has_pixels=pixels) for ts, pixels in kinds)


def retrieve_routes(ctx: PacsContext) -> list[Route]:
    async def retrieve(request: Request) -> Response:
        """RAD-107 / PS3.18 10.4.1: Retrieve Study, Series or Instance."""
        target = Target.from_request(request)
        resolved = await ctx.resolve(target)
        available = resolved.available
        rep = negotiate_dicom(
            request.headers.get("accept"),
            {i.transfer_syntax for i in available},
            single_part=target.sop is not None,
            produce=_producer(available),
        )
        status, headers = ctx.partial(resolved)
        base = dicomweb_base(request)
        if not rep.multipart:
            return await _single(ctx, available[0], rep.transfer_syntax)
        # The first part is ready before the status line goes out, so a codec failure is a
        # clean 406 rather than a truncated 200.
        first = await _part(ctx, base, available[0], rep.transfer_syntax)
        boundary = new_boundary()
        body = encode_multipart(_parts(ctx, base, first, available[1:], rep.transfer_syntax), boundary)
        media_type = multipart_content_type(MediaType.DICOM, boundary, rep.transfer_syntax)
        return StreamingResponse(body, status_code=status, headers=headers, media_type=media_type)

    studies = "/dicom-web/studies/{study}"
    series = studies + "/series/{series}"
    instance = series + "/instances/{sop}"
    return [
        *frame_routes(ctx),
        *(Route(path, retrieve, methods=["GET"]) for path in (studies, series, instance)),
    ]
