"""The nginx front's configuration (ncp/gateway/front.py) as nginx reads it, and the gateway's audit of
what nginx carried (``FrontAuthz.logged``, ncp/gateway/authz.py) from nginx's log line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from ncp.app import make_plan
from ncp.gateway.authz import FrontAuthz
from ncp.gateway.context import Clients
from ncp.gateway.front import (
    FRONT_HEADERS,
    FrontSpec,
    front_config,
    private_socket_dir,
    socket_dir,
    upstream_name,
)
from ncp.gateway.guard import Guard
from ncp.gateway.proxy import make_upstream
from ncp.gateway.settings import GatewaySettings
from ncp.nginx import NGINX_ABSENT, nginx_binary
from ncp.security.audit import AuditRecord, AuditStore
from ncp.security.pki import FederationPki

BORDERS = ("https://127.0.0.1:41001", "https://127.0.0.1:41002")  # AT's, and FR's own (a consumer's patient)
PACS = ("http://127.0.0.1:41003/dicom-web/", "https://127.0.0.1:41004/wado/")
LOCAL = {f"xc_{listener}_{kind}" for listener in ("gateway", "border") for kind in ("authz", "app")}
UPSTREAM = re.compile(r"upstream (\S+) \{ server ([^;]+);")
Approved = tuple[FrontAuthz, AuditStore, str]  # an authz, its audit trail, the key of a request it approved


def spec(run_dir: Path, pki: FederationPki | None, pacs: tuple[str, ...] = PACS) -> FrontSpec:
    borders = BORDERS if pki else tuple(b.replace("https", "http") for b in BORDERS)
    listens = ("FR", "127.0.0.1", 41000, 41002, run_dir)
    return FrontSpec(*listens, borders=borders, pacs=pacs, pki=pki, sockets=socket_dir(run_dir))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> FederationPki:
    return FederationPki.create(tmp_path_factory.mktemp("pki"), ["FR", "AT"])


def nginx_test(root: Path, http: str) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` of ``http`` as ncp.nginx.nginx_process wraps it (one worker, every file under root)."""
    binary = nginx_binary()
    if binary is None:
        pytest.skip(NGINX_ABSENT)
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp = " ".join(f"{kind}_temp_path {root};" for kind in kinds)
    conf = root / "nginx.conf"
    conf.write_text(
        f"worker_processes 1; daemon off; pid {root}/nginx.pid; error_log {root}/error.log;\n"
        f"events {{ worker_connections 64; }}\nhttp {{ access_log off; {temp}\n{http}\n}}\n"
    )
    log = root / "error.log"
    args = [binary, "-t", "-q", "-c", str(conf), "-p", str(root), "-e", str(log)]
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


@pytest.mark.integration  # a subprocess: left out of `make check`
@pytest.mark.parametrize("secure", [True, False], ids=["mtls", "plain"])
def test_the_config_passes_nginx_t(tmp_path: Path, pki: FederationPki, secure: bool) -> None:
    checked = nginx_test(tmp_path, front_config(spec(tmp_path / "run", pki if secure else None)))
    assert checked.returncode == 0, checked.stderr


@pytest.mark.integration
def test_a_pacs_named_by_a_host_name_does_not_stop_the_front(tmp_path: Path, pki: FederationPki) -> None:
    named = (*PACS, "https://pacs.invalid/dicom-web/")  # RFC 6761: never resolves
    checked = nginx_test(tmp_path, front_config(spec(tmp_path / "run", pki, named)))
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("secure", [True, False], ids=["mtls", "plain"])
def test_one_upstream_per_border_and_pacs_and_none_for_anything_else(
    tmp_path: Path, pki: FederationPki, secure: bool
) -> None:
    front = spec(tmp_path, pki if secure else None)
    blocks = UPSTREAM.findall(front_config(front))
    origins = {upstream_name(url): url for url in (*front.borders, *front.pacs)}
    assert len(blocks) == len({name for name, _ in blocks}) == len(origins) + len(LOCAL)
    servers = dict(blocks)
    assert set(servers) == set(origins) | LOCAL
    for name, url in origins.items():
        parts = urlsplit(url)
        assert servers[name] == f"{parts.hostname}:{parts.port or {'http': 80, 'https': 443}[parts.scheme]}"
    for listener in ("gateway", "border"):
        for kind in ("authz", "app"):
            assert servers[f"xc_{listener}_{kind}"] == f"unix:{front.socket(listener, kind)}"
            assert front.socket(listener, kind).parent == front.sockets


