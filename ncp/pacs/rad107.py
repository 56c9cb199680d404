"""WADO-RS Retrieve (IHE RAD-107, PS3.18 10.4): instances of a study, series or instance.

Instances stream as ``multipart/related; type="application/dicom"`` with a ``Content-Location``
per part (PS3.18 8.7.3, 10.4.3). A single instance may also be asked for as a bare
``application/dicom`` body. Files already in the negotiated transfer syntax stream from disk, one
bounded chunk at a time (an instance of up to 1 MiB in one read, framed in the same buffer: one
worker-thread call and one write per instance); others are transcoded (:mod:`ncp.pacs.transcode`) one
instance at a time, just before their part is sent: Explicit VR Little Endian unless the client asks otherwise
(PS3.18 8.7.3.5). If a file vanishes after the response started, the stream is aborted so the
client sees a truncated message, never a clean short one. Metadata and bulk data are
:mod:`ncp.pacs.metadata`'s. Frames (``.../instances/{i}/frames/{list}``) are served by
:mod:`ncp.pacs.frames`, routed from here.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from anyio import to_thread
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from ncp.dicom.media import MediaType, negotiate_dicom
from ncp.dicom.multipart import CHUNK_SIZE, Framer, Part, multipart_content_type, new_boundary
from ncp.pacs.context import PacsContext, Target, dicomweb_base, instance_url
from ncp.pacs.frames import frame_routes
from ncp.pacs.store import StoredInstance
from ncp.pacs.transcode import can_produce, transcode
from ncp.streaming import StreamedResponse

__all__ = ["retrieve_routes"]


def _part_type(transfer_syntax: str) -> str:
    return f"{MediaType.DICOM}; transfer-syntax={transfer_syntax}"


# Read and framed in one buffer (one worker-thread call, one write): a CT or MR slice, a few frames. A
# larger file streams in CHUNK_SIZE reads, so memory stays bounded per response (docs/architecture.md).
WHOLE_MAX = 1024 * 1024


@dataclass(frozen=True)
class _Piece:
    """One part; ``path`` when its body is the stored file, read here in as few calls as possible."""

    part: Part
    path: Path | None = None


async def _piece(ctx: PacsContext, base: str, inst: StoredInstance, target: str | None) -> _Piece:
    """The instance as stored (read from its file as it is sent) or transcoded to ``target`` in a worker
    thread."""
    path, url = ctx.store.path(inst), instance_url(base, inst)
    if target is None or target == inst.transfer_syntax:
        return _Piece(Part.from_file(path, _part_type(inst.transfer_syntax), url), path)
    return _Piece(Part.from_bytes(await run_in_threadpool(transcode, path, target), _part_type(target), url))


async def _pieces(
    ctx: PacsContext, base: str, first: _Piece, rest: Sequence[StoredInstance], target: str | None
) -> AsyncIterator[_Piece]:
    yield first
    for inst in rest:
        yield await _piece(ctx, base, inst, target)


async def _message(
    pieces: AsyncIterator[_Piece], count: int, boundary: str
) -> AsyncIterator[bytes | memoryview]:
    """``multipart/related`` (RFC 2387, PS3.18 8.7.3) whose parts go out with their delimiter and headers,
    and the last with the close delimiter: per-request costs (docs/benchmarks.md, "Per-request costs,
    round 2")."""
    framer = Framer(boundary)
    index = 0
    async for piece in pieces:
        index += 1
        if piece.path is None:
            body = b"".join([chunk async for chunk in piece.part.chunks])
            yield framer.whole(piece.part.header_block(), body, last=index == count)
            continue
        head = framer.head(piece.part.header_block())
        async for chunk in _file_chunks(piece.path, head, framer.close() if index == count else b""):
            yield chunk


async def _file_chunks(path: Path, head: bytes, tail: bytes) -> AsyncIterator[bytes | memoryview]:
    """``head``, the file's bytes and ``tail``: in one buffer from one worker-thread call when the file is
    at most ``WHOLE_MAX``, else in ``CHUNK_SIZE`` reads (each a worker-thread call)."""
    first, rest = await to_thread.run_sync(_read_start, path, head, tail)
    if rest is None:
        yield first
        return
    try:
        yield first
        while chunk := await to_thread.run_sync(rest.read, CHUNK_SIZE):
            yield chunk
    finally:
        rest.close()
    if tail:
        yield tail


def _read_start(path: Path, head: bytes, tail: bytes) -> tuple[bytes | memoryview, BinaryIO | None]:
    """The whole framed part when the file is small; else ``head`` + its first chunk, and the open file."""
    f = open(path, "rb")  # noqa: SIM115 - stays open for the caller when the file is large
    try:
        size = os.fstat(f.fileno()).st_size
        if size > WHOLE_MAX:
            first = head + f.read(CHUNK_SIZE)
            return first, f
        buf = bytearray(len(head) + size + len(tail))
        view = memoryview(buf)
        view[: len(head)] = head
        got, end = len(head), len(head) + size
        while got < end and (n := f.readinto(view[got:end])):
            got += n
        view[got : got + len(tail)] = tail
        view.release()
        del buf[got + len(tail) :]  # a file that shrank while read: what it held
        f.close()
        return memoryview(buf), None
    except BaseException:
        f.close()
        raise


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
        first = await _piece(ctx, base, available[0], rep.transfer_syntax)
        boundary = new_boundary()
        pieces = _pieces(ctx, base, first, available[1:], rep.transfer_syntax)
        body = _message(pieces, len(available), boundary)
        media_type = multipart_content_type(MediaType.DICOM, boundary, rep.transfer_syntax)
        return StreamedResponse(body, status_code=status, headers=headers, media_type=media_type)

    studies = "/dicom-web/studies/{study}"
    series = studies + "/series/{series}"
    instance = series + "/instances/{sop}"
    return [
        *frame_routes(ctx),
        *(Route(path, retrieve, methods=["GET"]) for path in (studies, series, instance)),
    ]
