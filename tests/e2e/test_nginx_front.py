"""The nginx front (``front = "nginx"``, ncp/gateway/front.py): nginx on a country's public ports streams
XC-WADO images itself, the gateway decides every request (``auth_request``) and audits what nginx carried.

An answer nginx carried at a hop has no ``Server-Timing`` (the gateway's own lane adds one per hop) and
keeps the consumer's ``X-Request-Id``: that is how these tests tell the fast lane from the gateway's lane.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import socket
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import httpx
import pytest
from audit_support import audited
from dicomweb_client.api import DICOMwebClient
from e2e_federations import Seeded, study_resource

from ncp.consumer.client import ImagingConsumer
from ncp.dicom.multipart import DecodedPart, MultipartDecoder
from ncp.federation import Federation
from ncp.gateway.front import socket_dir
from ncp.model import StudyRecord
from ncp.nginx import NGINX_ABSENT, nginx_binary
from ncp.publish import seed_federation
from ncp.security.audit import AuditRecord
from ncp.security.pki import FederationPki
from ncp.security.tokens import PatientRef, ncp_id

pytestmark = pytest.mark.skipif(nginx_binary() is None, reason=NGINX_ABSENT)

MULTIPART = {"Accept": 'multipart/related; type="application/dicom"'}
VIEWER = "https://viewer.example"  # a browser origin AT's topology lists (cors_origins)
RLUID = "2.25.249112837101579105183278066551769719101"  # FR's PACS
TOPOLOGY = """
name = "nginx-front"
security = {secure}
[synth]
patients_per_country = 2
studies_per_patient = 2
[countries.FR]
home_community_id = "2.999.250.1"
patient_id_issuer = "2.999.250.2"
registries = [{{ id = "national" }}]
pacs = [{{ id = "pacs-1", retrieve_location_uid = "{rluid}"{backend} }}]
[countries.AT]
home_community_id = "2.999.40.1"
patient_id_issuer = "2.999.40.2"
architecture = "C"
registries = [{{ id = "national" }}]
pacs = [{{ id = "vna", retrieve_location_uid = "2.25.124730087464102372658485198995786580382" }}]
cors_origins = ["{viewer}"]
"""


def topology(folder: Path, *, secure: bool, pacs_url: str | None = None) -> str:
    """FR (the PACS embedded, or the DICOMweb base ``pacs_url``) and AT, whose viewers come from VIEWER."""
    backend = f', backend = "{pacs_url}"' if pacs_url else ""
    path = folder / "topology.toml"
    path.write_text(TOPOLOGY.format(secure=str(secure).lower(), rluid=RLUID, backend=backend, viewer=VIEWER))
    return str(path)


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """Secure FR and AT, each behind its nginx front; FR's catalogue published (ITI-65, STOW-RS)."""
    folder = tmp_path_factory.mktemp("nginx-front")
    source = topology(folder, secure=True)
    with Federation(source, folder / "run", mode="thread", secure=True, front="nginx") as fed:
        published = asyncio.run(seed_federation(fed.topology, fed.plan.endpoints))
        yield Seeded(fed, published)


def two_patients(front: Seeded) -> tuple[StudyRecord, StudyRecord]:
    studies = front.published["FR"].data.studies
    x = studies[0]
    return x, next(s for s in studies if s.patient != x.patient)


def treated(front: Seeded, study: StudyRecord) -> dict[str, str]:
    """AT's treatment token for the patient of ``study``."""
    consumer = ImagingConsumer(front.gateway("AT"))
    consumer.authenticate()
    consumer.open_treatment_context(study.patient.issuer, study.patient.id)
    return {"Authorization": consumer.headers["Authorization"]}


def rad160(front: Seeded, study: StudyRecord, level: str, *, hcid: str | None = None) -> str:
    """The consumer's URL at AT's gateway (RAD-160 initiating)."""
    location = f"homeCommunityId/{hcid or front.hcid('FR')}/RetrieveLocationUID/{RLUID}"
    return f"{front.gateway('AT')}/wado/{location}/{study_resource(study, level)}"


