"""The nginx front: nginx carries the image bytes, the Python gateway makes every decision.

``front = "nginx"`` puts one nginx (from Debian) on a country's two public ports. For each XC-WADO image
request nginx asks the gateway (``auth_request`` to :mod:`ncp.gateway.authz` on a unix socket) and the
gateway makes the checks it makes on its own data plane: the consumer's token or the peer's certificate
and NCP assertion, the patient's ownership of the study, the route (homeCommunityId -> border, Retrieve
Location UID or allowlisted ``retrieveURL`` -> PACS). It answers with where the request goes and what
to add to it; nginx then streams the answer itself, over keep-alive connections and mutual TLS between
the NCPs. nginx may only reach the ``upstream`` blocks written here, one per configured border and PACS,
so no URL taken from data can send it elsewhere. Anything the gateway does not approve this way (a
refusal, a metadata answer to rewrite, a preflight, every non-image route) goes to the gateway's own
listeners, unchanged. Each transaction nginx completes is audited by the gateway from nginx's log line
(docs/decisions.md, "The nginx front").
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from ncp.cors import EXPOSE_HEADERS
from ncp.errors import NcpError
from ncp.nginx import NGINX_STREAM
from ncp.security.pki import TLS12_CIPHERS, FederationPki, server_name

__all__ = [
    "ERROR_TAG",
    "FRONT_HEADERS",
    "Front",
    "FrontSpec",
    "SocketsRefused",
    "front_config",
    "front_root",
    "private_socket_dir",
    "socket_dir",
    "socket_path",
    "tls_name",
    "upstream_name",
]

Front = Literal["none", "nginx"]
Listener = Literal["gateway", "border"]
_LISTENERS: tuple[Listener, ...] = ("gateway", "border")

# What the gateway's authz answer tells nginx (auth_request_set), by nginx variable.
FRONT_HEADERS = {
    "xc_target": "x-xcwado-target",  # http(s)://<upstream block>/path?query
    "xc_tls_name": "x-xcwado-tls-name",  # the certificate name the next hop must hold
    "xc_rid": "x-xcwado-request-id",
    "xc_assertion": "x-xcwado-assertion",
    "xc_forwarded": "x-xcwado-forwarded",
    "xc_prefix": "x-xcwado-prefix",
    "xc_origin": "x-xcwado-origin",  # a listed browser origin (CORS), else empty
    "xc_audit": "x-xcwado-audit",  # joins nginx's log line to the gateway's pending audit record
}
_SOCKETS = ("authz", "audit", "app")
# nginx's error lines come to the audit socket too: an answer broken by its upstream is logged "OK" in
# $request_completion (nginx finalizes it as sent), and only its error line tells it was cut
ERROR_TAG = "xcwado_error"


def socket_dir(run_dir: Path) -> Path:
    """A short folder for one federation's front sockets (a unix socket path holds at most 107 bytes, and
    test run folders are longer), named after the run folder: the plan's ``sockets``, chosen once on the host
    and read from the plan by every process and container."""
    digest = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"xcwado-{digest}"


def private_socket_dir(folder: Path, owner: tuple[int, int] | None = None) -> Path:
    """The sockets folder (:func:`socket_dir`), made if missing, refused unless it is a folder of this
    user's (its name can be guessed, so another user could have made it first), and then closed to everyone
    else. ``owner`` (uid, gid; root only): the user a gateway and its nginx run as in containers, who is
    given the folder; one of theirs left by a run that was killed is made again. The folder is checked and
    given through one open handle, so that nobody can swap a link in for it in between."""
    refused = SocketsRefused(f"{folder}: not a folder of this user's; remove it, or use another run folder")
    try:
        if owner is not None and _owned_by(folder, owner[0]):
            shutil.rmtree(folder)  # refuses a link swapped in meanwhile
        folder.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        raise refused from None
    try:
        if os.fstat(fd).st_uid != os.geteuid():
            raise refused
        os.fchmod(fd, 0o700)
        if owner is not None:
            os.fchown(fd, *owner)
    finally:
        os.close(fd)
    return folder


class SocketsRefused(NcpError, PermissionError):
    """The front's sockets folder is not this user's to use."""


def _owned_by(path: Path, uid: int) -> bool:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == uid


def front_root(run_dir: Path, country: str) -> Path:
    """A country's nginx folder: its configuration, logs and temporary files."""
    return run_dir / country / "front"


