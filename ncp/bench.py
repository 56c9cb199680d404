"""``make bench``: image retrieval throughput, measured side by side in one run.

Paths compared for the same study on the same machine (docs/benchmarks.md): nginx serving the
study's bytes from a file, the PACS directly, one gateway (NCP-A's border, RAD-160 responding),
two gateways (NCP-B -> NCP-A), for each data-plane client (h1, the gateways' own, then aiohttp, and httpx
on request) and with mTLS + tokens;
two nginx reverse proxies chained in the gateways' place (plain, and mTLS between them): what any
proxy pair costs here, with the gateways' ratio to it;
the XCA-I baseline, SOAP/MTOM: RAD-69 at the PACS, and RAD-69 -> Initiating Imaging Gateway -> RAD-75
-> Responding Imaging Gateway -> RAD-69 (each gateway its own process, docs/xdsi.md);
study level (one request), per instance and per frame (N requests, C concurrent); Orthanc as the
source PACS beside the embedded one. Every measurement is repeated (``--repeat``, round-robin with
the other paths of its federation; each repetition lasts at least ``--sample-s``, fetching its study or
instances again until then) and reported as median (min-max), with its ratio to the row it is
compared with, taken round by round, and the issue's goal where it sets one. Ratios are what to
compare; absolute numbers depend on the machine (client, gateways and PACS share its cores), and so
does CPU per request less than rates do.

The emulated-link section (``--link-only`` runs it alone) puts a shaped FR-AT link (``ncp.link`` relay,
30 ms RTT / 100 Mbit by default) between the gateways and compares retrieval times with the link's floor.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlsplit

import aiohttp
import httpx
import uvicorn
from pydicom.uid import UID

from ncp.consumer.client import ImagingConsumer
from ncp.dicom.kos import build_manifest, to_part10
from ncp.dicom.multipart import encode_multipart_bytes, multipart_content_type, new_boundary
from ncp.dicom.uids import deterministic_uid
from ncp.federation import Federation
from ncp.gateway.front import Front
from ncp.gateway.proxy import DataPlane
from ncp.link import LinkProfile
from ncp.mhd import provide_document_bundle
from ncp.model import InstanceRecord, StudyRecord
from ncp.nginx import NGINX_ABSENT, NGINX_STREAM, nginx_binary, nginx_process
from ncp.orthanc import OrthancConfig, orthanc_available, run_orthanc
from ncp.publish import manifest_document
from ncp.registry.xca.rad75 import (
    INITIATING_PATH,
    RESPONDING_PATH,
    gateway_app,
    initiating_routes,
    responding_routes,
)
from ncp.security.pki import FederationPki, server_name
from ncp.server import free_port, run_forever
from ncp.soapcore import envelope_bytes
from ncp.synth import synthesize
from ncp.topology import Topology, builtin_topology
from ncp.xdsi import RAD69_ACTION, DocumentRequest, ImagingRequest, request_element

__all__ = ["main"]

ACCEPT = 'multipart/related; type="application/dicom"'
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"'  # PS3.18 8.7.3: frames, uncompressed
GATEWAYS_CLIENT: DataPlane = "h1"  # the gateways' data plane (ncp.gateway.settings); the goals are its
RSS_GOAL_MB = 8.0  # the goal: a gateway's memory grows at most this much per study in flight
IN_FLIGHT = 4  # studies retrieved at once through both gateways for the memory row


@dataclass(frozen=True)
class Sample:
    """One repetition of one path: a whole study, or every instance (or frame) fetched C at a time."""

    mbps: float
    per_second: float  # instances (or frames) per second
    ttfb_ms: float  # median over the repetition's requests
    cpu_ms: float | None = None  # CPU the gateways on the path spent per request (None: no gateway)


@dataclass(eq=False)
class Row:
    """A path at one level, measured ``--repeat`` times round-robin with the other paths of its run, and
    compared repetition by repetition with ``baseline`` (measured in the same round), against ``goal``
    when the issue sets one. A row that could not be measured says why in ``note``."""

    path: str
    level: str
    samples: list[Sample] = field(default_factory=list)
    baseline: Row | None = None
    goal: float | None = None
    note: str = ""

    def ratios(self) -> list[float]:
        if self.baseline is None:
            return []
        pairs = zip(self.samples, self.baseline.samples, strict=False)
        return [s.per_second / b.per_second for s, b in pairs if b.per_second]

    @property
    def met(self) -> bool | None:
        ratios = self.ratios()
        if self.goal is None or not ratios:
            return None
        return statistics.median(ratios) >= self.goal


@dataclass(frozen=True)
class MemoryRow:
    """A gateway's resident memory before and at the peak of ``IN_FLIGHT`` concurrent study retrievals."""

    role: str
    run: str
    before_mb: float
    peak_mb: float | None  # None: the peak could not be reset (no write access to /proc/PID/clear_refs)

    @property
    def growth_mb(self) -> float | None:
        return None if self.peak_mb is None else (self.peak_mb - self.before_mb) / IN_FLIGHT


@dataclass(frozen=True)
class Probe:
    row: Row
    fetch: Callable[[], Awaitable[Sample]]
    requests: int  # per repetition, to state the gateways' CPU per request
    gateways: tuple[int, ...] = ()  # pids of the gateways on the path


@dataclass(frozen=True)
class BigStudy:
    study: str
    series: str
    instances: tuple[str, ...]
    rluid: str
    bytes: int
    record: StudyRecord  # the catalogue record, to publish its manifest (ownership checks under mTLS)

    def instance_urls(self, base: str) -> list[str]:
        """``base`` names the study (``.../studies/{uid}``)."""
        return [f"{base}/series/{self.series}/instances/{uid}" for uid in self.instances]


