"""XC-WADO through two real gateways (NCP-AT -> NCP-FR) to a canary PACS that records what it saw."""

from __future__ import annotations

import asyncio
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
from ncp.topology import CountryEndpoints, Endpoints, builtin_topology

TOPOLOGY = builtin_topology("default")
FR = TOPOLOGY.countries["FR"]
RLUID1, RLUID2 = (p.retrieve_location_uid for p in FR.pacs)
STUDY = "1.2.3.4"
CUT, SLOW, PARTIAL = "1.2.3.7", "1.2.3.8", "1.2.3.9"
PAYLOAD = b"".join(bytes([i % 251]) * 4096 for i in range(64))  # 256 KiB


@dataclass
class Canary:
    """A stand-in PACS: answers per path, records every request it received."""

    base: str = ""
    seen: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def handle(request: Request) -> Response:
            self.seen.append(request.url.path)
            self.headers.append(dict(request.headers))
            if CUT in request.url.path:
                return StreamingResponse(
                    _cut(),
                    media_type="application/octet-stream",
                    headers={"content-length": str(len(PAYLOAD))},
                )
            if SLOW in request.url.path:
                await asyncio.sleep(3)
            if PARTIAL in request.url.path:
                return Response(
                    PAYLOAD,
                    status_code=206,
                    media_type="application/octet-stream",
                    headers={"Warning": '299 pacs "missing 1.2.3.9"'},
                )
            return Response(PAYLOAD, media_type='multipart/related; type="application/dicom"; boundary=x')

        return Starlette(routes=[Route("/{path:path}", handle)])