def socket_path(directory: Path, country: str, listener: str, kind: str) -> Path:
    """In ``directory`` (:func:`socket_dir`): ``authz`` (nginx asks), ``audit`` (nginx logs) or ``app``
    (the gateway's own listener) of one listener."""
    assert kind in _SOCKETS
    return directory / f"{country.lower()}-{listener}-{kind}.sock"


def upstream_name(url: str) -> str:
    """The nginx ``upstream`` block standing for the origin of ``url``."""
    address = "".join(c if c.isalnum() else "_" for c in _address(url))
    return f"xc_{urlsplit(url).scheme}_{address}"


@dataclass(frozen=True)
class FrontSpec:
    """One country's front: its public listeners, the origins it may reach, its TLS material."""

    country: str
    host: str
    gateway_port: int
    border_port: int
    run_dir: Path
    borders: tuple[str, ...]  # every border URL its gateway calls (relays of emulated links included)
    pacs: tuple[str, ...]  # this country's PACS bases
    pki: FederationPki | None  # None: security off, plain HTTP between NCPs
    sockets: Path  # the gateway's unix sockets (the plan's ``sockets``)
    read_timeout_s: float = 30.0
    connect_timeout_s: float = 5.0

    @property
    def root(self) -> Path:
        return front_root(self.run_dir, self.country)

    def socket(self, listener: Listener, kind: str) -> Path:
        return socket_path(self.sockets, self.country, listener, kind)


def front_config(spec: FrontSpec) -> str:
    """The ``http`` block of the country's nginx (``ncp.nginx.nginx_process`` wraps it)."""
    # nginx resolves a host name in an upstream block once, at start, and does not start when it does not
    # resolve: an origin named by host name gets no block, so nginx fails to reach it (no resolver) and
    # hands the request to the gateway's own lane
    urls = [u for u in (*spec.borders, *spec.pacs) if _ip_literal(u)]
    servers = {name: _address(url) for name, url in sorted({upstream_name(u): u for u in urls}.items())}
    for listener in _LISTENERS:
        for kind in ("authz", "app"):
            servers[f"xc_{listener}_{kind}"] = f"unix:{spec.socket(listener, kind)}"
    upstreams = "".join(
        f"  upstream {name} {{ server {address}; keepalive 64; keepalive_requests 100000; }}\n"
        for name, address in servers.items()
    )
    sets = " ".join(f"auth_request_set ${var} $upstream_http_{h.replace('-', '_')};" for var, h in
                    FRONT_HEADERS.items())  # fmt: skip
    return f"""
  log_format xc_audit escape=none '$xc_audit|$status|$request_completion|$connection|$sent_http_warning';
  map $xc_origin $xc_expose {{ "" ""; default "{EXPOSE_HEADERS}"; }}
  map $xc_origin $xc_vary {{ "" ""; default "Origin"; }}
  map "$status:$upstream_http_warning" $xc_warning {{
    "~^(?<code>[45][0-9][0-9]):$" '299 $xc_agent "the next hop answered $code without a reason"';
    default "";
  }}
  client_max_body_size 64m; proxy_request_buffering off;
{upstreams}
{_server(spec, "gateway", sets)}
{_server(spec, "border", sets)}
"""


