"""Retrieve Frames (PS3.18 10.4.1.1.3, RAD-107 frame pixel data): ``.../instances/{i}/frames/{list}``.

``{list}`` is a comma-separated list of 1-based frame numbers. Only the frames asked for are read:
native pixel data by seeking to ``offset + (n - 1) * frame length``, encapsulated pixel data
through its offset tables (:func:`pydicom.encaps.get_frame`, PS3.5 A.4). Frames go out as
``multipart/related; type="application/octet-stream"`` (uncompressed; compressed frames decoded,
YCbCr JPEG as RGB, as pydicom decodes them) or, when asked for, in their own compressed media
type (``image/jpeg``, ``image/jls``, ``image/jp2``... PS3.18 8.7.3.3), passed through untouched.
"""

from __future__ import annotations

import re
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.encaps import get_frame
from pydicom.pixels.utils import pack_bits, pixel_array
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ncp.dicom.media import FrameRepresentation, MediaType, negotiate_frames
from ncp.dicom.multipart import Part, encode_multipart, multipart_content_type, new_boundary
from ncp.errors import InvalidRequest, NotAcceptable, NotFound
from ncp.pacs.context import PacsContext, Target, dicomweb_base, instance_url
from ncp.pacs.transcode import can_decode

__all__ = ["MAX_FRAMES_PER_REQUEST", "FrameReader", "frame_routes", "parse_frame_list"]

MAX_FRAMES_PER_REQUEST = 1000
"""A longer frame list is refused (400): a client wanting more asks for the instance."""
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010), little endian
_UNDEFINED_LENGTH = 0xFFFFFFFF


def parse_frame_list(raw: str) -> list[int]:
    """``"1,3,2"`` -> ``[1, 3, 2]``; InvalidRequest (400) for anything but 1-based frame numbers."""
    items = raw.split(",")
    if len(items) > MAX_FRAMES_PER_REQUEST:
        raise InvalidRequest(f"{len(items)} frame numbers asked for (at most {MAX_FRAMES_PER_REQUEST})")
    if not all(re.fullmatch(r"[0-9]{1,9}", item) and int(item) >= 1 for item in items):
        raise InvalidRequest(f"frame list {raw[:80]!r}: expected comma-separated frame numbers from 1")
    return [int(item) for item in items]


@dataclass(frozen=True)
class FrameReader:
    """Where an instance's frames are in its file, read from the header only."""

    path: Path
    transfer_syntax: str
    frames: int
    value_offset: int
    """File offset of the Pixel Data value (first byte after the element header)."""
    encapsulated: bool
    frame_length: int | None
    """Bytes per native frame; None for encapsulated data or frames not byte-aligned."""
    extended_offsets: tuple[bytes, bytes] | None

    @classmethod
    def open(cls, path: Path) -> FrameReader:
        """NotFound (404) without Pixel Data (7FE0,0010); NotAcceptable (406) if the header is unusable."""
        try:
            return cls._open(path)
        except NotFound:
            raise
        except Exception as exc:  # a stored file pydicom cannot make sense of is never a 500
            raise NotAcceptable(f"the pixel data cannot be located: {type(exc).__name__}: {exc}") from None

    @classmethod
    def _open(cls, path: Path) -> FrameReader:
        with path.open("rb") as f:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            header = f.read(12)  # tag, VR, 2 reserved bytes, 32-bit length (PS3.5 7.1.2)
            value_offset = f.tell()
        if len(header) < 12 or header[:4] != _PIXEL_DATA_TAG:
            raise NotFound("the instance has no pixel data, so no frames")
        (length,) = struct.unpack("<L", header[8:])
        frames = int(ds.get("NumberOfFrames") or 1)
        native = length != _UNDEFINED_LENGTH
        extended = (
            (bytes(ds.ExtendedOffsetTable), bytes(ds.ExtendedOffsetTableLengths))
            if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds
            else None
        )
        ts = str(ds.file_meta.TransferSyntaxUID)
        frame_length = _frame_length(ds) if native else None
        return cls(path, ts, frames, value_offset, not native, frame_length, extended)

    def check(self, numbers: list[int]) -> None:
        beyond = sorted({n for n in numbers if n > self.frames})
        if beyond:
            shown = ", ".join(map(str, beyond[:10]))
            raise NotFound(f"frame(s) {shown} not found: the instance has {self.frames} frame(s)")

    def stored(self, number: int) -> bytes:
        """Frame ``number`` (1-based) as stored: native bytes or one compressed frame."""
        with self.path.open("rb") as f:
            f.seek(self.value_offset)
            if self.encapsulated:
                return get_frame(
                    f, number - 1, number_of_frames=self.frames, extended_offsets=self.extended_offsets
                )
            assert self.frame_length is not None  # callers decode frames that are not byte-aligned
            f.seek((number - 1) * self.frame_length, 1)
            return _read_exactly(f, self.frame_length)

    def decoded(self, number: int) -> bytes:
        """Frame ``number`` as native little-endian samples (interleaved when decoded), octet-stream."""
        if not self.encapsulated and self.frame_length is not None:
            return self.stored(number)
        arr = pixel_array(self.path, index=number - 1)
        if not self.encapsulated:  # 1-bit frames that do not start on a byte: this frame alone, packed
            return pack_bits(arr)
        return bytes(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())


