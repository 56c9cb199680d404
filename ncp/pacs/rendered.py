"""Rendered resources (PS3.18 10.4.1.1.3, 8.3.5.1.3): a consumer-ready JPEG or PNG of an image.

At series and study level the first instance with pixel data is rendered; a multi-frame image
gives its first frame, the only one decoded. Any transfer syntax an installed codec decodes is
rendered (:mod:`ncp.pacs.transcode`). Grey-scale images go through the Modality LUT, then a VOI
window: the ``window=center,width[,linear|linear-exact|sigmoid]`` parameter, else the instance's
first Window Center/Width, else its min-max range (PS3.3 C.11.2.1.2), to 8 bits. PALETTE COLOR
goes through its lookup tables to RGB (PS3.3 C.7.6.3.1.5); YCbCr is converted to RGB as decoded.
``quality`` (1-100) sets JPEG quality; ``viewport=vw,vh`` scales the image to fit (aspect kept).
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut
from pydicom.pixels.utils import pixel_array
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ncp.dicom.media import MediaType, negotiate_rendered
from ncp.dicom.multipart import Part, encode_multipart, multipart_content_type, new_boundary
from ncp.errors import InvalidRequest, NotAcceptable, NotFound
from ncp.pacs.context import PacsContext, Target

__all__ = ["RenderOptions", "render_image", "rendered_routes"]

_MAX_VIEWPORT = 4096
_WINDOW_FUNCTIONS = ("linear", "linear-exact", "sigmoid")


@dataclass(frozen=True)
class RenderOptions:
    media_type: MediaType = MediaType.JPEG
    window: tuple[float, float, str] | None = None  # center, width, function
    quality: int = 90
    viewport: tuple[int, int] | None = None

    @classmethod
    def from_query(cls, media_type: MediaType, query: Any) -> RenderOptions:
        """Parse PS3.18 8.3.5.1.3 query parameters; InvalidRequest (400) names the bad one."""
        return cls(
            media_type,
            _window(query.get("window")),
            _quality(query.get("quality")),
            _viewport(query.get("viewport")),
        )


def _window(raw: str | None) -> tuple[float, float, str] | None:
    if raw is None:
        return None
    parts = [p.strip() for p in raw.split(",")]
    try:
        center, width = float(parts[0]), float(parts[1])
    except (ValueError, IndexError):
        raise InvalidRequest(f"window={raw!r}: expected center,width[,function]") from None
    function = parts[2].lower() if len(parts) > 2 else "linear"
    if (
        len(parts) > 3
        or function not in _WINDOW_FUNCTIONS
        or not width > 0
        or not math.isfinite(center + width)
    ):
        raise InvalidRequest(f"window={raw!r}: width must be > 0 and function one of {_WINDOW_FUNCTIONS}")
    return center, width, function


def _quality(raw: str | None) -> int:
    if raw is None:
        return 90
    if not re.fullmatch(r"[0-9]{1,3}", raw) or not 1 <= int(raw) <= 100:
        raise InvalidRequest(f"quality={raw!r}: expected an integer 1-100")
    return int(raw)


def _viewport(raw: str | None) -> tuple[int, int] | None:
    if raw is None:
        return None
    parts = raw.split(",")
    if len(parts) not in (2, 6) or not all(re.fullmatch(r"[0-9]{1,5}", p.strip()) for p in parts[:2]):
        raise InvalidRequest(f"viewport={raw!r}: expected vw,vh")
    vw, vh = int(parts[0]), int(parts[1])
    if not (1 <= vw <= _MAX_VIEWPORT and 1 <= vh <= _MAX_VIEWPORT):
        raise InvalidRequest(f"viewport={raw!r}: each side must be 1-{_MAX_VIEWPORT}")
    return vw, vh


def _voi(values: np.ndarray[Any, Any], center: float, width: float, function: str) -> np.ndarray[Any, Any]:
    """PS3.3 C.11.2.1.2 / C.11.2.1.3.1: map to [0, 1]."""
    if function == "sigmoid":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "linear-exact":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width <= 1:
        return (values > center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _first(value: Any) -> float:
    return float(value[0] if isinstance(value, pydicom.multival.MultiValue) else value)


def _grey(
    ds: pydicom.Dataset, frame: np.ndarray[Any, Any], window: tuple[float, float, str] | None
) -> Image.Image:
    values = np.asarray(apply_modality_lut(frame, ds), dtype=np.float64)
    if window is None and "WindowCenter" in ds and "WindowWidth" in ds:
        window = (
            _first(ds.WindowCenter),
            _first(ds.WindowWidth),
            str(ds.get("VOILUTFunction", "LINEAR")).lower(),
        )
        window = (
            window if window[2] in _WINDOW_FUNCTIONS and window[1] > 0 else (window[0], window[1], "linear")
        )
    if window is None:
        low, high = float(values.min()), float(values.max())
        window = ((low + high + 1) / 2, max(high - low + 1, 2.0), "linear")
    scaled = _voi(values, *window)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        scaled = 1.0 - scaled
    return Image.fromarray(np.round(scaled * 255).astype(np.uint8), mode="L")


def _colour(frame: np.ndarray[Any, Any], bits: int) -> Image.Image:
    """RGB samples of ``bits`` bits each, scaled to 8."""
    if frame.dtype != np.uint8 or bits != 8:
        top = float(2**bits - 1)
        frame = np.round(np.clip(frame.astype(np.float64), 0, top) * 255 / top).astype(np.uint8)
    return Image.fromarray(frame, mode="RGB")


def _palette(ds: pydicom.Dataset, frame: np.ndarray[Any, Any]) -> Image.Image:
    """PS3.3 C.7.6.3.1.5: each index through the red, green and blue tables; 16-bit entries keep
    their high byte, as 8-bit displays show them."""
    rgb = apply_color_lut(frame, ds)
    bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    if bits > 8:
        rgb = rgb >> (bits - 8)
    return Image.fromarray(rgb.astype(np.uint8), mode="RGB")


def _to_image(ds: pydicom.Dataset, frame: np.ndarray[Any, Any], options: RenderOptions) -> Image.Image:
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        return _palette(ds, frame)
    if int(ds.get("SamplesPerPixel", 1)) == 3:
        return _colour(frame, int(ds.get("BitsStored", 8)))
    return _grey(ds, frame, options.window)


def render_image(path: Path, options: RenderOptions) -> bytes:
    """Render the first frame of the PS3.10 file at ``path``; NotAcceptable if it is not an image."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    try:
        image = _to_image(ds, pixel_array(path, index=0), options)  # decodes the first frame alone
    except Exception as exc:  # codecs raise many types on data they cannot handle; never a 500
        raise NotAcceptable(f"the instance cannot be rendered: {type(exc).__name__}: {exc}") from None
    if options.viewport is not None:
        vw, vh = options.viewport
        scale = min(vw / image.width, vh / image.height)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    out = io.BytesIO()
    if options.media_type == MediaType.PNG:
        image.save(out, format="PNG")
    else:
        image.save(out, format="JPEG", quality=options.quality)
    return out.getvalue()


