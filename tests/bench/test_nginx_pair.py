"""``make bench``'s nginx pair (ncp/bench.py): two nginx reverse proxies chained in the gateways' place, to
tell what any two proxies cost on the machine from what the Python gateways cost.

The pair must proxy as the gateways do (HTTP/1.1 keep-alive upstreams, the answer streamed) and, in its TLS
variant, hold mutual TLS between the proxies as NCP-B -> NCP-A does; without nginx the report says why the
rows are missing instead of failing the run.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ncp import bench
from ncp.nginx import NGINX_ABSENT, nginx_binary
from ncp.security.pki import FederationPki

needs_nginx = pytest.mark.skipif(nginx_binary() is None, reason=NGINX_ABSENT)

BODY = bytes(range(256)) * 4096  # 1 MiB: more than one 256 KiB read per hop


def _recording_upstream(seen: list[dict[str, str]]) -> Starlette:
    """A stand-in PACS that records each request's HTTP version and headers."""

    async def answer(request: Request) -> Response:
        seen.append({"http_version": request.scope["http_version"], **request.headers})
        return Response(BODY, media_type="application/dicom")

    return Starlette(routes=[Route("/dicom-web/{rest:path}", answer)])


@needs_nginx
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "mtls"])
def test_the_pair_passes_answers_whole_over_keep_alive_http_1_1_upstreams(
    serve: Callable[..., str], tmp_path: Path, tls: bool
) -> None:
    seen: list[dict[str, str]] = []
    pacs = serve(_recording_upstream(seen)) + "/dicom-web/"

    with bench.nginx_pair(pacs, tmp_path, tls) as pair, httpx.Client(timeout=30) as client:
        assert pair is not None
        answers = [client.get(f"{pair.base}studies/1.2.3") for _ in range(3)]
        assert len(pair.pids) == 4  # each proxy's master and its one worker

    assert [(a.status_code, a.content == BODY) for a in answers] == [(200, True)] * 3
    assert [r["http_version"] for r in seen] == ["1.1"] * 3
    assert all("close" not in r.get("connection", "") for r in seen)  # the upstream connection is kept


@needs_nginx
def test_with_tls_the_second_proxy_admits_only_a_client_certificate_of_the_pki(
    serve: Callable[..., str], tmp_path: Path
) -> None:
    pacs = serve(_recording_upstream([])) + "/dicom-web/"

    with bench.nginx_pair(pacs, tmp_path, tls=True) as pair:
        assert pair is not None and pair.inner.startswith("https://")
        ca = FederationPki.load(tmp_path / "pki").ca_file
        anonymous = ssl.create_default_context(cafile=str(ca))
        refused = httpx.get(f"{pair.inner}studies/1.2.3", verify=anonymous, timeout=30)
        relayed = httpx.get(f"{pair.base}studies/1.2.3", timeout=30)

    # nginx answers 400 "No required SSL certificate was sent" (ssl_verify_client on)
    assert refused.status_code == 400 and b"certificate" in refused.content
    assert relayed.status_code == 200 and relayed.content == BODY


@needs_nginx
def test_nginx_keeps_its_per_request_buffers_on_the_heap(serve: Callable[..., str], tmp_path: Path) -> None:
    """glibc would map the 256 KiB proxy buffers of 16 requests at a time fresh, and give them back, so that
    the kernel faults their pages in again for the next answers; warmed up, the proxies fault in none."""
    pacs = serve(_recording_upstream([])) + "/dicom-web/"

    with bench.nginx_pair(pacs, tmp_path, tls=False) as pair:
        assert pair is not None
        urls = [f"{pair.base}studies/1.2.3"] * 200
        asyncio.run(bench.per_instance(urls[:64], 16))
        before = sum(_minor_faults(pid) for pid in pair.pids)
        megabytes, _, _ = asyncio.run(bench.per_instance(urls, 16))
        faults = sum(_minor_faults(pid) for pid in pair.pids) - before

    assert megabytes > 0
    assert faults < 20, f"{faults} page faults in 200 answers through two proxies"


def _minor_faults(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])  # minflt, proc(5)


@pytest.mark.slow
def test_without_nginx_the_report_says_why_the_nginx_pair_is_not_measured(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench, "nginx_binary", lambda: None)  # the lookup finds no nginx

    assert bench.main(["--quick", "--no-link", "--no-orthanc", "--no-mtls", "--clients", "h1"]) == 0

    out = capsys.readouterr()
    reason = "not measured: nginx is not installed (neither on PATH nor /usr/sbin/nginx)"
    assert f"| two nginx proxies (nginx -> nginx) | - | - | - | - | - | - | {reason} | - | - |" in out.out
    assert f"two nginx proxies (nginx -> nginx): {reason}" in out.err
    assert " vs nginx |" not in out.out  # no second ratio without the pair
    assert "| two gateways (NCP-B -> NCP-A) [h1] | instance x16 |" in out.out  # the rest still measured