def border_url(front: Seeded, study: StudyRecord, level: str) -> str:
    """The same resource at FR's border (RAD-160 responding), as NCP-B asks for it."""
    location = f"homeCommunityId/{front.hcid('FR')}/RetrieveLocationUID/{RLUID}"
    return f"{front.fed.plan.endpoints['FR'].border}/wado-rs/{location}/{study_resource(study, level)}"


def records(fed: Federation, country: str, rid: str) -> list[AuditRecord]:
    """A hop's RAD-160 records of one request. nginx logs a request once its last byte is sent, and the
    gateway records it then: wait for the first, then long enough for a second one to show."""
    db = fed.plan.run_dir / country / "audit.sqlite"
    audited(db, rid)
    time.sleep(0.3)
    return [r for r in audited(db, rid) if r.transaction == "RAD-160"]


def parts(answer: httpx.Response) -> list[DecodedPart]:
    decoder = MultipartDecoder(answer.headers["content-type"])
    found = decoder.feed(answer.content)
    decoder.close()
    return found


def accept(level: str) -> dict[str, str]:
    return {"Accept": "application/dicom+json"} if level == "metadata" else MULTIPART


def rid(name: str) -> str:
    return f"{name}-{uuid.uuid4()}"


# -- the fast lane carries the PACS's bytes ------------------------------------------------------------------


def test_an_instance_crosses_both_fronts_byte_for_byte_on_the_fast_lane(front: Seeded) -> None:
    x, _ = two_patients(front)
    pacs = front.fed.plan.endpoints["FR"].pacs[RLUID]
    direct = httpx.get(pacs + study_resource(x, "instance"), headers={"Accept": "application/dicom"})
    sent = rid("fast")
    r = httpx.get(
        rad160(front, x, "instance"),
        headers={"Accept": "application/dicom", **treated(front, x), "X-Request-Id": sent},
    )
    assert direct.status_code == r.status_code == 200
    assert r.content == direct.content and r.content[128:132] == b"DICM"
    assert r.headers["content-type"] == direct.headers["content-type"]
    assert "server-timing" not in r.headers  # neither gateway's own lane touched it
    assert r.headers["x-request-id"] == sent


def test_a_multipart_study_crosses_both_fronts_part_for_part(front: Seeded) -> None:
    x, _ = two_patients(front)
    pacs = front.fed.plan.endpoints["FR"].pacs[RLUID]
    direct = httpx.get(pacs + study_resource(x, "study"), headers=MULTIPART)
    r = httpx.get(rad160(front, x, "study"), headers={**MULTIPART, **treated(front, x)})
    assert direct.status_code == r.status_code == 200 and "server-timing" not in r.headers
    fronted = parts(r)
    assert [p.body for p in fronted] == [p.body for p in parts(direct)] and len(fronted) > 1
    # the PACS names the consumer's RAD-160 URL: each hop told it the public base, nginx passed it on
    assert all(p.headers["content-location"].startswith(f"{front.gateway('AT')}/wado/") for p in fronted)


def test_dicomweb_client_retrieves_every_level_through_both_fronts(front: Seeded) -> None:
    """An unmodified DICOMweb client (dicomweb-client) on the consumer's RAD-160 base, with its treatment
    token: study, series, instance, frames and metadata, as the PACS holds them."""
    x, _ = two_patients(front)
    series, first = x.series[0], x.series[0].instances[0]
    location = f"homeCommunityId/{front.hcid('FR')}/RetrieveLocationUID/{RLUID}"
    client = DICOMwebClient(url=f"{front.gateway('AT')}/wado/{location}", headers=treated(front, x))
    pacs = DICOMwebClient(url=front.fed.plan.endpoints["FR"].pacs[RLUID].rstrip("/"))
    uids = (x.study_instance_uid, series.series_instance_uid, first.sop_instance_uid)

    whole = client.retrieve_study(x.study_instance_uid)
    assert sorted(ds.SOPInstanceUID for ds in whole) == sorted(
        ds.SOPInstanceUID for ds in pacs.retrieve_study(x.study_instance_uid)
    )
    assert {str(ds.SOPInstanceUID) for ds in client.retrieve_series(*uids[:2])} == {
        i.sop_instance_uid for i in series.instances
    }
    instance = client.retrieve_instance(*uids)
    assert instance.PixelData == pacs.retrieve_instance(*uids).PixelData
    assert client.retrieve_instance_frames(*uids, frame_numbers=[1]) == pacs.retrieve_instance_frames(
        *uids, frame_numbers=[1]
    )
    metadata = client.retrieve_study_metadata(x.study_instance_uid)
    assert {m["00080018"]["Value"][0] for m in metadata} == {ds.SOPInstanceUID for ds in whole}


