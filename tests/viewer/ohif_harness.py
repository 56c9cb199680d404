"""The OHIF Viewer 2 prebuilt bundle (``make ohif``: ``npm pack @ohif/viewer@4.12.51`` into ``.cache/ohif``)
served by a small static server, pointed at a RAD-160 base, driven by headless Chromium (Playwright)."""

from __future__ import annotations

import copy
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from browser_support import chromium
from numpy.typing import NDArray
from PIL import Image
from playwright.sync_api import Browser, Page, Request
from playwright.sync_api import Error as PlaywrightError
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

__all__ = ["OHIF_DIST", "Rendered", "Viewer", "chromium", "jpeg_baseline", "open_study", "stow"]

OHIF_VERSION = "4.12.51"  # the Makefile's OHIF_VERSION
OHIF_DIST = Path(__file__).resolve().parents[2] / ".cache" / "ohif" / OHIF_VERSION / "package" / "dist"
# The bundle's index.html less its polyfill.io script (no network here; Chromium needs no polyfill).
_INDEX = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"/><title>OHIF through RAD-160</title></head>
<body><div id="root"></div>
<script src="/app-config.js"></script>
<script src="/index.umd.js" crossorigin></script>
<script>
// a signed-in user's access token, as OHIF's OpenID Connect client stores it (redux-oidc): OHIF sends it
// as a bearer token on metadata and frame requests alike
if (window.xcwadoToken) {
  window.store.dispatch({type: 'redux-oidc/USER_FOUND', payload: {access_token: window.xcwadoToken}});
}
window.OHIFViewer.installViewer(window.config, 'root', function () {});
</script>
</body></html>
"""
FAILURES = ("Failed to retrieve study data", "Error Loading Image", "Error")


@dataclass
class Viewer:
    """OHIF's configuration: one DICOMweb server, the RAD-160 base, with WADO-RS only. XC-WADO carries no
    QIDO across the border, so a study opened by UID loads with study-level metadata (OHIF's sync loader,
    ``enableStudyLazyLoad: false``). ``token`` is the signed-in user's access token: OHIF sends it as a
    bearer token on every request."""

    rad160_base: str = ""
    token: str | None = None
    lazy: bool = False  # OHIF's default study loading: QIDO for the series, then their metadata

    def config_script(self) -> str:
        server = {
            "name": "RAD-160",
            "wadoUriRoot": self.rad160_base,
            "qidoRoot": self.rad160_base,
            "wadoRoot": self.rad160_base,
            "qidoSupportsIncludeField": False,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": self.lazy,
            "supportsFuzzyMatching": False,
        }
        config = {
            "routerBasename": "/",
            "extensions": [],
            "showStudyList": False,
            "servers": {"dicomWeb": [server]},
        }
        return f"window.config = {json.dumps(config)};\nwindow.xcwadoToken = {json.dumps(self.token)};\n"

    def app(self) -> Starlette:
        async def app_config(request: HttpRequest) -> Response:
            return Response(self.config_script(), media_type="application/javascript")

        async def bundle(request: HttpRequest) -> Response:
            return FileResponse(OHIF_DIST / "index.umd.js", media_type="application/javascript")

        async def index(request: HttpRequest) -> Response:
            return HTMLResponse(_INDEX)

        routes = [
            Route("/app-config.js", app_config),
            Route("/index.umd.js", bundle),
            Route("/{path:path}", index),
        ]
        return Starlette(routes=routes)


@dataclass
class Rendered:
    """What the viewer did and showed: its requests (method, URL, status or None when blocked), the page's
    text, whether a cornerstone canvas appeared, and that canvas as a PNG."""

    requests: list[tuple[str, str, int | None]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # of the answers that carry one
    frame_types: set[str] = field(default_factory=set)  # Content-Type of the frames answers
    text: str = ""
    canvas_png: bytes = b""

    def to(self, base: str) -> list[tuple[str, int | None]]:
        return [(url, status) for _, url, status in self.requests if url.startswith(base)]

    def failures(self) -> list[str]:
        return [f for f in FAILURES if f.lower() in self.text.lower()]

    def canvas_grey(self) -> NDArray[np.uint8]:
        return np.asarray(Image.open(io.BytesIO(self.canvas_png)).convert("L"))


def open_study(
    browser: Browser, viewer: str, study: str, screenshot: Path | None = None, wait_s: float = 60
) -> Rendered:
    """Open ``{viewer}/viewer/{study}``, wait for the first image (or for OHIF to give up) and then for
    the network to stay quiet (no request in flight for 1.5 s): every frame asked for has been drawn."""
    seen = Rendered()
    in_flight: set[Request] = set()
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(wait_s * 1000)  # a shared, loaded machine: every wait gets the same bound

    def finished(request: Request) -> None:
        in_flight.discard(request)
        response = request.response()
        seen.requests.append((request.method, request.url, response.status if response else None))
        if response is not None and (warning := response.headers.get("warning")):
            seen.warnings.append(warning)
        if response is not None and "/frames/" in request.url:
            seen.frame_types.add(response.headers.get("content-type", ""))

    def failed(request: Request) -> None:
        in_flight.discard(request)
        seen.requests.append((request.method, request.url, None))

    page.on("request", lambda request: in_flight.add(request))
    page.on("requestfinished", finished)
    page.on("requestfailed", failed)
    try:
        page.goto(f"{viewer}/viewer/{study}")
        canvas = page.locator("canvas.cornerstone-canvas").first
        canvas.or_(page.get_by_text("Failed to retrieve study data")).first.wait_for(state="visible")
        _quiet(page, in_flight, wait_s)
        if canvas.is_visible():
            seen.canvas_png = canvas.screenshot()
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot))
    except PlaywrightError as exc:
        seen.text = f"(viewer did not settle: {exc})\n"
    seen.text += page.inner_text("body")
    page.close()
    return seen


def _quiet(page: Page, in_flight: set[Request], wait_s: float, quiet_s: float = 1.5) -> None:
    deadline, calm = time.monotonic() + wait_s, 0.0
    while calm < quiet_s and time.monotonic() < deadline:
        page.wait_for_timeout(250)  # lets Playwright deliver the page's events meanwhile
        calm = calm + 0.25 if not in_flight else 0.0


def jpeg_baseline(ds: Dataset, quality: int = 90) -> Dataset:
    """``ds`` (greyscale, one frame) as JPEG Baseline (1.2.840.10008.1.2.4.50, PS3.5 A.4.1): the pixel
    range scaled to 8 bits, compressed by Pillow's libjpeg; same UIDs, so the manifest still names it."""
    pixels = ds.pixel_array.astype(np.float64)
    low, high = float(pixels.min()), float(pixels.max())
    grey = np.round((pixels - low) * 255 / max(high - low, 1)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(grey, "L").save(buf, "JPEG", quality=quality)
    out = copy.deepcopy(ds)
    out.PixelData = encapsulate([buf.getvalue()])
    out["PixelData"].VR = "OB"
    out.BitsAllocated, out.BitsStored, out.HighBit, out.PixelRepresentation = 8, 8, 7, 0
    for keyword in ("WindowCenter", "WindowWidth", "RescaleIntercept", "RescaleSlope", "RescaleType"):
        if keyword in out:
            delattr(out, keyword)
    out.LossyImageCompression = "01"
    out.LossyImageCompressionMethod = "ISO_10918_1"
    out.LossyImageCompressionRatio = f"{pixels.size / len(buf.getvalue()):.2f}"  # from 8 bits per pixel
    out.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    return out


def stow(base: str, datasets: list[Dataset]) -> None:
    """STOW-RS (PS3.18 10.5) of ``datasets`` as they are encoded, to the DICOMweb ``base``."""
    boundary = "xcwado-ohif-test"
    body = b""
    for ds in datasets:
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + buf.getvalue() + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    kind = f'multipart/related; type="application/dicom"; boundary={boundary}'
    r = httpx.post(f"{base.rstrip('/')}/studies", content=body, headers={"Content-Type": kind}, timeout=60)
    assert r.status_code == 200, f"STOW to {base}: {r.status_code} {r.text[:300]}"
