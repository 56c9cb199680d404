"""No address inside country A reaches country B: every URL the PACS writes into an answer (each part's
Content-Location, PS3.18 8.7.3) names the consumer's own gateway, and that URL works there."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from audit_support import audited
from e2e_federations import Seeded

import ncp
from ncp.federation import Federation
from ncp.forwarded import forwarded_headers, public_base
from ncp.publish import seed_federation

DICOM = {"Accept": 'multipart/related; type="application/dicom"'}


def _heads(r: httpx.Response) -> list[dict[str, str]]:
    """Each multipart part's header fields (lower-case names)."""
    boundary = r.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"').encode()
    heads = []
    for part in r.content.split(b"--" + boundary)[1:-1]:
        block = part.lstrip(b"\r\n").split(b"\r\n\r\n", 1)[0].decode("latin-1")
        heads.append(
            {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in block.split("\r\n"))}
        )
    return heads


def test_each_part_names_the_consumers_gateway_and_that_url_retrieves_the_instance(
    default_mado: Seeded,
) -> None:
    study = default_mado.published["FR"].data.studies[0]
    series = study.series[0]
    base = (
        f"{default_mado.gateway('AT')}/wado/homeCommunityId/{default_mado.hcid('FR')}"
        f"/RetrieveLocationUID/{series.retrieve_location_uid}"
    )
    r = httpx.get(
        f"{base}/studies/{study.study_instance_uid}/series/{series.series_instance_uid}", headers=DICOM
    )
    assert r.status_code == 200
    internal = {p.split("//")[1].split("/")[0] for p in default_mado.fed.plan.endpoints["FR"].pacs.values()}
    internal.add(default_mado.fed.plan.endpoints["FR"].border.split("//")[1])
    heads = _heads(r)
    assert len(heads) == len(series.instances)
    for head in heads:
        assert head["content-location"].startswith(f"{base}/studies/{study.study_instance_uid}/series/")
        assert not any(address in str(head) for address in internal)
    one = httpx.get(heads[0]["content-location"], headers=DICOM)
    assert one.status_code == 200 and len(_heads(one)) == 1
    assert _heads(one)[0]["content-location"] == heads[0]["content-location"]


def test_a_public_base_round_trips_through_its_headers() -> None:
    base = "https://ncp-at.example:8443/wado/homeCommunityId/2.999.40.1/RetrieveLocationUID/2.25.1"
    assert public_base(forwarded_headers(base)) == base
    assert public_base(forwarded_headers("http://[::1]:8080/wado")) == "http://[::1]:8080/wado"


@pytest.mark.parametrize(
    ("forwarded", "prefix"),
    [
        ('host="a.example";proto=javascript', "/x"),
        ('host="a.example\r\nX-Evil: 1";proto=http', "/x"),
        ('host="a.example";proto=http, host="b.example";proto=http', "/x"),
        ('host="a.example/path";proto=http', "/x"),
        ('host="user@a.example";proto=http', "/x"),
        ('host="a.example";proto=http', "/x/../y"),
        ('host="a.example";proto=http', "/x?y=1"),
        ('host="a.example";proto=http', "x"),
        ("for=1.2.3.4", "/x"),
    ],
)
def test_a_public_base_that_is_not_plainly_host_scheme_and_path_is_ignored(
    forwarded: str, prefix: str
) -> None:
    assert public_base({"forwarded": forwarded, "x-forwarded-prefix": prefix}) is None


def test_a_gateway_behind_a_reverse_proxy_writes_its_configured_public_base(tmp_path: Path) -> None:
    """``public_url`` is what consumers reach; ``trusted_proxies`` alone may say who the client was."""
    topology = tmp_path / "proxied.toml"
    topology.write_text(
        builtin_topology_text().replace(
            'architecture = "C"',
            'architecture = "C"\npublic_url = "https://imaging.example.at"\ntrusted_proxies = ["127.0.0.1"]',
        )
    )
    with Federation(str(topology), tmp_path / "run", mode="thread", secure=False) as fed:
        published = asyncio.run(seed_federation(fed.topology, fed.plan.endpoints))
        assert fed.state()["countries"]["AT"]["public"] == "https://imaging.example.at"
        study = published["FR"].data.studies[0]
        series = study.series[0]
        path = (
            f"/wado/homeCommunityId/{fed.topology.country('FR').home_community_id}"
            f"/RetrieveLocationUID/{series.retrieve_location_uid}/studies/{study.study_instance_uid}"
        )
        r = httpx.get(
            f"{fed.plan.endpoints['AT'].gateway}{path}",
            headers={**DICOM, "X-Forwarded-For": "198.51.100.7", "X-Request-Id": "behind-proxy"},
        )
        assert r.status_code == 200
        assert all(
            h["content-location"].startswith(f"https://imaging.example.at{path}/series/") for h in _heads(r)
        )
        [event] = audited(tmp_path / "run" / "AT" / "audit.sqlite", "behind-proxy")
        assert event.client == "198.51.100.7"


def builtin_topology_text() -> str:
    return (Path(ncp.__file__).parent / "topologies" / "default.toml").read_text()
