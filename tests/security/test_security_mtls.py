"""Mutual TLS between NCPs over real loopback uvicorn: the refusal matrix (eHDSI mutual TLS).

FR's border listener requires a client certificate from the federation CA; the app behind it reads the
verified peer certificate from the ASGI scope and maps it to the country registered for it.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ncp.errors import NcpError, fhir_error_response
from ncp.security.pki import (
    CertKeyPair,
    FederationPki,
    TlsPeerH11Protocol,
    peer_certificate,
    tls_peer_protocol,
)


class PeerApp:
    """Answers with the calling country as recognised by ``peer_country``; counts requests served."""

    def __init__(self, pki: FederationPki) -> None:
        self.calls = 0
        self.pki = pki
        self.app = Starlette(
            routes=[Route("/whoami", self.whoami), Route("/border", self.border)],
            exception_handlers={NcpError: self.error},
        )

    async def error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, NcpError)
        return fhir_error_response(exc)

    async def border(self, request: Request) -> JSONResponse:
        self.calls += 1
        return JSONResponse({"country": self.pki.require_peer_country(request.scope)})

    async def whoami(self, request: Request) -> JSONResponse:
        self.calls += 1
        tls = request.scope.get("extensions", {}).get("tls", {})
        return JSONResponse(
            {
                "country": self.pki.peer_country(peer_certificate(request.scope)),
                "name": tls.get("client_cert_name"),
                "tls_version": tls.get("tls_version"),
            }
        )


@pytest.fixture
def border(serve: Callable[..., str], pki: FederationPki) -> tuple[str, PeerApp]:
    peer_app = PeerApp(pki)
    return serve(peer_app.app, **pki.uvicorn_options("FR")), peer_app


def get(base: str, context: ssl.SSLContext) -> httpx.Response:
    with httpx.Client(verify=context, timeout=10) as client:
        return client.get(f"{base}/whoami")


def assert_handshake_fails(base: str, context: ssl.SSLContext) -> None:
    port = int(base.rsplit(":", 1)[1])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        pytest.raises((ssl.SSLError, ConnectionResetError)),
    ):
        context.wrap_socket(raw, server_hostname="127.0.0.1")


# --- accepted peers --------------------------------------------------------------------------------------


def test_registered_client_is_served_and_recognised_as_its_country(
    border: tuple[str, PeerApp], pki: FederationPki
) -> None:
    base, app = border
    answer = get(base, pki.client_ssl_context("AT", peer="FR"))
    assert answer.status_code == 200
    assert answer.json() == {"country": "AT", "name": "CN=ncp-at,O=AT,C=AT", "tls_version": 0x0304}
    assert app.calls == 1


def test_another_countrys_valid_certificate_is_recognised_as_that_other_country(
    border: tuple[str, PeerApp], pki: FederationPki
) -> None:
    base, _ = border
    assert get(base, pki.client_ssl_context("NO", peer="FR")).json()["country"] == "NO"


def test_registered_peer_passes_the_border_check(border: tuple[str, PeerApp], pki: FederationPki) -> None:
    base, _ = border
    with httpx.Client(verify=pki.client_ssl_context("NO", peer="FR")) as client:
        assert client.get(f"{base}/border").json() == {"country": "NO"}


def test_valid_but_unregistered_certificate_passes_tls_and_is_refused_by_the_border_check(
    border: tuple[str, PeerApp], pki: FederationPki
) -> None:
    """Same CA, same subject as AT's, other certificate: the SMP-style registry check says 403."""
    base, _ = border
    with httpx.Client(verify=pki.ssl_context_with(pki.unregistered_client("AT"), peer="FR")) as client:
        assert client.get(f"{base}/whoami").json()["country"] is None
        refused = client.get(f"{base}/border")
    assert refused.status_code == 403
    assert refused.json()["issue"][0]["code"] == "forbidden"


async def test_aiohttp_client_with_a_pinned_context_reaches_only_the_expected_ncp(
    serve: Callable[..., str], pki: FederationPki
) -> None:
    """The data plane client (aiohttp) goes through ``wrap_bio``: the peer pin holds there too."""
    app = PeerApp(pki)
    genuine = serve(app.app, **pki.uvicorn_options("FR"))
    impostor = serve(app.app, **pki.uvicorn_options("FR", credentials=pki.server_credentials("NO")))
    connector = aiohttp.TCPConnector(ssl=pki.client_ssl_context("AT", peer="FR"))
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"{genuine}/whoami") as answer:
            assert (await answer.json())["country"] == "AT"
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(f"{impostor}/whoami")
    assert app.calls == 1


def test_h11_variant_of_the_protocol_also_exposes_the_peer(
    serve: Callable[..., str], pki: FederationPki
) -> None:
    app = PeerApp(pki)
    base = serve(app.app, **{**pki.uvicorn_options("FR"), "http": TlsPeerH11Protocol})
    assert get(base, pki.client_ssl_context("AT", peer="FR")).json()["country"] == "AT"


def test_plain_http_listener_has_no_peer(serve: Callable[..., str], pki: FederationPki) -> None:
    app = PeerApp(pki)
    base = serve(app.app, http=tls_peer_protocol())
    assert httpx.get(f"{base}/whoami").json() == {"country": None, "name": None, "tls_version": None}