# -- patient isolation on the fast lane ----------------------------------------------------------------------


@pytest.mark.parametrize("level", ["study", "series", "instance", "rendered", "metadata"])
def test_another_patients_study_is_refused_with_its_reason_and_no_byte_of_it(
    front: Seeded, level: str
) -> None:
    x, y = two_patients(front)
    r = httpx.get(rad160(front, y, level), headers={**accept(level), **treated(front, x)})
    assert r.status_code == 403
    warning = r.headers["warning"]
    assert warning.startswith("299 ") and "does not belong to the patient" in warning
    assert b"DICM" not in r.content and y.series[0].series_instance_uid.encode() not in r.content


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token", "Basic YWxhZGRpbjpvcGVuc2VzYW1l"])
def test_images_without_a_valid_token_are_401(front: Seeded, authorization: str | None) -> None:
    x, _ = two_patients(front)
    headers = {**MULTIPART, **({"Authorization": authorization} if authorization else {})}
    r = httpx.get(rad160(front, x, "instance"), headers=headers)
    assert r.status_code == 401 and b"DICM" not in r.content
    assert r.headers.get("warning", "").startswith("299 ")


def ncp_assertion(front: Seeded, x: StudyRecord, patient: PatientRef) -> str:
    """What NCP AT would send FR for a context of ``x``'s patient, naming ``patient`` instead."""
    pki = pki_of(front)
    token = treated(front, x)["Authorization"].removeprefix("Bearer ")
    context = dataclasses.replace(pki.gateway_verifier("AT").verify(token), patient=patient)
    return pki.ncp_signer("AT").sign(context, audience=ncp_id("FR"))


def pki_of(front: Seeded) -> FederationPki:
    assert front.fed.plan.pki_dir is not None
    return FederationPki.load(front.fed.plan.pki_dir)


def test_an_assertion_naming_x_comma_y_opens_nobody_at_the_fronted_border(front: Seeded) -> None:
    x, y = two_patients(front)
    both = PatientRef(x.patient.issuer, f"{x.patient.id},{y.patient.id}")
    with httpx.Client(verify=pki_of(front).client_ssl_context("AT", peer="FR")) as client:
        r = client.get(
            border_url(front, y, "instance"),
            headers={**MULTIPART, "X-NCP-Assertion": ncp_assertion(front, x, both)},
        )
    assert r.status_code == 403 and b"DICM" not in r.content


# -- the audit of what nginx carried -------------------------------------------------------------------------


def test_each_fast_lane_request_leaves_one_record_at_each_hop(front: Seeded) -> None:
    x, _ = two_patients(front)
    sent = rid("audit")
    headers = {**MULTIPART, **treated(front, x), "X-Request-Id": sent}
    r = httpx.get(rad160(front, x, "instance"), headers=headers)
    assert r.status_code == 200 and "server-timing" not in r.headers
    patient = f"{x.patient.issuer}|{x.patient.id}"
    for country, source, client in (("AT", "ncp-at-gateway", "127.0.0.1"), ("FR", "ncp-fr-border", "AT")):
        [event] = records(front.fed, country, sent)
        assert (event.source, event.outcome, event.status, event.detail) == (source, "0", 200, None)
        assert (event.request_id, event.patient, event.client) == (sent, patient, client)
        assert event.user and event.user_issuer and event.query
        assert study_resource(x, "instance") in event.query


def test_a_refused_request_is_recorded_with_its_reason_at_each_hop(front: Seeded) -> None:
    x, y = two_patients(front)
    sent = rid("refused")
    headers = {**MULTIPART, **treated(front, x), "X-Request-Id": sent}
    r = httpx.get(rad160(front, y, "instance"), headers=headers)
    assert r.status_code == 403
    for country in ("AT", "FR"):
        [event] = records(front.fed, country, sent)
        assert (event.outcome, event.status) == ("4", 403), country
        assert event.detail and "does not belong to the patient" in event.detail, country
        assert event.patient == f"{x.patient.issuer}|{x.patient.id}"  # the context's, not the study's