def _frame_length(ds: pydicom.Dataset) -> int | None:
    bits = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated)
    if ds.get("PhotometricInterpretation") == "YBR_FULL_422":
        bits = bits * 2 // 3  # two chroma samples per pair of pixels (PS3.3 C.7.6.3.1.2)
    return bits // 8 if bits % 8 == 0 else None


def _read_exactly(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise NotFound("the stored pixel data is shorter than its frame count says")
    return data


def _frame_bytes(reader: FrameReader, rep: FrameRepresentation, number: int) -> bytes:
    """One frame as ``rep`` asks; codec failures become 406 (before the first byte) or an abort."""
    try:
        return reader.decoded(number) if rep.media_type == MediaType.OCTET_STREAM else reader.stored(number)
    except NotFound:
        raise
    except Exception as exc:  # codecs and hostile files raise many types; never a 500
        raise NotAcceptable(
            f"frame {number} cannot be decoded from {reader.transfer_syntax}: {exc}"
        ) from None


def frame_routes(ctx: PacsContext) -> list[Route]:
    async def frames(request: Request) -> Response:
        """PS3.18 10.4.1.1.3: Retrieve Frames of one instance."""
        target = Target.from_request(request)
        numbers = parse_frame_list(request.path_params["frames"])
        resolved = await ctx.resolve(target)
        inst = resolved.available[0]
        if not inst.has_pixels:
            raise NotFound(f"{target.describe()} has no pixel data, so no frames")
        reader = await run_in_threadpool(FrameReader.open, ctx.store.path(inst))
        reader.check(numbers)
        rep = negotiate_frames(
            request.headers.get("accept"),
            reader.transfer_syntax,
            decodable=can_decode(reader.transfer_syntax),
            single_part=len(numbers) == 1,
        )
        part_type = f"{rep.media_type}; transfer-syntax={rep.transfer_syntax}"
        first = await run_in_threadpool(_frame_bytes, reader, rep, numbers[0])
        if not rep.multipart:
            return Response(first, media_type=part_type)
        url = instance_url(dicomweb_base(request), inst) + "/frames/"

        async def parts() -> AsyncIterator[Part]:
            yield Part.from_bytes(first, part_type, f"{url}{numbers[0]}")
            for number in numbers[1:]:  # one frame in memory at a time
                data = await run_in_threadpool(_frame_bytes, reader, rep, number)
                yield Part.from_bytes(data, part_type, f"{url}{number}")

        boundary = new_boundary()
        media_type = multipart_content_type(rep.media_type, boundary, rep.transfer_syntax)
        return StreamingResponse(encode_multipart(parts(), boundary), media_type=media_type)

    path = "/dicom-web/studies/{study}/series/{series}/instances/{sop}/frames/{frames}"
    return [Route(path, frames, methods=["GET"])]