def rendered_routes(ctx: PacsContext) -> list[Route]:
    async def rendered(request: Request) -> Response:
        """PS3.18 10.4.1.1.3: Retrieve Rendered Study, Series or Instance."""
        target = Target.from_request(request)
        rep = negotiate_rendered(request.headers.get("accept"))
        options = RenderOptions.from_query(rep.media_type, request.query_params)
        resolved = await ctx.resolve(target)
        images = [i for i in resolved.available if i.has_pixels]
        if not images:
            if target.sop is not None:
                raise NotAcceptable(f"{target.describe()} has no pixel data to render")
            raise NotFound(f"{target.describe()} holds no image to render")
        body = await run_in_threadpool(render_image, ctx.store.path(images[0]), options)
        if not rep.multipart:
            return Response(body, media_type=rep.media_type)
        boundary = new_boundary()

        async def one() -> AsyncIterator[Part]:
            yield Part.from_bytes(body, rep.media_type)

        media_type = multipart_content_type(rep.media_type, boundary)
        return StreamingResponse(encode_multipart(one(), boundary), media_type=media_type)

    studies = "/dicom-web/studies/{study}"
    series = studies + "/series/{series}"
    instance = series + "/instances/{sop}"
    return [Route(path + "/rendered", rendered, methods=["GET"]) for path in (studies, series, instance)]