def make_study(pacs: str, rluid: str, count: int, instance_kb: int) -> BigStudy:
    """Clone one synthetic CT slice ``count`` times into one series and STOW it to the PACS."""
    topo = builtin_topology("default")
    data = synthesize(
        _with_size(topo, instance_kb),
        "FR",
        retrieve_urls={p.retrieve_location_uid: pacs for p in topo.countries["FR"].pacs},
    )
    template_study = next(s for s in data.studies if "CT" in s.modalities)
    template = next(iter(data.instances(template_study)))
    study, series = deterministic_uid("bench", "study"), deterministic_uid("bench", "series")
    uids = tuple(deterministic_uid("bench", "sop", i) for i in range(count))
    total = 0
    with httpx.Client(timeout=120) as client:
        for start in range(0, count, 20):
            bodies = []
            for i in range(start, min(start + 20, count)):
                ds = copy.deepcopy(template)
                ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, uids[i]
                ds.file_meta.MediaStorageSOPInstanceUID = UID(uids[i])
                ds.InstanceNumber = i + 1
                bodies.append(to_part10(ds))
            total += sum(map(len, bodies))
            _stow(client, pacs, bodies)
    template_series = template_study.series[0]
    record = dataclasses.replace(
        template_study,
        study_instance_uid=study,
        manifest_sop_instance_uid=deterministic_uid("bench", "manifest"),
        manifest_series_instance_uid=deterministic_uid("bench", "manifest-series"),
        kin_sop_instance_uid=None,
        kin_series_instance_uid=None,
        series=(
            dataclasses.replace(
                template_series,
                series_instance_uid=series,
                retrieve_location_uid=rluid,
                instances=tuple(
                    InstanceRecord(template_series.instances[0].sop_class_uid, uid, i + 1)
                    for i, uid in enumerate(uids)
                ),
            ),
        ),
    )
    return BigStudy(study, series, uids, rluid, total, record)


def publish_manifest(fed: Federation, big: BigStudy) -> None:
    """ITI-65 for the bench study, so NCP-A can check it belongs to the treatment context's patient."""
    country = fed.topology.country("FR")
    kos = to_part10(build_manifest(big.record, encoding="MADO"))
    doc = manifest_document(country, big.record, kos)
    bundle = provide_document_bundle(big.record.patient, [doc], source_oid=country.home_community_id)
    registry = next(iter(fed.plan.endpoints["FR"].registries.values()))
    httpx.post(registry, json=bundle, timeout=60).raise_for_status()


def treatment_headers(fed: Federation, big: BigStudy) -> dict[str, str]:
    """A consumer's treatment token from country B's identity provider."""
    consumer = ImagingConsumer(fed.plan.endpoints["AT"].gateway)
    consumer.authenticate()
    consumer.open_treatment_context(big.record.patient.issuer, big.record.patient.id)
    return {"Authorization": consumer.headers["Authorization"]}


def _with_size(topo: Topology, instance_kb: int) -> Topology:
    return dataclasses.replace(topo, synth=dataclasses.replace(topo.synth, instance_kb=instance_kb))


def _stow(client: httpx.Client, pacs: str, bodies: list[bytes]) -> None:
    boundary = new_boundary()
    r = client.post(
        f"{pacs.rstrip('/')}/studies",
        content=encode_multipart_bytes(bodies, "application/dicom", boundary),
        headers={"Content-Type": multipart_content_type("application/dicom", boundary)},
    )
    r.raise_for_status()


async def _fetch(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None, accept: str = ACCEPT
) -> tuple[int, float, float]:
    started = time.perf_counter()
    async with session.get(url, headers={"Accept": accept, **(headers or {})}) as resp:
        ttfb = time.perf_counter() - started
        size = 0
        async for chunk in resp.content.iter_chunked(1 << 20):
            size += len(chunk)
        if resp.status != 200:
            raise RuntimeError(f"{url} answered {resp.status}")
    return size, ttfb, time.perf_counter() - started


async def whole_study_sample(url: str, instances: int, headers: dict[str, str]) -> Sample:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        size, ttfb, total = await _fetch(session, url, headers)
    return Sample(size / total / 1e6, instances / total, ttfb * 1000)