async def _cut() -> AsyncIterator[bytes]:
    yield PAYLOAD[: len(PAYLOAD) // 2]
    raise ConnectionResetError("PACS died mid-stream")


@pytest.fixture(params=["aiohttp", "h1"])  # every data-plane client (proxy.make_upstream) meets the same spec
def chain(serve: Callable[..., str], request: pytest.FixtureRequest) -> tuple[str, Canary]:
    canary = Canary()
    pacs = canary.base = serve(canary.app())
    ports = {k: free_port() for k in ("fr_gw", "fr_b", "at_gw", "at_b")}
    url = {k: f"http://127.0.0.1:{p}" for k, p in ports.items()}
    endpoints = Endpoints(
        {
            "FR": CountryEndpoints(
                FR.home_community_id,
                FR.patient_id_issuer,
                url["fr_gw"],
                url["fr_b"],
                {"national": "http://127.0.0.1:9/fhir"},
                {RLUID1: f"{pacs}/dicom-web/", RLUID2: f"{pacs}/other/"},
            ),
            "AT": CountryEndpoints(
                "2.999.40.1",
                "2.999.40.2",
                url["at_gw"],
                url["at_b"],
                {"national": "http://127.0.0.1:9/fhir"},
                {},
            ),
        }
    )
    timeouts = Timeouts(connect=2, first_byte=1.0, read=2)
    for code, gw, border in (("FR", "fr_gw", "fr_b"), ("AT", "at_gw", "at_b")):
        settings = GatewaySettings(TOPOLOGY, code, endpoints, data_plane=request.param, timeouts=timeouts)
        serve(create_gateway_app(settings), port=ports[gw])
        serve(create_border_app(settings), port=ports[border])
    return url["at_gw"], canary


def xc(rluid: str, rest: str) -> str:
    return f"/wado/homeCommunityId/{FR.home_community_id}/RetrieveLocationUID/{rluid}/{rest}"


def test_study_bytes_status_and_accept_pass_through_both_hops(chain: tuple[str, Canary]) -> None:
    at, canary = chain
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    r = httpx.get(at + xc(RLUID1, f"study/{STUDY}/"), headers={"Accept": accept, "X-Request-Id": "rid-1"})
    assert r.status_code == 200
    assert r.content == PAYLOAD
    assert r.headers["content-type"].startswith("multipart/related")
    assert canary.seen == [f"/dicom-web/studies/{STUDY}"]
    assert canary.headers[0]["accept"] == accept
    assert canary.headers[0]["x-request-id"] == "rid-1"
    assert "ncp-at-gateway" in r.headers["server-timing"]


def test_retrieve_location_uid_selects_the_pacs(chain: tuple[str, Canary]) -> None:
    at, canary = chain
    r = httpx.get(at + xc(RLUID2, f"studies/{STUDY}/series/1.2.3.5/instances/1.2.3.6"))
    assert r.status_code == 200
    assert canary.seen == [f"/other/studies/{STUDY}/series/1.2.3.5/instances/1.2.3.6"]


def test_partial_content_and_warning_reach_the_consumer(chain: tuple[str, Canary]) -> None:
    at, _ = chain
    r = httpx.get(at + xc(RLUID1, f"studies/{PARTIAL}"))
    assert r.status_code == 206
    assert "missing 1.2.3.9" in r.headers["warning"]


@pytest.mark.parametrize(
    ("path", "status", "warning"),
    [
        (
            f"/wado/homeCommunityId/2.999.7.7/RetrieveLocationUID/{RLUID1}/studies/{STUDY}",
            404,
            "Unknown homeCommunityId",
        ),
        (xc("2.25.1234", f"studies/{STUDY}"), 404, "Unknown RetrieveLocationUID"),
        (xc(RLUID1, "studies/1.2.3.04"), 400, "not a valid DICOM UID"),
        (xc(RLUID1, "studies/1.2.中"), 400, "not a valid DICOM UID"),
        (xc(RLUID1, f"studies/{STUDY}") + "?retrieveURL=evil.example/dicom-web/", 403, "not an allowlisted"),
        (xc(RLUID1, f"studies/{STUDY}") + "?retrieveurl=127.0.0.1:1/dicom-web/", 403, "not an allowlisted"),
    ],
)
def test_refusals_make_no_upstream_call(
    chain: tuple[str, Canary], path: str, status: int, warning: str
) -> None:
    at, canary = chain
    r = httpx.get(at + path)
    assert r.status_code == status
    assert warning in r.headers["warning"]
    assert canary.seen == []


def test_allowlisted_retrieve_url_is_honoured(chain: tuple[str, Canary]) -> None:
    at, canary = chain
    hostport = canary.base.removeprefix("http://")
    r = httpx.get(at + xc(RLUID1, f"studies/{STUDY}") + f"?retrieveURL={hostport}/other/")
    assert r.status_code == 200
    assert canary.seen == [f"/other/studies/{STUDY}"]


def test_upstream_cut_mid_stream_is_a_failure_never_a_short_study(chain: tuple[str, Canary]) -> None:
    at, _ = chain
    with pytest.raises(httpx.HTTPError):
        httpx.get(at + xc(RLUID1, f"studies/{CUT}"))


def test_upstream_timeout_before_first_byte_is_504(chain: tuple[str, Canary]) -> None:
    at, _ = chain
    r = httpx.get(at + xc(RLUID1, f"studies/{SLOW}"), timeout=10)
    assert r.status_code == 504
    assert "warning" in r.headers


def test_the_consumer_reports_a_cut_study_as_a_failure(chain: tuple[str, Canary]) -> None:
    from ncp.codes import Code
    from ncp.consumer.client import ImagingConsumer
    from ncp.model import Manifest, ManifestInstance, ManifestSeries

    at, _ = chain
    series = ManifestSeries(
        "1.2.3.7.1", RLUID1, None, (ManifestInstance("1.2.840.10008.5.1.4.1.1.2", "1.2.3.7.1.1"),)
    )
    manifest = Manifest(
        "1.2.3.7.9", "KOS", Code("113030", "DCM", "Manifest"), CUT, "P1", None, None, (), (), (), (series,)
    )
    retrieval = ImagingConsumer(at).retrieve_images(FR.home_community_id, manifest)
    assert not retrieval.complete
    assert retrieval.series[0].error is not None