def test_only_the_border_asks_for_a_client_certificate(tmp_path: Path, pki: FederationPki) -> None:
    config = front_config(spec(tmp_path, pki))
    listens = re.findall(r"listen 127\.0\.0\.1:(\d+)([^;]*);([^\n]*)", config)
    assert {(port, flags.strip()) for port, flags, _ in listens} == {("41000", ""), ("41002", "ssl")}
    assert all("ssl_verify_client on" in rest for port, _, rest in listens if port == "41002")
    assert config.count("ssl_verify_client on") == 1


# -- FrontAuthz.logged: nginx's log line becomes the held audit record ---------------------------------------


@pytest.fixture()
def authz(tmp_path: Path) -> Iterator[Approved]:
    """AT's consumer-facing authz with security off, and the key of one image request it approved."""
    plan = make_plan("builtin:default", tmp_path / "run", secure=False, front="nginx")
    endpoints = plan.endpoints_seen_from("AT")
    settings = GatewaySettings(plan.topology, "AT", endpoints, front_sockets=plan.sockets)
    store = AuditStore(tmp_path / "audit.sqlite")
    clients = Clients(httpx.AsyncClient(), make_upstream(settings.data_plane, settings.timeouts))
    front = FrontAuthz(settings, clients, Guard("AT", None, fronted=True), "gateway", store)
    hcid = plan.topology.country("FR").home_community_id
    rluid = next(iter(plan.endpoints["FR"].pacs))
    uri = f"/wado/homeCommunityId/{hcid}/RetrieveLocationUID/{rluid}/studies/1.2.3/series/1.2.3.4"
    asked = {b"x-xcwado-method": b"GET", b"x-xcwado-uri": uri.encode(), b"x-request-id": b"req-1"}
    answer = asyncio.run(front.answer(asked))
    assert answer.startswith(b"HTTP/1.1 204 ")
    key = re.search(rb"\r\n%s: ([^\r]+)\r\n" % FRONT_HEADERS["xc_audit"].encode(), answer)
    assert key is not None
    try:
        yield front, store, key[1].decode()
    finally:
        asyncio.run(clients.aclose())
        store.close()


def logged(authz: Approved, rest: str) -> list[AuditRecord]:
    """``key|rest`` as nginx sends it (syslog over a unix datagram socket, no hostname), then the trail
    once the record is written (the store's one writer commits in order: a record submitted after it)."""
    front, store, key = authz
    front.logged(f"<190>Dec  6 19:17:25 xcwado: {key}|{rest}")
    store.submit(AuditRecord(transaction="ITI-78", outcome="0", source="barrier")).result(10)
    return store.records({"request-id": "req-1"})


@pytest.mark.parametrize(
    ("line", "outcome", "status", "detail"),
    [
        ("200|OK|7|-", "0", 200, None),
        ("200|OK|7|", "0", 200, None),
        ('404|OK|7|299 ncp-fr-border "Unknown RetrieveLocationUID 2.25.1"', "4", 404,
         '299 ncp-fr-border "Unknown RetrieveLocationUID 2.25.1"'),
        ("502|OK|7|-", "8", 502, None),
        ("200||7|-", "8", 200, "answer aborted: the stream did not complete"),
        ("200||7|", "8", 200, "answer aborted: the stream did not complete"),
    ],
)  # fmt: skip
def test_a_log_line_completes_the_held_record(
    authz: Approved, line: str, outcome: str, status: int, detail: str | None
) -> None:
    [event] = logged(authz, line)
    assert (event.outcome, event.status, event.detail) == (outcome, status, detail)
    assert (event.transaction, event.source, event.request_id) == ("RAD-160", "ncp-at-gateway", "req-1")
    assert event.query is not None and event.query.startswith("GET /wado/homeCommunityId/")


def test_a_second_line_for_the_same_key_records_nothing_more(authz: Approved) -> None:
    logged(authz, "200|OK|7|-")
    assert len(logged(authz, "200|OK|7|-")) == 1