async def per_instance(
    urls: list[str], concurrency: int, headers: dict[str, str] | None = None, accept: str = ACCEPT
) -> tuple[float, float, float]:
    """(MB/s, requests/s, median TTFB ms) fetching ``urls`` ``concurrency`` at a time on pooled
    connections (one request first opens a connection, outside the timing)."""
    queue = list(urls)
    sizes: list[int] = []
    ttfbs: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        await _fetch(session, urls[0], headers, accept)

        async def worker() -> None:
            while queue:
                size, ttfb, _ = await _fetch(session, queue.pop(), headers, accept)
                sizes.append(size)
                ttfbs.append(ttfb * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return sum(sizes) / elapsed / 1e6, len(urls) / elapsed, statistics.median(ttfbs)


async def per_instance_sample(
    urls: list[str], concurrency: int, headers: dict[str, str], accept: str = ACCEPT
) -> Sample:
    return Sample(*await per_instance(urls, concurrency, headers, accept))


def progress(text: str) -> None:
    """A line on stderr while the run goes on (the tables come at the end, on stdout)."""
    print(f"bench {time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def measure(probes: list[Probe], repeat: int, sample_s: float = 0.0) -> None:
    """Every probe once to warm up, then ``repeat`` rounds, each a repetition of every probe: so that what
    the machine's other load does hits the paths of a round alike (ratios are taken per round), a round
    passes over its probes in turn, one fetch each, until each has fetched for ``sample_s`` seconds (a
    study took a tenth of a second, at the mercy of whatever else the host ran in that tenth)."""

    async def rounds() -> None:
        for probe in probes:
            await probe.fetch()
        for round_ in range(1, repeat + 1):
            taken = [_Taken(probe) for probe in probes]
            while short := [t for t in taken if not t.samples or t.seconds < sample_s]:
                for t in short:
                    await t.fetch()
            for t in taken:
                t.probe.row.samples.append(t.merged())
            progress(f"  round {round_}/{repeat} of {len(probes)} measurements done")

    asyncio.run(rounds())


@dataclass
class _Taken:
    """The fetches of one probe in one round."""

    probe: Probe
    samples: list[Sample] = field(default_factory=list)
    seconds: float = 0.0
    cpu_s: float = 0.0  # what the gateways on the path spent meanwhile

    async def fetch(self) -> None:
        pids = self.probe.gateways
        before = sum(cpu_seconds(pid) for pid in pids)
        started = time.perf_counter()
        self.samples.append(await self.probe.fetch())
        self.seconds += time.perf_counter() - started
        self.cpu_s += sum(cpu_seconds(pid) for pid in pids) - before

    def merged(self) -> Sample:
        """One sample: each fetch does the same work, so rates combine as harmonic means (the work over the
        time it took)."""
        requests = self.probe.requests * len(self.samples)
        return Sample(
            statistics.harmonic_mean([s.mbps for s in self.samples]),
            statistics.harmonic_mean([s.per_second for s in self.samples]),
            statistics.median(s.ttfb_ms for s in self.samples),
            self.cpu_s * 1000 / requests if self.probe.gateways else None,
        )


async def status_of(url: str, headers: dict[str, str], accept: str) -> int:
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.get(url, headers={"Accept": accept, **headers}) as resp,
    ):
        await resp.read()
        return resp.status


@contextmanager
def nginx_serving(pacs: str, study: BigStudy, workdir: Path) -> Iterator[str | None]:
    """nginx serving the PACS's answer for the study as a static file; None when nginx is not installed."""
    binary = nginx_binary()
    if binary is None:
        yield None
        return
    answer = httpx.get(f"{pacs}studies/{study.study}", headers={"Accept": ACCEPT}, timeout=120)
    body, content_type = answer.content, answer.headers["content-type"]
    root = workdir / "nginx"
    (root / "www").mkdir(parents=True, exist_ok=True)
    (root / "www" / "study").write_bytes(body)
    port = free_port()
    http = f"""
  sendfile on; tcp_nopush on;
  types {{ }} default_type '{content_type}';
  server {{ listen 127.0.0.1:{port}; root {root}/www; }}
"""
    with nginx_process(binary, root, http, port):
        yield f"http://127.0.0.1:{port}/study"


@dataclass(frozen=True)
class ProxyPair:
    base: str  # proxy 1's URL standing for the PACS's base URL (the same path)
    inner: str  # proxy 2's URL for the same (https, client certificate required, in the TLS variant)
    pids: tuple[int, ...]  # both proxies' master and worker processes


@contextmanager
def nginx_pair(pacs: str, workdir: Path, tls: bool) -> Iterator[ProxyPair | None]:
    """Two nginx reverse proxies chained in front of the PACS as the gateways are (client -> proxy 1 ->
    proxy 2 -> PACS), streaming over keep-alive HTTP/1.1 upstreams; with ``tls`` proxy 1 reaches proxy 2 over
    mutual TLS as NCP-B reaches NCP-A's border (a throwaway federation PKI: proxy 1 holds AT's client
    certificate, proxy 2 FR's server certificate, each verifies the other). None without nginx."""
    binary = nginx_binary()
    if binary is None:
        yield None
        return
    target = urlsplit(pacs)
    first, second, upstream = free_port(), free_port(), f"{target.hostname}:{target.port}"
    server_tls = client_tls = ""
    if tls:
        pki = FederationPki.create(workdir / "pki", ["AT", "FR"])
        server, client = pki.server_credentials("FR"), pki.client_credentials("AT")
        server_tls = (
            f"ssl_certificate {server.cert}; ssl_certificate_key {server.key}; ssl_verify_client on; "
            f"ssl_client_certificate {pki.ca_file}; ssl_protocols TLSv1.2 TLSv1.3;"
        )
        client_tls = (
            f"proxy_ssl_certificate {client.cert}; proxy_ssl_certificate_key {client.key}; "
            f"proxy_ssl_verify on; proxy_ssl_trusted_certificate {pki.ca_file}; "
            f"proxy_ssl_name {server_name('FR')}; proxy_ssl_protocols TLSv1.2 TLSv1.3;"
        )
    hops = (  # proxy 2 first: proxy 1's upstream must listen before proxy 1 starts
        ("proxy-2", second, upstream, "http", " ssl" if tls else "", server_tls, ""),
        ("proxy-1", first, f"127.0.0.1:{second}", "https" if tls else "http", "", "", client_tls),
    )
    with ExitStack() as stack:
        pids: tuple[int, ...] = ()
        for name, port, address, scheme, listen, server_options, location_options in hops:
            http = f"""
  upstream next {{ server {address}; keepalive 64; keepalive_requests 100000; }}
  server {{
    listen 127.0.0.1:{port}{listen}; {server_options}
    location / {{ proxy_pass {scheme}://next; {NGINX_STREAM} {location_options} }}
  }}
"""
            pids += stack.enter_context(nginx_process(binary, workdir / name, http, port))
        inner = f"{'https' if tls else 'http'}://127.0.0.1:{second}{target.path}"
        yield ProxyPair(f"http://127.0.0.1:{first}{target.path}", inner, pids)


def nginx_pair_probes(
    stack: ExitStack,
    workdir: Path,
    pacs: str,
    study: BigStudy,
    concurrency: int,
    headers: dict[str, str],
    direct: dict[str, Row],
    gateways: list[Row],
    tls: bool,
) -> tuple[list[Row], list[Probe]]:
    """What any two reverse proxies cost here: the nginx pair at study level and per instance, each against
    the PACS direct (``direct``, by level) of the same rounds, and the Python pair (``gateways``, its rows by
    level) against the nginx pair. The pair's CPU per request is its four processes' (masters and workers).
    Without nginx, one row saying why."""
    name = _pair_name(tls)
    pair = stack.enter_context(nginx_pair(pacs, workdir, tls))
    if pair is None:
        print(f"{name}: not measured: {NGINX_ABSENT}", file=sys.stderr)
        return [Row(name, "-", note=f"not measured: {NGINX_ABSENT}")], []
    url = f"{pair.base}studies/{study.study}"
    probes = path_probes(name, url, pair.pids, study, concurrency, headers, dict(direct), {})
    python = {row.level: row for row in gateways}
    # The same samples as the gateways' rows (a second ratio, not a second measurement).
    versus = [
        Row(f"{python[p.row.level].path} vs nginx", p.row.level, python[p.row.level].samples, p.row)
        for p in probes
    ]
    return [p.row for p in probes] + versus, probes


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (``/proc/PID/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_kb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_rows(fed: Federation, url: str, headers: dict[str, str], run: str) -> list[MemoryRow]:
    """Each gateway's RSS, then its peak while ``IN_FLIGHT`` studies stream through both gateways at once
    (the peak is reset first through ``/proc/PID/clear_refs``, Linux >= 4.0)."""
    gateways = {role: pid for role, pid in fed.pids.items() if role.endswith("/gateway")}
    before = {role: _status_kb(pid, "VmRSS") for role, pid in gateways.items()}
    try:
        for pid in gateways.values():
            Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return [MemoryRow(role, run, mb, None) for role, mb in before.items()]

    async def in_flight() -> None:
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            await asyncio.gather(*(_fetch(session, url, headers) for _ in range(IN_FLIGHT)))

    asyncio.run(in_flight())
    return [MemoryRow(role, run, before[role], _status_kb(pid, "VmHWM")) for role, pid in gateways.items()]


def run(args: argparse.Namespace) -> tuple[list[Row], list[MemoryRow]]:
    rows: list[Row] = []
    memory: list[MemoryRow] = []
    with tempfile.TemporaryDirectory(prefix="xcwado-bench-") as tmp:
        measured = fronts(args)
        configs: list[tuple[DataPlane, bool, Front]] = []
        if not args.front_only:
            configs += [(client, False, "none") for client in args.clients]
            configs += [(GATEWAYS_CLIENT, True, "none")] if args.mtls else []
        for front in measured:
            configs += [
                (GATEWAYS_CLIENT, secure, front) for secure in (False, True) if args.mtls or not secure
            ]
        if args.front_only and not measured:
            rows.append(Row("two gateways [nginx front]", "-", note=f"not measured: {NGINX_ABSENT}"))
        for index, (client, secure, front) in enumerate(configs, 1):
            run_dir = Path(tmp) / f"{client}-{front}-{'mtls' if secure else 'plain'}"
            progress(
                f"run {index}/{len(configs)}: {client}{', mTLS + tokens' if secure else ''}, front {front}"
            )
            with Federation(
                "builtin:default", run_dir, mode="process", data_plane=client, secure=secure, front=front
            ) as fed:
                first = client == args.clients[0] and not secure and front == "none"
                found, mem = federation_rows(fed, client, secure, args, Path(tmp) if first else None)
                rows += found
                memory += mem
        if args.orthanc and orthanc_available():
            alone: tuple[Front, ...] = () if args.front_only else ("none",)
            for front in alone + measured:
                progress(f"Orthanc as the source PACS, front {front}")
                rows += orthanc_rows(args, Path(tmp) / f"orthanc-{front}", front)
        elif args.orthanc:
            rows.append(Row("Orthanc", "-", note="not measured: Debian's orthanc is not installed"))
    return rows, memory


def federation_rows(
    fed: Federation, client: str, secure: bool, args: argparse.Namespace, extras: Path | None
) -> tuple[list[Row], list[MemoryRow]]:
    """PACS direct, one gateway and two gateways, study level and per instance, round-robin in one
    federation, and two nginx proxies in the gateways' place (first and mTLS runs); with ``extras`` (the
    first run) also nginx serving a file, frames and XCA-I. Under mTLS the border takes NCP certificates
    only, so only the whole chain is measured, with a consumer's treatment token."""
    fr, at = fed.plan.endpoints["FR"], fed.plan.endpoints["AT"]
    rluid, pacs = next(iter(fr.pacs.items()))
    study = make_study(pacs, rluid, args.instances, args.instance_kb)
    xc = f"homeCommunityId/{fr.home_community_id}/RetrieveLocationUID/{rluid}/studies/{study.study}"
    both = gateway_pids(fed, "AT") + gateway_pids(fed, "FR")
    fronted = fed.plan.front != "none"
    client = f"{fed.plan.front} front" if fronted else client
    run = f"{client}, mTLS + tokens" if secure else client
    headers: dict[str, str] = {}
    paths: dict[str, tuple[str, tuple[int, ...]]] = {
        f"PACS direct [{run} run]": (f"{pacs}studies/{study.study}", ())
    }
    if secure:
        publish_manifest(fed, study)
        headers = treatment_headers(fed, study)
    else:
        paths[f"one gateway (NCP-A) [{client}]"] = (f"{fr.border}/wado-rs/{xc}", gateway_pids(fed, "FR"))
    chain = f"two gateways{', mTLS + tokens' if secure else ''} (NCP-B -> NCP-A) [{client}]"
    paths[chain] = (f"{at.gateway}/wado/{xc}", both)
    probes: list[Probe] = []
    direct: dict[str, Row] = {}
    for name, (url, pids) in paths.items():
        probes += path_probes(name, url, pids, study, args.concurrency, headers, direct, _goals(name, client))
    rows = [p.row for p in probes]
    with ExitStack() as stack:
        if not fronted and (secure or client == args.clients[0]):
            gateways = [p.row for p in probes if p.row.path == chain]
            found, pair = nginx_pair_probes(
                stack, fed.plan.run_dir / "nginx-pair", pacs, study, args.concurrency, headers, direct,
                gateways, secure,
            )  # fmt: skip
            rows += found
            probes += pair
        if extras is not None or (fronted and not secure):  # frames: a viewer's load, alone and fronted
            found, frames = frame_probes(study, paths, chain, args.concurrency, headers, run)
            rows += found
            probes += frames
        if extras is not None:
            nginx = stack.enter_context(nginx_serving(pacs, study, extras))
            if nginx is not None:
                nginx_row = Row("nginx static file", "study", baseline=direct["study"])
                probes.append(
                    Probe(nginx_row, partial(whole_study_sample, nginx, len(study.instances), {}), 1)
                )
                rows.insert(0, nginx_row)
            xcai = xcai_probes(fed, study, pacs, direct["study"], stack)
            rows += [p.row for p in xcai]
            probes += xcai
        measure(probes, args.repeat, args.sample_s)
    memory = memory_rows(fed, paths[chain][0], headers, run) if client == GATEWAYS_CLIENT else []
    return rows, memory


def fronts(args: argparse.Namespace) -> tuple[Front, ...]:
    """The fronts measured beside the gateways alone: nginx's when it is installed."""
    return ("nginx",) if args.front and nginx_binary() is not None else ()


def gateway_pids(fed: Federation, country: str) -> tuple[int, ...]:
    """The processes of a country's gateway: its role, and its nginx front's master and worker."""
    return (fed.pids[f"{country}/gateway"], *fed.front_pids.get(country, ()))


def path_probes(
    name: str,
    url: str,
    pids: tuple[int, ...],
    study: BigStudy,
    concurrency: int,
    headers: dict[str, str],
    baselines: dict[str, Row],
    goals: dict[str, float],
) -> list[Probe]:
    """The study-level and per-instance probes of one path; the first path of a run is the baseline."""
    count = len(study.instances)
    levels = {
        "study": (partial(whole_study_sample, url, count, headers), 1),
        f"instance x{concurrency}": (
            partial(per_instance_sample, study.instance_urls(url), concurrency, headers),
            count,
        ),
    }
    probes = []
    for level, (fetch, requests) in levels.items():
        row = Row(name, level, baseline=baselines.get(level), goal=goals.get(level.split()[0]))
        baselines.setdefault(level, row)
        probes.append(Probe(row, fetch, requests, pids))
    return probes


def _goals(path: str, client: str) -> dict[str, float]:
    """The issue's goals for two gateways, as ratios to the PACS direct in the same rounds, on the gateways'
    own data plane, alone and behind their nginx front (the other clients are there for comparison).
    Study level keeps its 0.90x in plain HTTP, where the issue measured it: with mTLS the bytes are
    encrypted and decrypted on the cores that serve them, and no pair of TLS proxies comes near it here
    (docs/benchmarks.md, "Round 5")."""
    if client not in (GATEWAYS_CLIENT, "nginx front") or not path.startswith("two gateways"):
        return {}
    if "mTLS" in path:
        return {"instance": 0.60}
    return {"study": 0.90, "instance": 0.75}


def frame_probes(
    study: BigStudy,
    paths: dict[str, tuple[str, tuple[int, ...]]],
    chain: str,
    concurrency: int,
    headers: dict[str, str],
    run: str,
) -> tuple[list[Row], list[Probe]]:
    """Frame 1 of every instance (a CT series, as a viewer loads it), ``concurrency`` at a time, direct
    vs both gateways in the ``run`` named; a path that does not answer frames is reported with its status,
    not measured."""
    direct_name = next(iter(paths))
    level = f"frame x{concurrency}"
    urls = {
        name: [f"{u}/frames/1" for u in study.instance_urls(paths[name][0])] for name in (direct_name, chain)
    }
    direct = Row(f"frames: PACS direct [{run} run]", level)
    through = Row(f"frames: {chain}", level, baseline=direct)
    probes: list[Probe] = []
    for row, name in ((direct, direct_name), (through, chain)):
        status = asyncio.run(status_of(urls[name][0], headers, FRAME_ACCEPT))
        if status != 200:
            who = "PACS answers" if row is direct else "the gateways answer"
            row.note = f"not measured: {who} {status}"
            return [direct, through][: 1 if row is direct else 2], probes
        fetch = partial(per_instance_sample, urls[name], concurrency, headers, FRAME_ACCEPT)
        probes.append(Probe(row, fetch, len(urls[name]), paths[name][1]))
    return [direct, through], probes


def xcai_probes(fed: Federation, study: BigStudy, pacs: str, direct: Row, stack: ExitStack) -> list[Probe]:
    """The study by XCA-I (SOAP 1.2, MTOM): RAD-69 at the PACS, then through an Initiating and a
    Responding Imaging Gateway, each its own process; compared with the PACS's WADO-RS, like RAD-160."""
    fr, at = fed.plan.endpoints["FR"], fed.plan.endpoints["AT"]
    rad69 = pacs.removesuffix("dicom-web/") + "xdsi/rad69"
    ig, pids = stack.enter_context(
        xcai_gateways(fr.home_community_id, at.home_community_id, study.rluid, rad69)
    )
    home = f"urn:oid:{fr.home_community_id}"
    docs = tuple(DocumentRequest(study.study, study.series, home, study.rluid, s) for s in study.instances)
    body = request_element(ImagingRequest(docs, (str(UID("1.2.840.10008.1.2.1")),)))
    envelope = envelope_bytes(body, action=RAD69_ACTION)
    paths = {
        "XCA-I: RAD-69 at the PACS direct [MTOM]": (rad69, ()),
        "XCA-I: RAD-69 -> IG -> RAD-75 -> RG -> RAD-69 [MTOM]": (ig, pids),
    }
    return [
        Probe(Row(name, "study", baseline=direct), partial(rad69_sample, url, envelope, study), 1, gateways)
        for name, (url, gateways) in paths.items()
    ]


async def rad69_sample(url: str, envelope: bytes, study: BigStudy) -> Sample:
    """One RAD-69 for the whole study; an answer that is not 200, not complete (closing delimiter) or
    shorter than the study's bytes is an error, not a fast row."""
    headers = {"Content-Type": 'application/soap+xml; charset="utf-8"'}
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        started = time.perf_counter()
        async with session.post(url, data=envelope, headers=headers) as resp:
            ttfb = time.perf_counter() - started
            size, tail = 0, b""
            async for chunk in resp.content.iter_chunked(1 << 20):
                size += len(chunk)
                tail = (tail + chunk)[-8:]
        total = time.perf_counter() - started
    if resp.status != 200 or not tail.rstrip().endswith(b"--") or size < study.bytes:
        raise RuntimeError(f"{url} answered {resp.status}, {size} bytes for a {study.bytes}-byte study")
    return Sample(size / total / 1e6, len(study.instances) / total, ttfb * 1000)


@contextmanager
def xcai_gateways(
    responding_home: str, initiating_home: str, repository: str, rad69: str
) -> Iterator[tuple[str, tuple[int, int]]]:
    """A Responding Imaging Gateway (FR's community, RAD-69 to the PACS) and an Initiating one (AT's)
    as processes; yields the Initiating Gateway's RAD-69 URL and both pids."""
    rg_port, ig_port = free_port(), free_port()
    rg = f"http://127.0.0.1:{rg_port}{RESPONDING_PATH}"
    specs = [("responding", rg_port, responding_home, {repository: rad69}),
             ("initiating", ig_port, initiating_home, {responding_home: rg})]  # fmt: skip
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", f"from ncp.bench import xcai_gateway; xcai_gateway{spec!r}"],
            stdout=subprocess.DEVNULL,
        )
        for spec in specs
    ]
    try:
        for port in (rg_port, ig_port):
            _wait_listening(port)
        yield f"http://127.0.0.1:{ig_port}{INITIATING_PATH}", (procs[0].pid, procs[1].pid)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


