"""A test PKI per federation and the mutual-TLS contexts of the ``border`` listeners (docs/architecture.md).

Layout of the PKI directory (keys are unencrypted PEM, mode 0600: this is a test PKI)::

    registry.json              countries, host, SHA-256 fingerprints of the registered certificates
    ca.pem  ca.key             federation CA (EC P-256)
    <cc>/server.pem .key       server certificate: SAN IP <host>, DNS ncp-<cc>.test, DNS localhost
    <cc>/client.pem .key       client certificate: CN ncp-<cc>, O <CC>, EKU clientAuth
    <cc>/idp.key  ncp.key      token signing keys (EC P-256) of the country's IdP and NCP
    bad/<case>-<cc>/...        deliberately bad credentials for the refusal matrix (made on demand)

The registry plays SMP's role (eHDSI): a peer is recognised by the exact fingerprint of the
certificate registered for its country, never by its CN alone.

Peer certificate in ASGI: uvicorn does not expose the ASGI TLS extension, so
:meth:`FederationPki.uvicorn_options` selects :class:`TlsPeerHttpToolsProtocol` (or
:class:`TlsPeerH11Protocol`), uvicorn's own HTTP protocols with one override: once the handshake has
completed (asyncio calls ``connection_made`` only then) they read the verified peer certificate from the
connection's ``ssl_object`` and put it into every request scope of that connection as
``scope["extensions"]["tls"]`` (ASGI TLS extension: ``client_cert_chain`` PEM, ``client_cert_name``,
``tls_version``). :func:`peer_certificate` reads it back as DER for :meth:`FederationPki.peer_country`.
No proxy, no extra port: the certificate comes from the same socket.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import json
import os
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ncp.errors import Forbidden
from ncp.security.tokens import (
    IdentityProvider,
    NcpAssertionSigner,
    TokenVerifier,
    TrustedIssuer,
    certificate_thumbprint,
    idp_issuer,
    ncp_id,
)

__all__ = [
    "TLS12_CIPHERS",
    "CertKeyPair",
    "FederationPki",
    "PkiError",
    "TlsPeerH11Protocol",
    "TlsPeerHttpToolsProtocol",
    "peer_certificate",
    "peer_certificate_pem",
    "server_name",
    "tls_peer_protocol",
]

# TLS 1.2 suites: ECDHE + AEAD only (BCP 195 / Mozilla "intermediate"); TLS 1.3 suites are all AEAD.
TLS12_CIPHERS = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305"
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_REGISTRY = "registry.json"
_CA_DAYS = 30
_SKEW = timedelta(minutes=5)  # backdate notBefore so small clock differences never break a handshake


class PkiError(ValueError):
    """The PKI directory is missing, inconsistent, or asked for an unknown country."""


@dataclass(frozen=True)
class CertKeyPair:
    """A certificate and its private key as PEM files."""

    cert: Path
    key: Path


def server_name(country: str) -> str:
    """The DNS name a country's NCP server certificate is issued for (what clients verify)."""
    return f"ncp-{_cc(country).lower()}.test"


def _cc(country: str) -> str:
    if not _COUNTRY.match(country):
        raise PkiError(f"country code {country!r} must be an ISO 3166 alpha-2 code")
    return country


