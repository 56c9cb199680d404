"""No retrieveURL, however crafted, makes the Responding Imaging Gateway connect outside its allowlist.

A canary TCP listener counts every connection it receives; hundreds of generated retrieveURL values
aimed at it (IP literals in other notations, userinfo, IDN, other schemes, encodings, dot segments)
go through a real border listener. The canary must see zero connections.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ncp.gateway.app import create_border_app
from ncp.gateway.settings import GatewaySettings
from ncp.topology import CountryEndpoints, Endpoints, builtin_topology

TOPOLOGY = builtin_topology("default")
FR = TOPOLOGY.countries["FR"]
RLUID = FR.pacs[0].retrieve_location_uid


class Canary:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()


@pytest.fixture(scope="module")
def canary() -> Iterator[Canary]:
    c = Canary()
    yield c
    c.sock.close()


@pytest.fixture(scope="module")
def border(canary: Canary) -> Iterator[str]:
    from ncp.server import serve_in_thread

    # The only allowlisted PACS is on a port nobody listens on: any connection attempt elsewhere is a leak.
    endpoints = Endpoints(
        {
            "FR": CountryEndpoints(
                FR.home_community_id,
                FR.patient_id_issuer,
                "http://127.0.0.1:9",
                "http://127.0.0.1:9",
                {"national": "http://127.0.0.1:9/fhir"},
                {RLUID: "http://127.0.0.1:9/dicom-web/"},
            ),
        }
    )
    with serve_in_thread(create_border_app(GatewaySettings(TOPOLOGY, "FR", endpoints))) as url:
        yield url


def _notations(port: int) -> list[str]:
    return [
        f"127.0.0.1:{port}",
        f"localhost:{port}",
        f"0x7f000001:{port}",
        f"2130706433:{port}",
        f"0177.0.0.1:{port}",
        f"127.1:{port}",
        f"[::1]:{port}",
        f"[::ffff:127.0.0.1]:{port}",
        f"127.0.0.1.:{port}",
        f"LOCALHOST:{port}",
        f"xn--lcalhost-3ya:{port}",
        f"loсalhost:{port}",
        f"127.0.0.1%2e:{port}",
        f"127.0.0.1:9@127.0.0.1:{port}",
        f"user:pw@127.0.0.1:{port}",
        f"127.0.0.1:9%40127.0.0.1:{port}",
        f"127.0.0.1:9\\@127.0.0.1:{port}",
    ]


@st.composite
def crafted(draw: st.DrawFn, port: int) -> str:
    scheme = draw(
        st.sampled_from(["", "http://", "https://", "HTTP://", "file://", "gopher://", "//", "ftp://"])
    )
    host = draw(st.sampled_from(_notations(port)))
    path = draw(
        st.sampled_from(["/dicom-web/", "/", "/dicom-web/../", "/%2e%2e/", "/dicom-web%2F", "", "/x?y#z"])
    )
    junk = draw(st.text(alphabet="/.%@:#?\\ \t", max_size=3))
    return scheme + host + path + junk


def test_five_hundred_crafted_retrieve_urls_cause_no_connection(border: str, canary: Canary) -> None:
    seen: list[int] = []
    url = f"{border}/wado-rs/homeCommunityId/{FR.home_community_id}/RetrieveLocationUID/{RLUID}/studies/1.2.3"

    @settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(value=crafted(canary.port))
    def probe(value: str) -> None:
        r = client.get(url, params={"retrieveURL": value})
        seen.append(r.status_code)
        assert r.status_code in (400, 403), (value, r.status_code)

    with httpx.Client(timeout=10) as client:  # one client: building one costs more than a request here
        probe()
    assert len(seen) >= 500
    assert canary.connections == 0


def test_the_canary_does_count_connections(canary: Canary) -> None:
    """Guards the test above: a canary that cannot see connections would prove nothing."""
    before = canary.connections
    with socket.create_connection(("127.0.0.1", canary.port)):
        pass
    import time

    for _ in range(50):
        if canary.connections > before:
            break
        time.sleep(0.02)
    assert canary.connections == before + 1