def xcai_gateway(kind: str, port: int, home: str, upstreams: dict[str, str]) -> None:
    """One XCA-I imaging gateway process (ncp.registry.xca.rad75's routes), served as roles are."""
    factory = responding_routes if kind == "responding" else initiating_routes
    config = uvicorn.Config(
        gateway_app(factory(home, upstreams)), host="127.0.0.1", port=port, log_level="warning",
        access_log=False, proxy_headers=False,
    )  # fmt: skip
    run_forever(uvicorn.Server(config).serve())


def _wait_listening(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"no XCA-I gateway listening on port {port}")


ORTHANC_TOPOLOGY = """
name = "bench-orthanc"
security = false
[synth]
patients_per_country = 1
studies_per_patient = 1
[countries.FR]
home_community_id = "2.999.250.1"
patient_id_issuer = "2.999.250.2"
registries = [{ id = "national" }]
[[countries.FR.pacs]]
id = "orthanc"
retrieve_location_uid = "2.25.249112837101579105183278066551769719101"
backend = "orthanc"
[[countries.FR.pacs]]
id = "embedded"
retrieve_location_uid = "2.25.302261397045214567911402355398316754412"
[countries.AT]
home_community_id = "2.999.40.1"
patient_id_issuer = "2.999.40.2"
architecture = "C"
registries = [{ id = "national" }]
pacs = [{ id = "vna", retrieve_location_uid = "2.25.124730087464102372658485198995786580382" }]
"""
ORTHANC_RLUID = "2.25.249112837101579105183278066551769719101"
EMBEDDED_RLUID = "2.25.302261397045214567911402355398316754412"