# -- who the border believes ---------------------------------------------------------------------------------


def escaped_pem(path: Path) -> str:
    """A certificate as nginx passes it on ($ssl_client_escaped_cert)."""
    return quote(path.read_text(), safe="")


@pytest.mark.parametrize("level", ["instance", "metadata"])  # nginx carries the first, the gateway the second
def test_the_border_judges_the_certificate_presented_not_a_header_naming_another(
    front: Seeded, level: str
) -> None:
    x, _ = two_patients(front)
    pki = pki_of(front)
    assertion = ncp_assertion(front, x, PatientRef(x.patient.issuer, x.patient.id))  # bound to AT's cert
    headers = {**accept(level), "X-NCP-Assertion": assertion}
    url = border_url(front, x, level)
    with httpx.Client(verify=pki.client_ssl_context("AT", peer="FR")) as client:
        forged = escaped_pem(pki.unregistered_client("AT").cert)
        real_at = client.get(url, headers={**headers, "X-Xcwado-Client-Cert": forged})
    # a certificate our CA issued but no country registered, presenting AT's (public) certificate by header
    with httpx.Client(verify=pki.ssl_context_with(pki.unregistered_client("AT"), peer="FR")) as client:
        claimed = escaped_pem(pki.client_credentials("AT").cert)
        real_other = client.get(url, headers={**headers, "X-Xcwado-Client-Cert": claimed})
    assert real_at.status_code == 200
    assert real_other.status_code == 403 and b"DICM" not in real_other.content
    assert "not registered" in real_other.headers.get("warning", "")


def test_the_front_sockets_folder_is_this_users_alone(front: Seeded) -> None:
    folder = front.fed.plan.sockets
    assert folder is not None
    info = folder.stat()
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.geteuid()
    assert {p.name for p in folder.iterdir()} >= {"at-gateway-authz.sock", "fr-border-app.sock"}