# --- refused at the handshake (server side) ---------------------------------------------------------------

BAD_CLIENTS: dict[str, Callable[[FederationPki], CertKeyPair | None]] = {
    "no certificate": lambda pki: None,
    "expired": lambda pki: pki.expired_client("AT"),
    "not yet valid": lambda pki: pki.not_yet_valid_client("AT"),
    "unknown CA": lambda pki: pki.unknown_ca_client("AT"),
    "server certificate used as client (no clientAuth EKU)": lambda pki: pki.server_credentials("AT"),
}


@pytest.mark.parametrize("case", BAD_CLIENTS)
def test_bad_client_credentials_get_no_response_and_reach_no_app(
    case: str, border: tuple[str, PeerApp], pki: FederationPki
) -> None:
    base, app = border
    with pytest.raises(httpx.TransportError):
        get(base, pki.ssl_context_with(BAD_CLIENTS[case](pki), peer="FR"))
    assert app.calls == 0


@pytest.mark.parametrize("case", BAD_CLIENTS)
def test_tls12_handshake_itself_fails_for_bad_client_credentials(
    case: str, border: tuple[str, PeerApp], pki: FederationPki
) -> None:
    """With TLS 1.2 the server checks the client certificate before its Finished: the handshake fails."""
    base, app = border
    context = pki.ssl_context_with(BAD_CLIENTS[case](pki), peer="FR")
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    assert_handshake_fails(base, context)
    assert app.calls == 0


def _legacy_tls(context: ssl.SSLContext) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1_1 itself is deprecated in Python
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")


def _cbc_suites(context: ssl.SSLContext) -> None:
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA256")


@pytest.mark.parametrize("weaken", [_legacy_tls, _cbc_suites], ids=["TLS 1.1", "CBC suites"])
def test_legacy_protocols_and_non_aead_suites_are_refused(
    weaken: Callable[[ssl.SSLContext], None], border: tuple[str, PeerApp], pki: FederationPki
) -> None:
    base, app = border
    creds = pki.client_credentials("AT")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(pki.ca_file))
    context.load_cert_chain(str(creds.cert), str(creds.key))
    weaken(context)
    assert_handshake_fails(base, context)
    assert app.calls == 0


# --- refused by the client (server identity) --------------------------------------------------------------

BAD_SERVERS: dict[str, Callable[[FederationPki], CertKeyPair]] = {
    "wrong SAN name": lambda pki: pki.wrong_name_server("FR"),
    "unknown CA": lambda pki: pki.unknown_ca_server("FR"),
    "another country's valid certificate": lambda pki: pki.server_credentials("NO"),
}


@pytest.mark.parametrize("case", BAD_SERVERS)
def test_client_refuses_a_server_that_is_not_the_expected_ncp(
    case: str, serve: Callable[..., str], pki: FederationPki
) -> None:
    app = PeerApp(pki)
    base = serve(app.app, **pki.uvicorn_options("FR", credentials=BAD_SERVERS[case](pki)))
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        get(base, pki.client_ssl_context("AT", peer="FR"))
    assert app.calls == 0


def test_without_peer_pinning_the_url_host_is_verified(serve: Callable[..., str], pki: FederationPki) -> None:
    app = PeerApp(pki)
    base = serve(app.app, **pki.uvicorn_options("FR", credentials=pki.wrong_name_server("FR")))
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        get(base, pki.client_ssl_context("AT"))
    assert app.calls == 0


def test_client_context_floor_and_trust(pki: FederationPki) -> None:
    context = pki.client_ssl_context("AT", peer="FR")
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "xcwado federation test CA"),), (("organizationName", "xcwado"),))
    ]
    assert all("GCM" in c["name"] or "CHACHA20" in c["name"] for c in context.get_ciphers())


def test_server_context_requires_client_certificates(pki: FederationPki) -> None:
    context = pki.server_ssl_context("FR")
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_uvicorn_options_name_the_files_uvicorn_needs(pki: FederationPki) -> None:
    options: dict[str, Any] = pki.uvicorn_options("FR")
    assert options["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert options["ssl_certfile"] == str(pki.server_credentials("FR").cert)
    assert options["ssl_keyfile"] == str(pki.server_credentials("FR").key)
    assert options["ssl_ca_certs"] == str(pki.ca_file)
    assert json.loads((pki.directory / "registry.json").read_text())["host"] == "127.0.0.1"


def test_no_code_in_the_package_disables_certificate_verification() -> None:
    """Reliability goal 2: no TrustAll / Noop verifier anywhere (OpenNCP anti-pattern [E1g][E1h])."""
    package = Path(__file__).resolve().parents[2] / "ncp"
    forbidden = re.compile(
        r"CERT_NONE|check_hostname\s*=\s*False|verify\s*=\s*False|_create_unverified_context|\bssl\s*=\s*False"
    )
    offenders = [
        f"{path.relative_to(package)}:{n}"
        for path in package.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if forbidden.search(line)
    ]
    assert offenders == []