def orthanc_rows(args: argparse.Namespace, work: Path, front: Front) -> list[Row]:
    """Orthanc as FR's PACS, beside the embedded PACS holding the same study: Orthanc direct vs through both
    gateways (alone, or behind their ``front``); without a front also the embedded PACS vs Orthanc per
    instance and a requester-side Orthanc in AT pulling the study straight from FR's Orthanc vs through
    XC-WADO (MCWG 1.7.1)."""
    work.mkdir(parents=True)
    topology = work / "topology.toml"
    topology.write_text(ORTHANC_TOPOLOGY)
    with Federation(str(topology), work / "run", mode="process", secure=False, front=front) as fed:
        fr, at = fed.plan.endpoints["FR"], fed.plan.endpoints["AT"]
        orthanc, embedded = fr.pacs[ORTHANC_RLUID], fr.pacs[EMBEDDED_RLUID]
        study = make_study(orthanc, ORTHANC_RLUID, args.instances, args.instance_kb)
        xc = f"homeCommunityId/{fr.home_community_id}/RetrieveLocationUID/{ORTHANC_RLUID}"
        label = f"{front} front" if front != "none" else GATEWAYS_CLIENT
        paths: dict[str, tuple[str, tuple[int, ...], dict[str, float]]] = {
            "Orthanc direct": (f"{orthanc}studies/{study.study}", (), {}),
            f"Orthanc via two gateways [{label}]": (
                f"{at.gateway}/wado/{xc}/studies/{study.study}",
                gateway_pids(fed, "AT") + gateway_pids(fed, "FR"),
                {"study": 0.80},
            ),
        }
        if front == "none":
            make_study(embedded, EMBEDDED_RLUID, args.instances, args.instance_kb)
            paths["embedded PACS direct (beside Orthanc)"] = (
                f"{embedded}studies/{study.study}",
                (),
                {"instance": 1.0},
            )
        probes: list[Probe] = []
        baselines: dict[str, Row] = {}
        for name, (url, pids, goals) in paths.items():
            probes += path_probes(name, url, pids, study, args.concurrency, {}, baselines, goals)
        # the embedded PACS's study level is in the main table
        probes = [p for p in probes if not (p.row.path.startswith("embedded") and p.row.level == "study")]
        measure(probes, args.repeat, args.sample_s)
        rows = [p.row for p in probes]
        pulls = (
            (("direct", orthanc), ("through XC-WADO", f"{at.gateway}/wado/{xc}/")) if front == "none" else ()
        )
        for name, base in pulls:
            seconds = requester_pull(work / f"requester-{name.split()[0]}", base, study)
            rows.append(
                Row(
                    f"requester-side Orthanc pull, {name}",
                    "study",
                    note=f"{seconds:.2f} s, {study.bytes / seconds / 1e6:.0f} MB/s",
                )
            )
    return rows