def _server(spec: FrontSpec, listener: Listener, sets: str) -> str:
    agent = f"ncp-{spec.country.lower()}-{listener}"
    port = spec.gateway_port if listener == "gateway" else spec.border_port
    tls = listener == "border" and spec.pki is not None
    listen = f"listen {spec.host}:{port}{' ssl' if tls else ''};"
    if tls:
        assert spec.pki is not None
        pair = spec.pki.server_credentials(spec.country)
        listen += (
            f" ssl_certificate {pair.cert}; ssl_certificate_key {pair.key}; ssl_verify_client on;"
            f" ssl_client_certificate {spec.pki.ca_file}; ssl_verify_depth 2;"
            f" ssl_protocols TLSv1.2 TLSv1.3; ssl_ciphers {TLS12_CIPHERS}; ssl_prefer_server_ciphers on;"
            f" {_TLS13}"
        )
    cert = "$ssl_client_escaped_cert" if tls else '""'
    prefix = "/wado/" if listener == "gateway" else "/wado-rs/"
    audit = spec.socket(listener, "audit")
    return f"""  server {{
    {listen}
    set $xc_agent {agent}; set $xc_audit "";
    location = /_xc_authz {{
      internal; proxy_pass http://xc_{listener}_authz/{listener}; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_pass_request_body off; proxy_set_header Content-Length "";
      proxy_pass_request_headers off; {_ASKED}
      proxy_set_header X-Xcwado-Uri $request_uri; proxy_set_header X-Xcwado-Method $request_method;
      proxy_set_header X-Xcwado-Client $remote_addr; proxy_set_header X-Xcwado-Client-Cert {cert};
    }}
    location {prefix} {{
      auth_request /_xc_authz; {sets}
      error_page 401 403 500 502 503 504 = @python;
      proxy_pass $xc_target; {NGINX_STREAM}
      proxy_connect_timeout {_ms(spec.connect_timeout_s)}; proxy_read_timeout {_ms(spec.read_timeout_s)};
      proxy_pass_request_headers off; proxy_set_header Host $proxy_host;
      proxy_set_header Accept $http_accept; proxy_set_header Range $http_range;
      proxy_set_header X-Request-Id $xc_rid; proxy_set_header X-Forwarded-By {agent};
      proxy_set_header X-NCP-Assertion $xc_assertion; proxy_set_header Forwarded $xc_forwarded;
      proxy_set_header X-Forwarded-Prefix $xc_prefix;
      {_upstream_tls(spec, listener)}
      proxy_hide_header X-Request-Id; add_header X-Request-Id $xc_rid always;
      add_header Warning $xc_warning always;
      add_header Access-Control-Allow-Origin $xc_origin always;
      add_header Access-Control-Expose-Headers $xc_expose always; add_header Vary $xc_vary always;
      access_log syslog:server=unix:{audit},nohostname,tag=xcwado xc_audit if=$xc_audit;
      error_log error.log; error_log syslog:server=unix:{audit},nohostname,tag={ERROR_TAG} error;
    }}
    location @python {{ set $xc_audit ""; {_python(listener, cert)} }}
    location / {{ {_python(listener, cert)} }}
  }}"""


# what the gateway's decision reads of the request (FrontAuthz): nothing else is sent to it
_ASKED = " ".join(
    f"proxy_set_header {name} $http_{name.lower().replace('-', '_')};"
    for name in ("Authorization", "X-NCP-Assertion", "X-Request-Id", "Accept", "Origin", "Forwarded",
                 "X-Forwarded-Prefix")
)  # fmt: skip


def _python(listener: Listener, cert: str) -> str:
    """The gateway's own listener behind nginx: the request as it came, plus who sent it, ``cert`` being the
    client certificate nginx verified (nginx overwrites any such header a client sends)."""
    return (
        f"proxy_pass http://xc_{listener}_app; {NGINX_STREAM} "
        "proxy_read_timeout 3600s; proxy_send_timeout 3600s; proxy_set_header X-Forwarded-For $remote_addr; "
        "proxy_set_header X-Forwarded-Proto $scheme; "
        f"proxy_set_header X-Xcwado-Client-Cert {cert};"
    )


def _upstream_tls(spec: FrontSpec, listener: Listener) -> str:
    """NCP-B to NCP-A: mutual TLS with this country's client certificate, the peer's name pinned; NCP-A
    to an https PACS: the system's trust store."""
    if spec.pki is None:
        return ""
    if listener == "gateway":
        pair = spec.pki.client_credentials(spec.country)
        return (
            f"proxy_ssl_certificate {pair.cert}; proxy_ssl_certificate_key {pair.key}; "
            f"proxy_ssl_trusted_certificate {spec.pki.ca_file}; proxy_ssl_verify on; "
            "proxy_ssl_name $xc_tls_name; proxy_ssl_server_name on; proxy_ssl_session_reuse on; "
            f"proxy_ssl_protocols TLSv1.2 TLSv1.3; proxy_ssl_ciphers {TLS12_CIPHERS}; proxy_{_TLS13}"
        )
    return f"proxy_ssl_verify on; proxy_ssl_name $xc_tls_name; proxy_ssl_trusted_certificate {_SYSTEM_CAS};"


# TLS 1.3's mandatory suite first (RFC 8446 9.1): AES-128-GCM costs less per byte than OpenSSL's first choice,
# AES-256-GCM; the server prefers it too
_TLS13 = (
    "ssl_conf_command Ciphersuites "
    + ":".join(("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"))
    + ";"
)
_SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt"  # Debian's trust store


def tls_name(url: str, peer: str | None) -> str:
    """The name the next hop's certificate must carry: the peer NCP's (pinned, as the Python data plane
    pins it) or the URL's host."""
    return server_name(peer) if peer else (urlsplit(url).hostname or "")


def _ip_literal(url: str) -> bool:
    try:
        ipaddress.ip_address(urlsplit(url).hostname or "")
    except ValueError:
        return False
    return True


def _ms(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"  # nginx takes no decimal point in a time


def _address(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"
