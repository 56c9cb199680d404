"""Server-side rendering for the central-hub option (MCWG 1.7.2): native instances to PNG/JPEG.

Grey-scale frames go through the Modality LUT, then a VOI window (PS3.3 C.11.2.1.2, linear): a preset
chosen by the clinician, else the instance's first Window Center/Width, else its min-max range; colour
frames are shown as stored. A multi-frame image renders the frame asked for.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_modality_lut

from ncp.errors import InvalidRequest, NotAcceptable

__all__ = ["CT_PRESETS", "Rendered", "render"]

# Common CT windows (center, width in HU); "default" keeps the instance's own window.
CT_PRESETS: dict[str, tuple[float, float] | None] = {
    "default": None,
    "soft-tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}
THUMBNAIL = 128


@dataclass(frozen=True)
class Rendered:
    body: bytes
    media_type: str
    frames: int
    width: int
    height: int


def render(
    data: bytes, *, frame: int = 0, preset: str = "default", thumbnail: bool = False, jpeg: bool = False
) -> Rendered:
    """Render one frame of a PS3.10 instance; 400 for a frame or preset that does not exist, 406 for an
    instance without pixels (a KOS, a report)."""
    if preset not in CT_PRESETS:
        raise InvalidRequest(f"unknown window preset {preset!r}; known: {', '.join(CT_PRESETS)}")
    ds = pydicom.dcmread(io.BytesIO(data))
    if "PixelData" not in ds:
        raise NotAcceptable("the instance has no pixel data to render")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not 0 <= frame < frames:
        raise InvalidRequest(f"frame {frame + 1} does not exist: the instance has {frames}")
    try:
        pixels = ds.pixel_array
        one = pixels[frame] if frames > 1 else pixels
        rgb = int(ds.get("SamplesPerPixel", 1)) == 3
        image = _colour(one) if rgb else _grey(ds, one, CT_PRESETS[preset])
    except (ValueError, TypeError, NotImplementedError, RuntimeError, AttributeError, KeyError) as exc:
        raise NotAcceptable(f"the instance cannot be rendered: {exc}") from None
    if thumbnail:
        image.thumbnail((THUMBNAIL, THUMBNAIL))
    out = io.BytesIO()
    if jpeg:
        image.convert("RGB").save(out, format="JPEG", quality=90)
    else:
        image.save(out, format="PNG")
    return Rendered(out.getvalue(), "image/jpeg" if jpeg else "image/png", frames, image.width, image.height)


def _first(value: Any) -> float:
    return float(value[0] if isinstance(value, MultiValue) else value)


def _grey(
    ds: pydicom.Dataset, frame: np.ndarray[Any, Any], window: tuple[float, float] | None
) -> Image.Image:
    values = np.asarray(apply_modality_lut(frame, ds), dtype=np.float64)
    if window is None and "WindowCenter" in ds and "WindowWidth" in ds:
        window = (_first(ds.WindowCenter), _first(ds.WindowWidth))
    if window is None or window[1] <= 1:
        low, high = float(values.min()), float(values.max())
        window = ((low + high + 1) / 2, max(high - low + 1, 2.0))
    center, width = window
    scaled = np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)  # PS3.3 C.11.2.1.2.1
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        scaled = 1.0 - scaled
    return Image.fromarray(np.round(scaled * 255).astype(np.uint8), mode="L")


def _colour(frame: np.ndarray[Any, Any]) -> Image.Image:
    if frame.dtype != np.uint8:
        top = float(frame.max()) or 1.0
        frame = np.round(frame.astype(np.float64) * 255 / top).astype(np.uint8)
    return Image.fromarray(frame, mode="RGB")