def test_a_line_of_another_shape_is_refused_and_the_record_still_waits(authz: Approved) -> None:
    front, _, key = authz
    with pytest.raises(ValueError, match=r"key\|status"):
        front.logged(f"<190>Dec  6 19:17:25 xcwado: {key}|200")
    assert [e.outcome for e in logged(authz, "200|OK|7|-")] == ["0"]


ERROR_LINE = (
    "<187>Dec  6 19:17:25 xcwado_error: 2026/12/06 19:17:25 [error] 7#7: *{n} upstream prematurely closed "
    'connection while reading upstream, client: 127.0.0.1, server: , request: "GET /wado/... HTTP/1.1"'
)


def test_an_answer_its_upstream_cut_is_recorded_aborted_though_nginx_says_ok(authz: Approved) -> None:
    """nginx logs ``$request_completion`` "OK" for an answer it cut because its next hop failed: its error
    line for the connection, which comes first, is what tells."""
    front, _, _ = authz
    front.logged(ERROR_LINE.format(n=7))
    [event] = logged(authz, "200|OK|7|-")
    assert (event.outcome, event.detail) == ("8", "answer aborted: the stream did not complete")


def test_an_error_on_another_connection_leaves_the_answer_complete(authz: Approved) -> None:
    front, _, _ = authz
    front.logged(ERROR_LINE.format(n=8))
    [event] = logged(authz, "200|OK|7|-")
    assert (event.outcome, event.detail) == ("0", None)


FR_PACS = """
name = "front-lanes"
[countries.FR]
home_community_id = "2.999.250.1"
patient_id_issuer = "2.999.250.2"
registries = [{ id = "national" }]
pacs = [
  { id = "embedded", retrieve_location_uid = "2.25.1" },
  { id = "orthanc", retrieve_location_uid = "2.25.2", backend = "orthanc" },
  { id = "theirs", retrieve_location_uid = "2.25.3", backend = "http://127.0.0.1:41003/dicom-web/" },
]
"""


def test_only_the_embedded_pacs_is_trusted_to_name_the_public_base_in_part_headers(tmp_path: Path) -> None:
    """Frames from it may cross on nginx's lane; Orthanc's and another PACS's go through the gateway, which
    rewrites the Content-Location they write with their own address."""
    (tmp_path / "topology.toml").write_text(FR_PACS)
    plan = make_plan(str(tmp_path / "topology.toml"), tmp_path / "run", secure=False)
    settings = GatewaySettings(plan.topology, "FR", plan.endpoints)
    named = {rluid: settings.names_public_base(rluid) for rluid in ("2.25.1", "2.25.2", "2.25.3", "2.25.9")}
    assert named == {"2.25.1": True, "2.25.2": False, "2.25.3": False, "2.25.9": False}


# -- the sockets folder: the gateway's and its nginx's alone ------------------------------------------------

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user takes root")


@pytest.fixture
def sockets(tmp_path: Path) -> Iterator[Path]:
    folder = socket_dir(tmp_path / "run")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        folder.unlink()


def test_a_link_in_the_sockets_folders_place_is_refused(tmp_path: Path, sockets: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    elsewhere.chmod(0o755)
    sockets.symlink_to(elsewhere)
    with pytest.raises(PermissionError, match="not a folder of this user's"):
        private_socket_dir(sockets)
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o755  # what the link names is left alone


@as_root
def test_another_users_sockets_folder_is_refused(tmp_path: Path, sockets: Path) -> None:
    sockets.mkdir()
    os.chown(sockets, 4242, 4242)  # made first by a user who guessed the name
    with pytest.raises(PermissionError, match="not a folder of this user's"):
        private_socket_dir(sockets)
    assert sockets.stat().st_uid == 4242


@as_root
def test_the_containers_user_is_given_the_folder_and_its_stale_one_is_made_again(
    tmp_path: Path, sockets: Path
) -> None:
    sockets.mkdir()
    (sockets / "fr-gateway-app.sock").touch()  # left by a run that was killed
    os.chown(sockets, 10001, 10001)
    assert private_socket_dir(sockets, (10001, 10001)) == sockets
    info = sockets.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (10001, 10001, 0o700)
    assert list(sockets.iterdir()) == []