class FederationPki:
    """The federation CA, per-country TLS credentials and token keys, all under one directory."""

    def __init__(self, directory: Path, registry: Mapping[str, Any]) -> None:
        self.directory = directory
        self.host: str = registry["host"]
        self._countries: dict[str, dict[str, str]] = dict(registry["countries"])
        self._by_client_fp = {entry["client_sha256"]: cc for cc, entry in self._countries.items()}

    # --- creation and loading ------------------------------------------------------------------------

    @classmethod
    def create(
        cls, directory: Path, countries: Sequence[str], *, host: str = "127.0.0.1", days: int = 7
    ) -> FederationPki:
        """Write a new federation CA and, per country, server + client certificates and signing keys."""
        codes = [_cc(c) for c in countries]
        if not codes or len(set(codes)) != len(codes) or not 0 < days <= _CA_DAYS:
            raise PkiError("need distinct country codes and a lifetime of 1-30 days")
        directory.mkdir(parents=True, exist_ok=True)
        ca_key = _new_key()
        ca_cert = _ca_certificate(ca_key, "xcwado federation test CA", _CA_DAYS)
        _write(directory / "ca.pem", directory / "ca.key", ca_cert, ca_key)
        registry: dict[str, Any] = {"version": 1, "host": host, "countries": {}}
        for cc in codes:
            registry["countries"][cc] = _issue_country(
                directory / cc.lower(), cc, host, ca_cert, ca_key, days
            )
        (directory / _REGISTRY).write_text(json.dumps(registry, indent=2))
        return cls(directory, registry)

    @classmethod
    def load(cls, directory: Path) -> FederationPki:
        """Open an existing PKI; every registered certificate must still match its fingerprint."""
        try:
            registry = json.loads((directory / _REGISTRY).read_text())
            pki = cls(directory, registry)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PkiError(f"no usable PKI registry in {directory}: {exc}") from None
        for cc in pki.countries:
            for kind in ("client", "server"):
                if _fingerprint(_load_cert(pki._pair(cc, kind).cert)) != pki._countries[cc][f"{kind}_sha256"]:
                    raise PkiError(f"{cc} {kind} certificate does not match the registry")
        return pki

    @property
    def countries(self) -> tuple[str, ...]:
        return tuple(self._countries)

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    # --- credentials -----------------------------------------------------------------------------------

    def server_credentials(self, country: str) -> CertKeyPair:
        return self._pair(country, "server")

    def client_credentials(self, country: str) -> CertKeyPair:
        return self._pair(country, "client")

    def client_fingerprint(self, country: str) -> str:
        """SHA-256 (hex) of the client certificate registered for ``country``."""
        return self._countries[self._known(country)]["client_sha256"]

    def client_thumbprint(self, country: str) -> str:
        """``x5t#S256`` of the client certificate ``country``'s NCP presents (RFC 8705 §3.1)."""
        cert = _load_cert(self.client_credentials(country).cert)
        return certificate_thumbprint(cert.public_bytes(serialization.Encoding.DER))

    def _known(self, country: str) -> str:
        if _cc(country) not in self._countries:
            raise PkiError(f"country {country!r} is not in this PKI ({', '.join(self._countries)})")
        return country

    def _pair(self, country: str, kind: str) -> CertKeyPair:
        folder = self.directory / self._known(country).lower()
        return CertKeyPair(folder / f"{kind}.pem", folder / f"{kind}.key")

    # --- TLS contexts ----------------------------------------------------------------------------------

    def server_ssl_context(self, country: str, *, credentials: CertKeyPair | None = None) -> ssl.SSLContext:
        """Border listener: TLS >= 1.2, AEAD suites, client certificate required and issued by our CA."""
        pair = credentials or self.server_credentials(country)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _harden(ctx)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(pair.cert), str(pair.key))
        return ctx

    def client_ssl_context(self, country: str, *, peer: str | None = None) -> ssl.SSLContext:
        """NCP client presenting ``country``'s certificate, trusting only the federation CA.

        With ``peer`` the server must hold ``peer``'s certificate (name ``ncp-<peer>.test``) whatever
        host the URL names, so another country's valid certificate is refused; without it the URL's
        host is verified against the SAN (127.0.0.1 is in every server certificate).
        """
        return self.ssl_context_with(self.client_credentials(country), peer=peer)

    def ssl_context_with(self, credentials: CertKeyPair | None, *, peer: str | None = None) -> ssl.SSLContext:
        """A client context presenting any (possibly bad) credentials, or none: for the refusal matrix."""
        ctx = _PinnedNameContext(ssl.PROTOCOL_TLS_CLIENT) if peer else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if isinstance(ctx, _PinnedNameContext) and peer:
            ctx.expected_name = server_name(self._known(peer))
        _harden(ctx)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(self.ca_file))
        if credentials is not None:
            ctx.load_cert_chain(str(credentials.cert), str(credentials.key))
        return ctx

    def uvicorn_options(self, country: str, *, credentials: CertKeyPair | None = None) -> dict[str, Any]:
        """``uvicorn.Config`` / ``serve_in_thread`` options for ``country``'s border listener.

        Besides the file paths, ``ssl_context_factory`` installs :meth:`server_ssl_context` (uvicorn's
        own context has no TLS floor setting) and ``http`` the protocol exposing the peer certificate.
        """
        pair = credentials or self.server_credentials(country)
        options: dict[str, Any] = {
            "ssl_certfile": str(pair.cert),
            "ssl_keyfile": str(pair.key),
            "ssl_ca_certs": str(self.ca_file),
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
            "ssl_ciphers": TLS12_CIPHERS,
            "http": tls_peer_protocol(),
        }
        if "ssl_context_factory" in inspect.signature(uvicorn.Config).parameters:  # newer uvicorn only
            context = self.server_ssl_context(country, credentials=pair)
            options["ssl_context_factory"] = partial(_context_factory, context)
        return options

    # --- peers -----------------------------------------------------------------------------------------

    def peer_country(
        self, certificate: bytes | str | x509.Certificate | Mapping[str, Any] | None
    ) -> str | None:
        """The country whose registered client certificate this is (exact SHA-256 match), else None.

        Accepts DER bytes (``getpeercert(binary_form=True)``, :func:`peer_certificate`), PEM text, a
        ``cryptography`` certificate, or the dict of ``getpeercert()``, which has no fingerprint and is
        matched on serial number + subject + issuer as registered.
        """
        if certificate is None:
            return None
        if isinstance(certificate, Mapping):
            return self._peer_from_dict(certificate)
        try:
            cert = _as_certificate(certificate)
        except ValueError:
            return None
        return self._by_client_fp.get(_fingerprint(cert))

    def require_peer_country(self, scope: Mapping[str, Any]) -> str:
        """The registered country of this request's client certificate, else 403 (for border routes)."""
        country = self.peer_country(peer_certificate(scope))
        if country is None:
            raise Forbidden("client certificate is not registered for any country")
        return country

    def _peer_from_dict(self, info: Mapping[str, Any]) -> str | None:
        serial = str(info.get("serialNumber", "")).lower().lstrip("0")
        names = {_dict_name(info.get("subject")), _dict_name(info.get("issuer"))}
        for cc, entry in self._countries.items():
            if entry["client_serial"] == serial and names == {entry["client_subject"], entry["issuer"]}:
                return cc
        return None

    # --- token keys ------------------------------------------------------------------------------------

    def idp_key(self, country: str) -> ec.EllipticCurvePrivateKey:
        return _load_key(self.directory / self._known(country).lower() / "idp.key")

    def ncp_signing_key(self, country: str) -> ec.EllipticCurvePrivateKey:
        return _load_key(self.directory / self._known(country).lower() / "ncp.key")

    def identity_provider(self, country: str, *, home_community_id: str | None = None) -> IdentityProvider:
        return IdentityProvider(
            country, self.idp_key(country), idp_issuer(country), home_community_id=home_community_id
        )

    def ncp_signer(self, country: str) -> NcpAssertionSigner:
        """``country``'s NCP signer: its assertions are bound to the client certificate it presents."""
        return NcpAssertionSigner(
            country, self.ncp_signing_key(country), certificate_thumbprint=self.client_thumbprint(country)
        )

    def trusted_idps(self, countries: Iterable[str] | None = None) -> dict[str, TrustedIssuer]:
        """Public-key registry of identity providers (all countries unless restricted)."""
        chosen = self.countries if countries is None else tuple(countries)
        return {idp_issuer(cc): TrustedIssuer(self.idp_key(cc).public_key(), "ES256", cc) for cc in chosen}

    def trusted_ncps(self, countries: Iterable[str] | None = None) -> dict[str, TrustedIssuer]:
        """Public-key registry of NCP assertion signers (all countries unless restricted)."""
        chosen = self.countries if countries is None else tuple(countries)
        return {
            ncp_id(cc): TrustedIssuer(self.ncp_signing_key(cc).public_key(), "ES256", cc) for cc in chosen
        }

    def gateway_verifier(self, country: str, **options: Any) -> TokenVerifier:
        """For ``country``'s consumer-facing listener: its own IdP's tokens addressed to its NCP."""
        return TokenVerifier(self.trusted_idps([country]), ncp_id(country), **options)

    def border_verifier(self, country: str, **options: Any) -> TokenVerifier:
        """For ``country``'s border listener: NCPs' assertions addressed to this NCP (its own included:
        its gateway identifies its own country's patients through its border too)."""
        return TokenVerifier(self.trusted_ncps(list(self.countries)), ncp_id(self._known(country)), **options)

    # --- deliberately bad credentials (refusal matrix) -------------------------------------------------

    def expired_client(self, country: str) -> CertKeyPair:
        """Issued by the federation CA for ``country``, expired yesterday."""
        now = datetime.now(UTC)
        return self._bad("expired", country, now - timedelta(days=10), now - timedelta(days=1))

    def not_yet_valid_client(self, country: str) -> CertKeyPair:
        """Issued by the federation CA for ``country``, valid from tomorrow."""
        now = datetime.now(UTC)
        return self._bad("future", country, now + timedelta(days=1), now + timedelta(days=5))

    def unregistered_client(self, country: str) -> CertKeyPair:
        """Valid and from the federation CA, same subject as ``country``'s, but not the registered one:
        passes the handshake, must be refused by :meth:`require_peer_country` (the SMP check)."""
        return self._bad("unregistered", country)

    def unknown_ca_client(self, country: str) -> CertKeyPair:
        """Same subject as ``country``'s client, from a rogue CA that copies the federation CA's name."""
        return self._bad("rogue", country, rogue=True)

    def unknown_ca_server(self, country: str) -> CertKeyPair:
        """A server certificate with the right names from the rogue CA."""
        return self._bad("rogue-server", country, rogue=True, server_names=[server_name(country), self.host])

    def wrong_name_server(self, country: str) -> CertKeyPair:
        """From the federation CA but for ``wrong-name.test`` only (Gazelle's "INVALID FQDN" case)."""
        return self._bad("wrong-name", country, server_names=["wrong-name.test"])

    def _bad(
        self,
        case: str,
        country: str,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        *,
        rogue: bool = False,
        server_names: Sequence[str] | None = None,
    ) -> CertKeyPair:
        cc = self._known(country)
        folder = self.directory / "bad" / f"{case}-{cc.lower()}"
        folder.mkdir(parents=True, exist_ok=True)
        ca_cert, ca_key = self._ca() if not rogue else self._rogue_ca()
        start = not_before or datetime.now(UTC) - _SKEW
        end = not_after or datetime.now(UTC) + timedelta(days=1)
        key = _new_key()
        if server_names is None:
            cert = _leaf(_client_name(cc), key, ca_cert, ca_key, start, end, client=True, names=[])
        else:
            cert = _leaf(
                _server_subject(cc), key, ca_cert, ca_key, start, end, client=False, names=server_names
            )
        pair = CertKeyPair(folder / "cert.pem", folder / "cert.key")
        _write(pair.cert, pair.key, cert, key)
        return pair

    def _ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        return _load_cert(self.ca_file), _load_key(self.directory / "ca.key")

    def _rogue_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = _new_key()
        return _ca_certificate(key, "xcwado federation test CA", 2), key


