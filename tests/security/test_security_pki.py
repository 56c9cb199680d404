"""The federation test PKI on disk: certificate profiles, registry, reload, peer recognition."""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ncp.security.pki import FederationPki, PkiError, server_name


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_server_certificate_names_the_host_and_the_country(pki: FederationPki) -> None:
    server = cert(pki.server_credentials("FR").cert)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["ncp-fr.test", "localhost"]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert server_name("FR") == "ncp-fr.test"


def test_client_certificate_profile(pki: FederationPki) -> None:
    client = cert(pki.client_credentials("AT").cert)
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "ncp-at"
    assert client.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "AT"
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert client.issuer == cert(pki.ca_file).subject


def test_lifetimes_are_days_not_years(pki: FederationPki) -> None:
    for path in (pki.ca_file, pki.server_credentials("NO").cert, pki.client_credentials("NO").cert):
        c = cert(path)
        assert c.not_valid_after_utc - c.not_valid_before_utc <= timedelta(days=31)
        assert c.not_valid_before_utc <= datetime.now(UTC) <= c.not_valid_after_utc


def test_ca_may_only_sign_leaf_certificates(pki: FederationPki) -> None:
    constraints = cert(pki.ca_file).extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0


def test_private_keys_are_readable_by_the_owner_only(pki: FederationPki) -> None:
    keys = [pki.directory / "ca.key", *(pki.directory / "fr").glob("*.key")]
    assert len(keys) == 5
    assert all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in keys)


def test_load_reopens_the_same_federation(pki: FederationPki) -> None:
    again = FederationPki.load(pki.directory)
    assert again.countries == ("FR", "AT", "NO")
    assert again.client_fingerprint("AT") == pki.client_fingerprint("AT")
    der = cert(pki.client_credentials("NO").cert).public_bytes(Encoding.DER)
    assert again.peer_country(der) == "NO"
    assert again.idp_key("FR").private_numbers() == pki.idp_key("FR").private_numbers()


def test_load_refuses_a_certificate_that_differs_from_the_registry(
    pki: FederationPki, tmp_path: Path
) -> None:
    copy = tmp_path / "pki"
    shutil.copytree(pki.directory, copy)
    shutil.copy(copy / "no" / "client.pem", copy / "at" / "client.pem")
    with pytest.raises(PkiError, match="AT client certificate does not match"):
        FederationPki.load(copy)


def test_load_of_a_directory_without_registry_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="no usable PKI registry"):
        FederationPki.load(tmp_path)


@pytest.mark.parametrize("country", ["XX", "fr", "../etc", "F"])
def test_unknown_or_malformed_country_never_becomes_a_path(pki: FederationPki, country: str) -> None:
    with pytest.raises(PkiError):
        pki.client_credentials(country)


@pytest.mark.parametrize("countries", [[], ["FR", "FR"], ["FRA"]])
def test_create_refuses_bad_country_lists(tmp_path: Path, countries: list[str]) -> None:
    with pytest.raises(PkiError):
        FederationPki.create(tmp_path, countries)


def test_peer_country_accepts_der_pem_and_the_getpeercert_dict(pki: FederationPki) -> None:
    pem = pki.client_credentials("AT").cert.read_text()
    assert pki.peer_country(pem) == "AT"
    assert pki.peer_country(ssl.PEM_cert_to_DER_cert(pem)) == "AT"
    assert pki.peer_country(cert(pki.client_credentials("AT").cert)) == "AT"


def handshake_peer_dict(pki: FederationPki, country: str) -> dict[str, Any]:
    """``getpeercert()`` on FR's server side after an in-memory handshake with ``country``'s client."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = pki.server_ssl_context("FR").wrap_bio(s_in, s_out, server_side=True)
    client = pki.client_ssl_context(country, peer="FR").wrap_bio(c_in, c_out)
    pending = {"client": client, "server": server}
    for _ in range(10):
        for name, side in list(pending.items()):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
                del pending[name]
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if not pending:
            return dict(server.getpeercert() or {})
    raise AssertionError("handshake did not complete")


def test_peer_country_accepts_the_getpeercert_dict(pki: FederationPki) -> None:
    info = handshake_peer_dict(pki, "AT")
    assert pki.peer_country(info) == "AT"
    assert pki.peer_country({**info, "serialNumber": "01"}) is None
    assert pki.peer_country({**info, "subject": ((("commonName", "ncp-no"),),)}) is None


def test_peer_country_is_decided_by_the_exact_certificate_not_its_name(pki: FederationPki) -> None:
    """Same subject (CN ncp-at, O AT), other key: a rogue CA copy or a re-issued cert is not AT."""
    rogue = pki.unknown_ca_client("AT").cert.read_text()
    expired = pki.expired_client("AT").cert.read_text()
    assert cert(pki.unknown_ca_client("AT").cert).subject == cert(pki.client_credentials("AT").cert).subject
    assert pki.peer_country(rogue) is None
    assert pki.peer_country(expired) is None


@pytest.mark.parametrize("value", [None, b"", b"not a certificate", "-----BEGIN CERTIFICATE-----\nxx", {}])
def test_peer_country_of_garbage_is_none(pki: FederationPki, value: object) -> None:
    assert pki.peer_country(value) is None  # type: ignore[arg-type]


def test_server_certificates_are_not_client_identities(pki: FederationPki) -> None:
    assert pki.peer_country(pki.server_credentials("AT").cert.read_text()) is None