def requester_pull(directory: Path, base: str, study: BigStudy) -> float:
    """Seconds until a fresh Orthanc holds every instance of ``study`` pulled from ``base``."""
    config = OrthancConfig(directory, free_port(), name="requester", servers={"source": {"Url": base}})
    with run_orthanc(config):
        started = time.perf_counter()
        body = {"Resources": [{"Study": study.study}]}
        httpx.post(
            f"{config.base_url}/dicom-web/servers/source/retrieve", json=body, timeout=600
        ).raise_for_status()
        while True:
            stats = httpx.get(f"{config.base_url}/statistics").json()
            if int(stats["CountInstances"]) >= len(study.instances):
                return time.perf_counter() - started
            if time.perf_counter() - started > 600:
                raise RuntimeError("requester-side pull did not complete in 10 minutes")
            time.sleep(0.05)


# The goals: a whole study within 10 % of the floor, per instance at 16 users >= 90 % of the link.
LinkGoal = Literal["floor", "fill"]


@dataclass
class LinkRow:
    """One measurement over the emulated link against its floor: the payload at the link's rate plus the
    round trips the exchange needs (1 on pooled connections: the request out, the first byte back; 3 on new
    ones: the TCP and TLS 1.3 handshakes first)."""

    path: str
    payload: int  # HTTP body bytes received
    seconds: float
    floor_s: float
    serialise_s: float  # the payload at the link's rate
    goal: LinkGoal

    @classmethod
    def over(
        cls, profile: LinkProfile, path: str, payload: int, seconds: float, round_trips: int, goal: LinkGoal
    ) -> LinkRow:
        floor, serialise = profile.floor_s(payload, round_trips), profile.floor_s(payload, 0)
        return cls(path, payload, seconds, floor, serialise, goal)

    @property
    def fill(self) -> float:
        """The share of the link's rate the payload used."""
        return self.serialise_s / self.seconds

    @property
    def met(self) -> bool:
        return self.seconds <= 1.1 * self.floor_s if self.goal == "floor" else self.fill >= 0.9

    @property
    def goal_text(self) -> str:
        return "time <= 1.10 x floor" if self.goal == "floor" else "link fill >= 90 %"