# --- certificate building -------------------------------------------------------------------------------


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _ca_certificate(key: ec.EllipticCurvePrivateKey, common_name: str, days: int) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "xcwado"),
        ]
    )
    now = datetime.now(UTC)
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    return builder.sign(key, hashes.SHA256())


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _client_name(cc: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, cc),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cc),
            x509.NameAttribute(NameOID.COMMON_NAME, f"ncp-{cc.lower()}"),
        ]
    )


def _server_subject(cc: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, cc),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cc),
            x509.NameAttribute(NameOID.COMMON_NAME, server_name(cc)),
        ]
    )


def _san(names: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _leaf(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    not_before: datetime,
    not_after: datetime,
    *,
    client: bool,
    names: Sequence[str],
) -> x509.Certificate:
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(_san(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _issue_country(
    folder: Path, cc: str, host: str, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, days: int
) -> dict[str, str]:
    """Server and client certificates plus token keys for one country; returns its registry entry."""
    folder.mkdir(parents=True, exist_ok=True)
    start, end = datetime.now(UTC) - _SKEW, datetime.now(UTC) + timedelta(days=days)
    server_key, client_key = _new_key(), _new_key()
    names = [host, server_name(cc), "localhost"]
    server = _leaf(_server_subject(cc), server_key, ca_cert, ca_key, start, end, client=False, names=names)
    client = _leaf(_client_name(cc), client_key, ca_cert, ca_key, start, end, client=True, names=[])
    _write(folder / "server.pem", folder / "server.key", server, server_key)
    _write(folder / "client.pem", folder / "client.key", client, client_key)
    for name in ("idp.key", "ncp.key"):
        _write_key(folder / name, _new_key())
    return {
        "server_sha256": _fingerprint(server),
        "client_sha256": _fingerprint(client),
        "client_serial": format(client.serial_number, "x"),
        "client_subject": client.subject.rfc4514_string(),
        "issuer": ca_cert.subject.rfc4514_string(),
    }


def _write(cert_path: Path, key_path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot read certificate {path.name}: {exc}") from None


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot read key {path.name}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{path.name} is not an EC key")
    return key


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _as_certificate(value: bytes | str | x509.Certificate) -> x509.Certificate:
    if isinstance(value, x509.Certificate):
        return value
    if isinstance(value, str):
        return x509.load_pem_x509_certificate(value.encode("ascii"))
    return x509.load_der_x509_certificate(value)


def _dict_name(rdns: Any) -> str:
    """RFC 4514 string of a ``getpeercert()`` subject/issuer (RDN tuples), as cryptography writes it."""
    short = {"countryName": "C", "organizationName": "O", "commonName": "CN"}
    try:
        parts = [f"{short.get(k, k)}={v}" for rdn in rdns for k, v in rdn]
    except (TypeError, ValueError):
        return ""
    return ",".join(reversed(parts))


# --- TLS plumbing ---------------------------------------------------------------------------------------


def _harden(ctx: ssl.SSLContext) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT


class _PinnedNameContext(ssl.SSLContext):
    """Client context that always verifies the server as one fixed name (and sends it as SNI).

    httpx/httpcore (``wrap_socket``/``wrap_bio``) and asyncio/aiohttp (``wrap_bio``) pass the URL host as
    ``server_hostname``; replacing it binds the connection to the expected peer country.
    """

    expected_name = ""

    def wrap_socket(
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        return super().wrap_socket(
            sock, server_side, do_handshake_on_connect, suppress_ragged_eofs, self.expected_name, session
        )

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side, self.expected_name, session)


def _context_factory(
    context: ssl.SSLContext, config: Any, default: Callable[[], ssl.SSLContext]
) -> ssl.SSLContext:
    return context


_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


def _tls_extension(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    """ASGI TLS extension for a connection whose handshake (and client verification) has completed."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    name = x509.load_der_x509_certificate(der).subject.rfc4514_string() if der else None
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,
    }


def _with_tls(app: ASGIApp, tls: dict[str, Any]) -> ASGIApp:
    async def wrapped(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope.get("type") in ("http", "websocket"):
            scope = {**scope, "extensions": {**(scope.get("extensions") or {}), "tls": tls}}
        await app(scope, receive, send)

    return wrapped


class TlsPeerH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus ``scope["extensions"]["tls"]`` for every request on the connection."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        tls = _tls_extension(transport)
        if tls is not None:
            self.app = _with_tls(self.app, tls)


class TlsPeerHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (its faster parser) plus the ASGI TLS extension, as above."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        tls = _tls_extension(transport)
        if tls is not None:
            self.app = _with_tls(self.app, tls)


def tls_peer_protocol() -> type[asyncio.Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` on border listeners."""
    return TlsPeerHttpToolsProtocol


def peer_certificate(scope: Mapping[str, Any]) -> bytes | None:
    """DER of the verified client certificate of this request (set by the TLS-peer protocols), else None."""
    pem = peer_certificate_pem(scope)
    return None if pem is None else ssl.PEM_cert_to_DER_cert(pem)


def peer_certificate_pem(scope: Mapping[str, Any]) -> str | None:
    """:func:`peer_certificate` as PEM: one string per connection, a cheap cache key for every request."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    return str(chain[0]) if chain else None