def test_a_sockets_folder_left_open_before_the_start_is_made_private(tmp_path: Path) -> None:
    run = tmp_path / "run"
    folder = socket_dir(run)
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)  # as a previous run, or another user of /tmp, could have left it
    with Federation(topology(tmp_path, secure=False), run, mode="thread", secure=False, front="nginx"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700


# -- what the fast lane hands back to the gateway's own lane -------------------------------------------------


def test_an_unknown_home_community_is_404_with_a_warning(front: Seeded) -> None:
    x, _ = two_patients(front)
    r = httpx.get(rad160(front, x, "study", hcid="2.999.1.1"), headers={**MULTIPART, **treated(front, x)})
    assert r.status_code == 404 and "Unknown homeCommunityId 2.999.1.1" in r.headers["warning"]


@pytest.mark.parametrize("by_url", [False, True], ids=["by-location", "by-retrieve-url"])
def test_a_frame_names_the_consumers_gateway_whichever_lane_carries_it(front: Seeded, by_url: bool) -> None:
    """The embedded PACS names the public base it is told in each frame's Content-Location, so nginx carries
    its frames; asked by ``retrieveURL`` (which may name a PACS that names itself), FR's own lane rewrites
    the part headers as they stream."""
    x, _ = two_patients(front)
    url = rad160(front, x, "instance") + "/frames/1"
    if by_url:
        url += "?" + urlencode({"retrieveURL": front.fed.plan.endpoints["FR"].pacs[RLUID]})
    frames = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    r = httpx.get(url, headers={"Accept": frames, **treated(front, x)})
    assert r.status_code == 200
    assert ("ncp-fr-border" in r.headers.get("server-timing", "")) is by_url
    assert "ncp-at-gateway" not in r.headers.get("server-timing", "")  # AT's nginx carried it either way
    [frame] = parts(r)
    location = frame.headers["content-location"]
    assert frame.body and location.startswith(f"{front.gateway('AT')}/wado/")
    assert urlsplit(front.fed.plan.endpoints["FR"].pacs[RLUID]).netloc not in location


def test_metadata_is_rebased_by_the_responding_gateway_with_no_pacs_url_left(front: Seeded) -> None:
    x, _ = two_patients(front)
    r = httpx.get(rad160(front, x, "metadata"), headers={**accept("metadata"), **treated(front, x)})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/dicom+json")
    assert "ncp-fr-border" in r.headers["server-timing"]  # FR's own lane rewrote it: instances carry URLs too
    pacs = urlsplit(front.fed.plan.endpoints["FR"].pacs[RLUID])
    urls = set(re.findall(r'"(https?://[^"]+)"', r.text))  # Retrieve URLs (0008,1190)
    assert urls and all(url.startswith(f"{front.gateway('AT')}/wado/") for url in urls)
    assert pacs.netloc not in r.text and x.study_instance_uid in r.text


def test_a_preflight_from_a_listed_origin_is_answered_and_from_another_refused(front: Seeded) -> None:
    x, _ = two_patients(front)
    ask = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    listed = httpx.options(rad160(front, x, "instance"), headers={**ask, "Origin": VIEWER})
    other = httpx.options(rad160(front, x, "instance"), headers={**ask, "Origin": "https://evil.example"})
    assert listed.status_code == 204 and listed.headers["access-control-allow-origin"] == VIEWER
    assert "GET" in listed.headers["access-control-allow-methods"]
    assert other.status_code == 403 and "access-control-allow-origin" not in other.headers


def test_the_fast_lane_names_a_listed_origin_and_no_other(front: Seeded) -> None:
    x, _ = two_patients(front)
    url, headers = rad160(front, x, "instance"), {**MULTIPART, **treated(front, x)}
    listed = httpx.get(url, headers={**headers, "Origin": VIEWER})
    other = httpx.get(url, headers={**headers, "Origin": "https://evil.example"})
    assert listed.status_code == other.status_code == 200 and "server-timing" not in listed.headers
    assert listed.headers["access-control-allow-origin"] == VIEWER
    assert "X-Request-Id" in listed.headers["access-control-expose-headers"]
    assert "access-control-allow-origin" not in other.headers


# -- a PACS that fails: what the consumer and the audit are told ---------------------------------------------


class CuttingPacs:
    """A DICOMweb origin that fails as ``mode`` says: ``"length"`` and ``"chunked"`` send a 200's headers
    (with a ``Content-Length``, or chunked) and half the body, then close; ``"silent"`` closes before
    answering; ``"404"`` answers 404 without a reason; ``"stall"`` sends half, waits a second, then the
    rest; ``"whole"`` sends it all, for contrast."""

    BODY = bytes(range(256)) * 1024  # 256 KiB, more than one read of nginx's

    def __init__(self) -> None:
        self.mode = "whole"
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}/dicom-web/"

    def __enter__(self) -> CuttingPacs:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        request = b""
        while b"\r\n\r\n" not in request and (data := conn.recv(65536)):
            request += data
        if self.mode == "silent":
            return
        if self.mode == "404":
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        body, half = self.BODY, self.BODY[: len(self.BODY) // 2]
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom\r\nConnection: close\r\n"
        if self.mode == "chunked":
            conn.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(half), half))
        else:
            sent = half if self.mode in ("length", "stall") else body
            conn.sendall(head + b"Content-Length: %d\r\n\r\n%s" % (len(body), sent))
        if self.mode == "stall":
            time.sleep(1)
            with contextlib.suppress(OSError):  # the reader may be gone: that is the point
                conn.sendall(body[len(half) :])
        time.sleep(0.1)  # the half has left before the close


@pytest.fixture(scope="module")
def cut(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Federation, CuttingPacs]]:
    """Plain FR and AT behind their fronts; FR's PACS is a CuttingPacs, declared by URL."""
    folder = tmp_path_factory.mktemp("nginx-front-cut")
    with CuttingPacs() as pacs:
        source = topology(folder, secure=False, pacs_url=pacs.base)
        with Federation(source, folder / "run", mode="thread", secure=False, front="nginx") as fed:
            yield fed, pacs


def cut_url(fed: Federation) -> str:
    """An instance at AT's gateway, in the CuttingPacs (which answers whatever the path)."""
    location = f"homeCommunityId/{fed.topology.country('FR').home_community_id}/RetrieveLocationUID/{RLUID}"
    instance = "studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5"
    return f"{fed.plan.endpoints['AT'].gateway}/wado/{location}/{instance}"