def shaped_default(work: Path, rtt_ms: float, mbit: float) -> Path:
    """The default topology (mTLS + tokens) with its FR-AT link shaped, written to ``work``."""
    text = resources.files("ncp.topologies").joinpath("default.toml").read_text()
    shaped = text.replace("rtt_ms = 0", f"rtt_ms = {rtt_ms}").replace(
        "bandwidth_mbit = 0", f"bandwidth_mbit = {mbit}"
    )
    if shaped.count(f"rtt_ms = {rtt_ms}") != 1 or shaped.count(f"bandwidth_mbit = {mbit}") != 1:
        raise RuntimeError("the default topology no longer declares one unshaped FR-AT link")
    work.mkdir(parents=True, exist_ok=True)
    (work / "topology.toml").write_text(shaped)
    return work / "topology.toml"


async def whole_study(url: str, repeat: int, headers: dict[str, str]) -> tuple[int, float]:
    """(body bytes, median seconds) of a study-level GET, after a warm-up that opens every connection."""
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        await _fetch(session, url, headers)
        runs = [await _fetch(session, url, headers) for _ in range(repeat)]
    return runs[0][0], statistics.median(total for _, _, total in runs)


def link_rows(args: argparse.Namespace, work: Path) -> list[LinkRow]:
    """NCP-B -> emulated FR-AT link -> NCP-A (processes, mTLS + tokens): whole study and per instance."""
    profile = LinkProfile(rtt_ms=args.link_rtt_ms, bandwidth_mbit=args.link_mbit)
    progress(f"emulated link: {profile.rtt_ms:g} ms RTT, {profile.bandwidth_mbit:g} Mbit/s")
    topology = shaped_default(work, profile.rtt_ms, profile.bandwidth_mbit)
    with Federation(str(topology), work / "run", mode="process") as fed:
        fr, at = fed.plan.endpoints["FR"], fed.plan.endpoints["AT"]
        rluid, pacs = next(iter(fr.pacs.items()))
        study = make_study(pacs, rluid, args.link_instances, args.instance_kb)
        publish_manifest(fed, study)
        headers = treatment_headers(fed, study)
        url = f"{at.gateway}/wado/homeCommunityId/{fr.home_community_id}/RetrieveLocationUID/{rluid}"
        url += f"/studies/{study.study}"
        size, seconds = asyncio.run(whole_study(url, args.repeat, headers))
        rows = [LinkRow.over(profile, "whole study", size, seconds, 1, "floor")]
        inst_urls = [f"{url}/series/{study.series}/instances/{u}" for u in study.instances]
        users = args.concurrency
        # The first run opens the users' connections across the link, the next ones find them pooled.
        rows.append(link_per_instance(profile, inst_urls, headers, users, 3))
        pooled = [link_per_instance(profile, inst_urls, headers, users, 1) for _ in range(args.repeat)]
        rows.append(sorted(pooled, key=lambda r: r.seconds)[len(pooled) // 2])
    return rows


def link_per_instance(
    profile: LinkProfile, urls: list[str], headers: dict[str, str], users: int, round_trips: int
) -> LinkRow:
    mbps, per_s, _ = asyncio.run(per_instance(urls, users, headers))
    elapsed = len(urls) / per_s
    connections = "new" if round_trips > 1 else "pooled"
    path = f"per instance x{users}, {connections} connections"
    return LinkRow.over(profile, path, int(mbps * 1e6 * elapsed), elapsed, round_trips, "fill")


def render_link(rows: list[LinkRow], args: argparse.Namespace) -> str:
    lines = [
        f"emulated FR-AT link {args.link_rtt_ms:g} ms RTT / {args.link_mbit:g} Mbit/s, NCP-B -> NCP-A "
        f"(mTLS + tokens); study {args.link_instances} instances x ~{args.instance_kb} KB; median of "
        f"{args.repeat}; floor = payload x 8 / bandwidth + RTTs (1 on pooled connections, 3 on new ones)",
        "",
        "| path | payload MB | time s | floor s | time / floor | link fill | goal | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.path} | {r.payload / 1e6:.1f} | {r.seconds:.2f} | {r.floor_s:.2f} "
            f"| {r.seconds / r.floor_s:.3f} | {r.fill:.1%} | {r.goal_text} | {'yes' if r.met else 'NO'} |"
        )
    return "\n".join(lines)


def _spread(values: list[float], spec: str = ".0f") -> str:
    """``median (min-max)`` of the repetitions, or the one value."""
    if not values:
        return "-"
    middle = format(statistics.median(values), spec)
    if len(values) == 1:
        return middle
    return f"{middle} ({format(min(values), spec)}-{format(max(values), spec)})"


def _verdict(met: bool | None) -> str:
    return "-" if met is None else "yes" if met else "NO"


def _pair_name(tls: bool) -> str:
    return f"two nginx proxies{', mTLS between them' if tls else ''} (nginx -> nginx)"


def _missed(row: Row, rows: list[Row]) -> str:
    """A missed goal with its ratio and, for a ratio to the embedded PACS, what two bare nginx proxies kept of
    it at that level in the run: what any two relays keep on this machine."""
    text = f"{row.path}, {row.level} ({statistics.median(row.ratios()):.2f}x"
    pair = next((p for p in rows if p.path == _pair_name("mTLS" in row.path) and p.level == row.level), None)
    if pair is not None and pair.ratios() and row.baseline and row.baseline.path.startswith("PACS direct"):
        text += f"; two nginx proxies: {statistics.median(pair.ratios()):.2f}x"
    return text + ")"


def render(rows: list[Row], memory: list[MemoryRow], args: argparse.Namespace) -> str:
    lines = [
        f"study: {args.instances} instances x ~{args.instance_kb} KB; {args.repeat} repetitions round-robin "
        f"per federation, each of at least {args.sample_s:g} s, median (min-max); per-instance and frame "
        f"concurrency {args.concurrency}; "
        "ratios of requests/s to the row named, taken round by round; met: median ratio >= goal",
        "",
        "| path | level | MB/s | requests/s | TTFB ms | gateways' CPU ms/request | ratio to | ratio | goal "
        "| met |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.note:
            lines.append(f"| {r.path} | {r.level} | - | - | - | - | - | {r.note} | - | - |")
            continue
        cpu = [s.cpu_ms for s in r.samples if s.cpu_ms is not None]
        base = f"{r.baseline.path}, {r.baseline.level}" if r.baseline else "-"
        goal = f">= {r.goal:.2f}x" if r.goal is not None else "-"
        lines.append(
            f"| {r.path} | {r.level} | {_spread([s.mbps for s in r.samples])} "
            f"| {_spread([s.per_second for s in r.samples])} "
            f"| {statistics.median(s.ttfb_ms for s in r.samples):.1f} | {_spread(cpu, '.2f')} "
            f"| {base} | {_spread(r.ratios(), '.2f')} | {goal} | {_verdict(r.met)} |"
        )
    judged = [r for r in rows if r.met is not None]
    if judged:
        missed = [_missed(r, rows) for r in judged if not r.met]
        lines += ["", f"ratio goals met: {len(judged) - len(missed)} of {len(judged)}"]
        lines[-1] += f"; not met: {'; '.join(missed)}" if missed else ""
    if memory:
        lines += [
            "",
            f"gateway memory: RSS before, and at its peak while {IN_FLIGHT} studies stream through both "
            "gateways at once",
            "",
            "| gateway | run | RSS before MB | peak MB | growth per in-flight study MB | goal | met |",
            "|---|---|---|---|---|---|---|",
        ]
        for m in memory:
            growth = m.growth_mb
            peak = "not measured (no access to clear_refs)" if m.peak_mb is None else f"{m.peak_mb:.0f}"
            met = None if growth is None else growth <= RSS_GOAL_MB
            lines.append(
                f"| {m.role} | {m.run} | {m.before_mb:.0f} | {peak} "
                f"| {'-' if growth is None else f'{growth:.1f}'} | <= {RSS_GOAL_MB:g} MB | {_verdict(met)} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ncp.bench", description=__doc__)
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--instance-kb", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of every measurement")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--sample-s",
        type=float,
        default=1.0,
        help="each repetition fetches its study (or its instances) again until this many seconds have passed",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small study (24 x 64 KB, 10 over the link), 2 repetitions: checks that everything runs",
    )
    parser.add_argument("--no-orthanc", dest="orthanc", action="store_false", help="skip the Orthanc rows")
    parser.add_argument("--no-mtls", dest="mtls", action="store_false", help="skip the mTLS + token run")
    front = parser.add_mutually_exclusive_group()
    front.add_argument(
        "--no-front", dest="front", action="store_false", help="skip the runs with the gateways' nginx front"
    )
    front.add_argument(
        "--front-only",
        action="store_true",
        help="only the runs with the gateways' nginx front (and Orthanc's)",
    )
    parser.add_argument(
        "--clients",
        nargs="+",
        default=[GATEWAYS_CLIENT, "aiohttp"],
        choices=get_args(DataPlane),
        help="the gateways' data-plane clients to compare; goals apply to h1, theirs (default: h1 aiohttp)",
    )
    link = parser.add_mutually_exclusive_group()
    link.add_argument("--link-only", action="store_true", help="only the emulated-link section")
    link.add_argument("--no-link", dest="link", action="store_false", help="skip the emulated-link section")
    parser.add_argument("--link-instances", type=int, default=100, help="study size over the emulated link")
    parser.add_argument("--link-rtt-ms", type=float, default=30.0)
    parser.add_argument("--link-mbit", type=float, default=100.0)
    args = parser.parse_args(argv)
    if args.quick:
        args.instances, args.instance_kb, args.link_instances, args.repeat, args.sample_s = 24, 64, 10, 2, 0.0
    if not args.link_only:
        print(render(*run(args), args), end="\n\n" if args.link else "\n", flush=True)
    if args.link:
        with tempfile.TemporaryDirectory(prefix="xcwado-bench-link-") as tmp:
            print(render_link(link_rows(args, Path(tmp)), args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
