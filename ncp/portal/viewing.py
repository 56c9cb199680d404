"""Server-side viewing, both MCWG options, behind one image route of the portal.

* central hub (1.7.2): the portal retrieves the native instance through XC-WADO on its own gateway
  (RAD-160, ``multipart/related; type=application/dicom``), keeps it for the session only, and renders it;
* source server (1.7.3): the portal asks RAD-160 ``/rendered`` (PS3.18 10.4.1.1.3), so country A's
  source renders it, with the chosen window as ``window=center,width``; a multi-frame image gives its
  first frame there.

Each answer says which option served it (``X-Viewing-Option``) and how long it took (``X-Served-In-Ms``,
``Server-Timing``).
"""

from __future__ import annotations

import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ncp.errors import InvalidRequest, NotFound
from ncp.portal.pages import OPTIONS, Pages
from ncp.portal.render import CT_PRESETS, render

__all__ = ["image"]


async def image(request: Request) -> Response:
    pages: Pages = request.app.state.pages
    session, _ = pages.treating(request)
    p = request.path_params
    option = p["option"]
    if option not in OPTIONS:
        raise NotFound("the viewing option is 'hub' or 'source'")
    entry, manifest = await pages.manifest(request, session, p["doc"])
    series = next((s for s in manifest.series if s.series_instance_uid == p["series"]), None)
    if series is None or not any(i.sop_instance_uid == p["sop"] for i in series.instances):
        raise NotFound("the manifest references no such instance")
    frame, preset = _frame(request.query_params.get("frame")), request.query_params.get("preset", "default")
    if preset not in CT_PRESETS:
        raise InvalidRequest(f"unknown window preset {preset!r}")
    gateway, bearer = pages.gateway(request), session.bearer or ""
    url = gateway.rad160(entry.home_community_id or "", manifest, series, p["sop"])
    started = time.perf_counter()
    if option == "source":
        if frame:
            raise InvalidRequest("the source server renders the first frame only")
        got = await gateway.rendered(bearer, url, CT_PRESETS[preset])
        body, media, frames, how, fetched = got.body, got.media_type, 1, OPTIONS[option], got.seconds
    else:
        native, fetched = session.cache.get(p["sop"]), 0.0
        how = OPTIONS[option] + (", from the session cache" if native else ", retrieved by RAD-160")
        if native is None:
            got = await gateway.instance(bearer, url)
            native, fetched = got.body, got.seconds
            session.cache.put(p["sop"], native)
        thumb = request.query_params.get("thumbnail") == "1"
        out = await run_in_threadpool(render, native, frame=frame, preset=preset, thumbnail=thumb)
        body, media, frames = out.body, out.media_type, out.frames
    ms = round((time.perf_counter() - started) * 1000)
    headers = {
        "X-Viewing-Option": how,
        "X-Served-In-Ms": str(ms),
        "X-Frames": str(frames),
        "Server-Timing": f"rad160;dur={fetched * 1000:.1f}, portal-{option};dur={ms}",
        "Cache-Control": "no-store",
    }
    return Response(body, media_type=media, headers=headers)


def _frame(raw: str | None) -> int:
    if raw is None:
        return 0
    if not raw.isdigit() or len(raw) > 5:
        raise InvalidRequest("frame is a number from 0")
    return int(raw)