def fetch(fed: Federation, sent: str) -> tuple[int, bytes, Exception | None]:
    """Status, the bytes that came, and what interrupted them."""
    got = bytearray()
    headers = {"Accept": "application/dicom", "X-Request-Id": sent}
    with httpx.stream("GET", cut_url(fed), headers=headers, timeout=30) as r:
        try:
            for chunk in r.iter_bytes():
                got += chunk
        except httpx.HTTPError as exc:
            return r.status_code, bytes(got), exc
    return r.status_code, bytes(got), None


@pytest.mark.parametrize("mode", ["length", "chunked"])
def test_a_pacs_cut_mid_stream_reaches_the_consumer_as_a_failure(
    cut: tuple[Federation, CuttingPacs], mode: str
) -> None:
    fed, pacs = cut
    pacs.mode = "whole"
    assert fetch(fed, rid("whole")) == (200, CuttingPacs.BODY, None)  # the same path, uncut, is whole
    pacs.mode = mode
    status, got, failure = fetch(fed, rid(mode))
    assert status == 200 and isinstance(failure, httpx.RemoteProtocolError)
    assert 0 < len(got) < len(CuttingPacs.BODY) and CuttingPacs.BODY.startswith(got)


@pytest.mark.parametrize("mode", ["length", "chunked"])
def test_a_pacs_cut_mid_stream_is_audited_as_aborted_at_each_hop(
    cut: tuple[Federation, CuttingPacs], mode: str
) -> None:
    fed, pacs = cut
    pacs.mode = mode
    sent = rid(f"audit-{mode}")
    assert fetch(fed, sent)[2] is not None
    for country in ("FR", "AT"):
        [event] = records(fed, country, sent)
        assert (event.outcome, event.status) == ("8", 200), country
        assert event.detail and "aborted" in event.detail, country


def test_a_pacs_that_closes_before_answering_is_a_502_with_a_warning_audited_at_each_hop(
    cut: tuple[Federation, CuttingPacs],
) -> None:
    """nginx cannot reach the PACS: FR's own lane tries and answers 502 with its reason, which AT's front
    carries back."""
    fed, pacs = cut
    pacs.mode = "silent"
    sent = rid("silent")
    r = httpx.get(cut_url(fed), headers={"Accept": "application/dicom", "X-Request-Id": sent}, timeout=30)
    assert r.status_code == 502 and r.headers["warning"].startswith("299 ncp-fr-border ")
    assert r.headers["x-request-id"] == sent
    for country in ("FR", "AT"):
        [event] = records(fed, country, sent)
        assert (event.outcome, event.status) == ("8", 502), country
        assert event.detail, country


def test_an_error_without_a_reason_gets_a_warning_naming_the_hop_that_saw_it(
    cut: tuple[Federation, CuttingPacs],
) -> None:
    fed, pacs = cut
    pacs.mode = "404"
    sent = rid("404")
    r = httpx.get(cut_url(fed), headers={"Accept": "application/dicom", "X-Request-Id": sent}, timeout=30)
    assert r.status_code == 404 and "server-timing" not in r.headers
    assert r.headers["warning"] == '299 ncp-fr-border "the next hop answered 404 without a reason"'
    for country in ("FR", "AT"):
        [event] = records(fed, country, sent)
        assert (event.outcome, event.status, event.detail) == ("4", 404, r.headers["warning"]), country


def test_a_consumer_that_hangs_up_mid_stream_is_audited_as_an_aborted_answer(
    cut: tuple[Federation, CuttingPacs],
) -> None:
    fed, pacs = cut
    pacs.mode = "stall"
    sent = rid("hangup")
    with httpx.stream("GET", cut_url(fed), headers={"X-Request-Id": sent}, timeout=30) as r:
        assert r.status_code == 200 and next(r.iter_raw())  # a first piece, then the consumer is gone
    for country in ("AT", "FR"):
        [event] = records(fed, country, sent)
        assert (event.outcome, event.status) == ("8", 200), country
        assert event.detail and "aborted" in event.detail, country
