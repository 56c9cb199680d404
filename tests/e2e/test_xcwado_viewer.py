"""RAD-160 for viewers through two real gateways (NCP-AT -> NCP-FR) to a canary PACS that records what it
saw: frames, frame-level rendered and bulk data pass through both hops, streamed; bad input is refused
before any upstream call; bulk data URIs in metadata and frame parts' Content-Location name NCP-B's RAD-160
base; a refusal always carries a Warning; CORS on the consumer listener only; ``viewer_resources = false``
keeps a country to MADO Appendix XA."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ncp.gateway.app import create_border_app, create_gateway_app
from ncp.gateway.proxy import Timeouts
from ncp.gateway.settings import GatewaySettings
from ncp.server import free_port
from ncp.topology import CountryEndpoints, Endpoints, Topology, builtin_topology

DEFAULT = builtin_topology("default")
FR = DEFAULT.countries["FR"]
RLUID = FR.pacs[0].retrieve_location_uid
STUDY, SERIES, SOP = "1.2.3.4", "1.2.3.4.1", "1.2.3.4.1.1"
BIG = "1.2.3.5"  # a multi-frame object too large to hold: the canary waits for the client mid-answer
VIEWER = "https://viewer.example"
FRAME = b"\x5a" * 4096
CHUNK = 256 * 1024
BOUNDARY = "frames-b0undary"


@dataclass
class Canary:
    """A stand-in PACS: answers per path, records every request it received."""

    base: str = ""
    seen: list[str] = field(default_factory=list)
    accepts: list[str] = field(default_factory=list)
    client_has_first_bytes: threading.Event = field(default_factory=threading.Event)

    def app(self) -> Starlette:
        async def handle(request: Request) -> Response:
            self.seen.append(request.url.path)
            self.accepts.append(request.headers.get("accept", ""))
            if request.url.path.endswith("/metadata"):
                return Response(json.dumps(self._metadata()), media_type="application/dicom+json")
            if request.url.path.endswith("/frames/77"):  # refused the way Orthanc refuses: no Warning
                return Response(
                    b'{"HttpError": "Bad Request"}', status_code=400, media_type="application/json"
                )
            if request.url.path.endswith("/frames/5"):  # parts naming the PACS, as Orthanc writes them
                return StreamingResponse(self._parts(), media_type=f"multipart/related; boundary={BOUNDARY}")
            if BIG in request.url.path:
                return StreamingResponse(self._big(), media_type="multipart/related; boundary=x")
            return Response(
                FRAME, media_type='multipart/related; type="application/octet-stream"; boundary=x'
            )

        return Starlette(routes=[Route("/{path:path}", handle)])

    def _metadata(self) -> list[dict[str, object]]:
        instance = f"{self.base}/dicom-web/studies/{STUDY}/series/{SERIES}/instances/{SOP}"
        return [
            {
                "00080018": {"vr": "UI", "Value": [SOP]},
                "00081190": {"vr": "UR", "Value": [instance]},
                "7FE00010": {"vr": "OW", "BulkDataURI": f"{instance}/bulk/7fe00010"},
            }
        ]

    def frame_parts(self, base: str) -> bytes:
        location = f"{base}/studies/{STUDY}/{INSTANCE}/frames/5"
        # the pixel data happen to hold the PACS address: bodies must reach the viewer unchanged
        body = FRAME + f"{self.base}/dicom-web/".encode() + FRAME
        part = (
            f"--{BOUNDARY}\r\nContent-Type: application/octet-stream\r\nContent-Location: {location}\r\n\r\n"
        )
        return part.encode() + body + f"\r\n--{BOUNDARY}--\r\n".encode()

    async def _parts(self) -> AsyncIterator[bytes]:
        whole = self.frame_parts(f"{self.base}/dicom-web")
        for i in range(0, len(whole), 7):  # odd chunks: boundaries and headers split across them
            yield whole[i : i + 7]

    async def _big(self) -> AsyncIterator[bytes]:
        yield b"\0" * CHUNK
        # the rest only once the consumer holds the first chunk: a gateway that buffered would wait forever
        await asyncio.to_thread(self.client_has_first_bytes.wait, 20)
        for _ in range(64):
            yield b"\1" * CHUNK


def _chain(serve: Callable[..., str], topology: Topology) -> tuple[str, str, Canary]:
    canary = Canary()
    pacs = canary.base = serve(canary.app())
    ports = {k: free_port() for k in ("fr_gw", "fr_b", "at_gw", "at_b")}
    url = {k: f"http://127.0.0.1:{p}" for k, p in ports.items()}
    fhir = {"national": "http://127.0.0.1:9/fhir"}
    endpoints = Endpoints(
        {
            "FR": CountryEndpoints(
                FR.home_community_id, FR.patient_id_issuer, url["fr_gw"], url["fr_b"], fhir,
                {RLUID: f"{pacs}/dicom-web/"},
            ),
            "AT": CountryEndpoints("2.999.40.1", "2.999.40.2", url["at_gw"], url["at_b"], fhir, {}),
        }
    )  # fmt: skip
    timeouts = Timeouts(connect=2, first_byte=5, read=5)
    for code, gw, border in (("FR", "fr_gw", "fr_b"), ("AT", "at_gw", "at_b")):
        settings = GatewaySettings(topology, code, endpoints, timeouts=timeouts)
        serve(create_gateway_app(settings), port=ports[gw])
        serve(create_border_app(settings), port=ports[border])
    return url["at_gw"], url["at_b"], canary


def _with(topology: Topology, code: str, **changes: object) -> Topology:
    country = dataclasses.replace(topology.countries[code], **changes)  # type: ignore[arg-type]
    return dataclasses.replace(topology, countries={**topology.countries, code: country})


@pytest.fixture
def chain(serve: Callable[..., str]) -> tuple[str, str, Canary]:
    return _chain(serve, _with(DEFAULT, "AT", cors_origins=(VIEWER,)))


def xc(rest: str, study: str = STUDY) -> str:
    return f"/wado/homeCommunityId/{FR.home_community_id}/RetrieveLocationUID/{RLUID}/studies/{study}/{rest}"


INSTANCE = f"series/{SERIES}/instances/{SOP}"


@pytest.mark.parametrize(
    "rest",
    [
        f"{INSTANCE}/frames/1",
        f"{INSTANCE}/frames/1,3,250",
        f"{INSTANCE}/frames/2/rendered",
        f"{INSTANCE}/bulkdata/7FE00010",
        f"{INSTANCE}/bulk/0040a730/0/7fe00010",  # Orthanc's spelling, inside a sequence item
    ],
)
def test_viewer_resources_reach_the_pacs_unchanged_through_both_hops(
    chain: tuple[str, str, Canary], rest: str
) -> None:
    at, _, canary = chain
    accept = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    r = httpx.get(at + xc(rest), headers={"Accept": accept})
    assert r.status_code == 200
    assert r.content == FRAME
    assert canary.seen == [f"/dicom-web/studies/{STUDY}/{rest}"]
    assert canary.accepts == [accept]


@pytest.mark.parametrize(
    ("rest", "warning"),
    [
        (f"{INSTANCE}/frames/0", "1-based"),
        (f"{INSTANCE}/frames/1,x", "1-based"),
        (f"{INSTANCE}/frames/01", "1-based"),
        (f"{INSTANCE}/frames/1,,2", "1-based"),
        (f"{INSTANCE}/frames/-1", "1-based"),
        (f"{INSTANCE}/frames", "1-based"),
        (f"{INSTANCE}/frames/{','.join(['1'] * 1025)}", "at most 1024"),
        (f"{INSTANCE}/frames/1/metadata", "no 'metadata'"),
        (f"{INSTANCE}/frames/1/2", "unexpected path segments"),
        (f"series/{SERIES}/frames/1", "unexpected path segments"),
        ("frames/1", "unexpected path segments"),
        (f"{INSTANCE}/bulkdata/PixelData", "8-hex-digit tags"),
        (f"{INSTANCE}/bulkdata/7fe00010/0", "8-hex-digit tags"),
        (f"{INSTANCE}/bulkdata/0040a730/x/7fe00010", "8-hex-digit tags"),
        (f"{INSTANCE}/bulkdata/{'0040a730/0/' * 8}7fe00010", "8-hex-digit tags"),
        (f"{INSTANCE}/bulkdata", "8-hex-digit tags"),
        (f"{INSTANCE}/bulkdata/7fe00010/rendered", "no 'rendered'"),
        (f"series/{SERIES}/bulkdata/7fe00010", "unexpected path segments"),
    ],
)
def test_malformed_viewer_paths_are_400_with_a_warning_and_no_upstream_call(
    chain: tuple[str, str, Canary], rest: str, warning: str
) -> None:
    at, _, canary = chain
    r = httpx.get(at + xc(rest))
    assert r.status_code == 400
    assert warning in r.headers["warning"]
    assert canary.seen == []


def test_frame_parts_name_the_consumers_gateway_and_their_bytes_pass_untouched(
    chain: tuple[str, str, Canary],
) -> None:
    at, _, canary = chain
    r = httpx.get(at + xc(f"{INSTANCE}/frames/5"))
    assert r.status_code == 200
    public = at + xc("").removesuffix(f"/studies/{STUDY}/")
    assert r.content == canary.frame_parts(public)
    assert f"Content-Location: {public}/studies/{STUDY}/{INSTANCE}/frames/5".encode() in r.content


def test_a_refusal_without_a_warning_gets_one_from_the_responding_gateway(
    chain: tuple[str, str, Canary],
) -> None:
    at, _, _ = chain
    r = httpx.get(at + xc(f"{INSTANCE}/frames/77"))
    assert r.status_code == 400
    assert r.headers["warning"].startswith("299 ncp-fr-border ")
    assert r.json() == {"HttpError": "Bad Request"}  # the body as the PACS sent it


def test_an_absurd_accept_is_400_with_a_warning_and_no_upstream_call(chain: tuple[str, str, Canary]) -> None:
    at, _, canary = chain
    accept = ", ".join(f"application/x-{i}; q=0.{i % 10}" for i in range(1000))
    r = httpx.get(at + xc(f"{INSTANCE}/frames/1"), headers={"Accept": accept})
    assert r.status_code == 400
    assert "Accept" in r.headers["warning"]
    assert canary.seen == []


def test_a_large_multi_frame_answer_streams_through_both_hops(chain: tuple[str, str, Canary]) -> None:
    """The canary sends the rest of the object only after the consumer received its first bytes: a hop
    that held the answer whole would never deliver them."""
    at, _, canary = chain
    received = 0
    with httpx.stream("GET", at + xc(f"series/{SERIES}/instances/{BIG}/frames/1,2,3", BIG), timeout=30) as r:
        assert r.status_code == 200
        for chunk in r.iter_bytes():
            received += len(chunk)
            canary.client_has_first_bytes.set()
    assert received == 65 * CHUNK


def test_bulk_data_uris_in_metadata_name_the_consumers_gateway_and_can_be_followed(
    chain: tuple[str, str, Canary],
) -> None:
    at, _, canary = chain
    r = httpx.get(at + xc("metadata"), headers={"Accept": "application/dicom+json"})
    assert r.status_code == 200
    bulk = r.json()[0]["7FE00010"]["BulkDataURI"]
    instance_url = at + xc(INSTANCE)
    assert bulk == f"{instance_url}/bulk/7fe00010"
    assert r.json()[0]["00081190"]["Value"] == [instance_url]
    assert canary.base not in r.text
    assert httpx.get(bulk).content == FRAME
    assert canary.seen[-1] == f"/dicom-web/studies/{STUDY}/{INSTANCE}/bulk/7fe00010"


def test_a_preflight_from_a_configured_origin_is_answered(chain: tuple[str, str, Canary]) -> None:
    at, _, canary = chain
    r = httpx.options(
        at + xc(f"{INSTANCE}/frames/1"),
        headers={
            "Origin": VIEWER,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, accept",
        },
    )
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == VIEWER
    assert "GET" in r.headers["access-control-allow-methods"]
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "accept"} <= allowed
    assert int(r.headers["access-control-max-age"]) > 0
    assert "access-control-allow-credentials" not in r.headers  # the token travels in Authorization
    assert canary.seen == []


@pytest.mark.parametrize("origin", ["https://evil.example", "https://viewer.example:8443", "null"])
def test_a_preflight_from_any_other_origin_is_refused(chain: tuple[str, str, Canary], origin: str) -> None:
    at, _, _ = chain
    r = httpx.options(
        at + xc(f"{INSTANCE}/frames/1"), headers={"Origin": origin, "Access-Control-Request-Method": "GET"}
    )
    assert r.status_code == 403
    assert "access-control-allow-origin" not in r.headers
    assert "origin" in r.headers["warning"]


def test_a_preflight_for_fhir_is_answered_in_fhirs_shape(chain: tuple[str, str, Canary]) -> None:
    at, _, _ = chain
    ask = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    ok = httpx.options(f"{at}/fhir/DocumentReference", headers={"Origin": VIEWER, **ask})
    assert ok.status_code == 204 and ok.headers["access-control-allow-origin"] == VIEWER
    refused = httpx.options(f"{at}/fhir/DocumentReference", headers={"Origin": "https://evil.example", **ask})
    assert refused.status_code == 403
    assert "access-control-allow-origin" not in refused.headers
    assert refused.json()["resourceType"] == "OperationOutcome"


def test_answers_name_a_configured_origin_and_expose_warning_and_content_location(
    chain: tuple[str, str, Canary],
) -> None:
    at, _, _ = chain
    ok = httpx.get(at + xc(f"{INSTANCE}/frames/1"), headers={"Origin": VIEWER})
    refused = httpx.get(at + xc(f"{INSTANCE}/frames/0"), headers={"Origin": VIEWER})
    for r in (ok, refused):  # a viewer can read the Warning of a refusal too
        assert r.headers["access-control-allow-origin"] == VIEWER
        exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
        assert {"warning", "content-location"} <= exposed
    other = httpx.get(at + xc(f"{INSTANCE}/frames/1"), headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_the_border_never_answers_cors(chain: tuple[str, str, Canary]) -> None:
    _, at_border, _ = chain
    path = xc(f"{INSTANCE}/frames/1").replace("/wado/", "/wado-rs/")
    preflight = httpx.options(
        at_border + path, headers={"Origin": VIEWER, "Access-Control-Request-Method": "GET"}
    )
    assert preflight.status_code == 405
    assert "access-control-allow-origin" not in preflight.headers


@pytest.mark.parametrize("country", ["FR", "AT"])
def test_with_viewer_resources_off_either_side_refuses_frames_and_bulk_data_but_not_instances(
    serve: Callable[..., str], country: str
) -> None:
    at, _, canary = _chain(serve, _with(DEFAULT, country, viewer_resources=False))
    for rest in (f"{INSTANCE}/frames/1", f"{INSTANCE}/frames/1/rendered", f"{INSTANCE}/bulkdata/7fe00010"):
        r = httpx.get(at + xc(rest))
        assert r.status_code == 404
        assert "viewer_resources" in r.headers["warning"]
    assert canary.seen == []
    assert httpx.get(at + xc(INSTANCE)).status_code == 200
    assert httpx.get(at + xc(f"{INSTANCE}/rendered")).status_code == 200
