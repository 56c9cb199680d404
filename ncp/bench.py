"""``make bench``: image retrieval throughput, measured side by side in one run.

Paths compared for the same study on the same machine (docs/benchmarks.md): nginx serving the
study's bytes from a file, the PACS directly, one gateway (NCP-A's border, RAD-160 responding),
two gateways (NCP-B -> NCP-A), for each data-plane client (aiohttp, httpx). Study level (one
request) and per instance (N requests, C concurrent). Ratios are what to compare; absolute
numbers depend on the machine (client, gateways and PACS share its cores).

The emulated-link section (``--link-only`` runs it alone) puts a shaped FR-AT link (``ncp.link`` relay,
30 ms RTT / 100 Mbit by default) between the gateways and compares retrieval times with the link's floor.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import aiohttp
import httpx
from pydicom.uid import UID

from ncp.consumer.client import ImagingConsumer
from ncp.dicom.kos import build_manifest, to_part10
from ncp.dicom.multipart import encode_multipart_bytes, multipart_content_type, new_boundary
from ncp.dicom.uids import deterministic_uid
from ncp.federation import Federation
from ncp.link import LinkProfile
from ncp.mhd import provide_document_bundle
from ncp.model import InstanceRecord, StudyRecord
from ncp.orthanc import OrthancConfig, orthanc_available, run_orthanc
from ncp.publish import manifest_document
from ncp.server import free_port
from ncp.synth import synthesize
from ncp.topology import Topology, builtin_topology

__all__ = ["main"]

ACCEPT = 'multipart/related; type="application/dicom"'


@dataclass
class Row:
    path: str
    level: str
    mbps: float
    per_second: float  # instances/s
    ttfb_ms: float
    note: str = ""


@dataclass(frozen=True)
class BigStudy:
    study: str
    series: str
    instances: tuple[str, ...]
    rluid: str
    bytes: int
    record: StudyRecord  # the catalogue record, to publish its manifest (ownership checks under mTLS)


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
    session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, float, float]:
    started = time.perf_counter()
    async with session.get(url, headers={"Accept": ACCEPT, **(headers or {})}) as resp:
        ttfb = time.perf_counter() - started
        size = 0
        async for chunk in resp.content.iter_chunked(1 << 20):
            size += len(chunk)
        if resp.status != 200:
            raise RuntimeError(f"{url} answered {resp.status}")
    return size, ttfb, time.perf_counter() - started


async def study_level(
    urls: dict[str, str], repeat: int, headers: dict[str, str] | None = None
) -> dict[str, tuple[float, float]]:
    """Median MB/s and TTFB per path; paths are measured round-robin so machine noise hits all alike."""
    rates: dict[str, list[float]] = {k: [] for k in urls}
    ttfbs: dict[str, list[float]] = {k: [] for k in urls}
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        for url in urls.values():
            await _fetch(session, url, headers)  # warm-up: connections, page cache
        for _ in range(repeat):
            for name, url in urls.items():
                size, ttfb, total = await _fetch(session, url, headers)
                rates[name].append(size / total / 1e6)
                ttfbs[name].append(ttfb * 1000)
    return {k: (statistics.median(rates[k]), statistics.median(ttfbs[k])) for k in urls}


async def per_instance(
    urls: list[str], concurrency: int, headers: dict[str, str] | None = None
) -> tuple[float, float, float]:
    queue = list(urls)
    sizes: list[int] = []
    ttfbs: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        await _fetch(session, urls[0], headers)

        async def worker() -> None:
            while queue:
                size, ttfb, _ = await _fetch(session, queue.pop(), headers)
                sizes.append(size)
                ttfbs.append(ttfb * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return sum(sizes) / elapsed / 1e6, len(urls) / elapsed, statistics.median(ttfbs)


@contextmanager
def nginx_serving(body: bytes, content_type: str, workdir: Path) -> Iterator[str | None]:
    """nginx serving ``body`` as a static file; yields None when nginx is not installed."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        yield None
        return
    root = workdir / "nginx"
    (root / "www").mkdir(parents=True, exist_ok=True)
    (root / "www" / "study").write_bytes(body)
    port = free_port()
    (root / "nginx.conf").write_text(f"""
{"user root;" if os.geteuid() == 0 else ""} worker_processes 1; daemon off;
pid {root}/nginx.pid; error_log {root}/error.log;
events {{ worker_connections 256; }}
http {{
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  client_body_temp_path {root}/tmp; proxy_temp_path {root}/tmp; fastcgi_temp_path {root}/tmp;
  uwsgi_temp_path {root}/tmp; scgi_temp_path {root}/tmp;
  types {{ }} default_type '{content_type}';
  server {{ listen 127.0.0.1:{port}; root {root}/www; }}
}}
""")
    proc = subprocess.Popen([binary, "-c", str(root / "nginx.conf"), "-p", str(root)])
    try:
        for _ in range(100):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/study").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/study"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="xcwado-bench-") as tmp:
        configs = [(client, False) for client in args.clients] + ([("aiohttp", True)] if args.mtls else [])
        for client, secure in configs:
            run_dir = Path(tmp) / f"{client}-{'mtls' if secure else 'plain'}"
            with Federation(
                "builtin:default", run_dir, mode="process", data_plane=client, secure=secure
            ) as fed:
                fr, at = fed.plan.endpoints["FR"], fed.plan.endpoints["AT"]
                rluid, pacs = next(iter(fr.pacs.items()))
                study = make_study(pacs, rluid, args.instances, args.instance_kb)
                hcid = fr.home_community_id
                xc = f"homeCommunityId/{hcid}/RetrieveLocationUID/{rluid}/studies/{study.study}"
                paths = {
                    "PACS direct": f"{pacs}studies/{study.study}",
                    "one gateway (NCP-A)": f"{fr.border}/wado-rs/{xc}",
                    "two gateways (NCP-B -> NCP-A)": f"{at.gateway}/wado/{xc}",
                }
                headers: dict[str, str] = {}
                if secure:  # the border takes NCP certificates only: measure the whole chain with a token
                    publish_manifest(fed, study)
                    headers = treatment_headers(fed, study)
                    paths = {
                        "two gateways, mTLS + tokens (NCP-B -> NCP-A)": paths["two gateways (NCP-B -> NCP-A)"]
                    }
                if client == args.clients[0] and not secure:
                    body = httpx.get(paths["PACS direct"], headers={"Accept": ACCEPT}, timeout=120)
                    with nginx_serving(body.content, body.headers["content-type"], Path(tmp)) as nginx:
                        if nginx:
                            mbps, ttfb = asyncio.run(study_level({"nginx": nginx}, args.repeat))["nginx"]
                            rows.append(
                                Row(
                                    "nginx static file",
                                    "study",
                                    mbps,
                                    mbps * 1e6 / (study.bytes / args.instances),
                                    ttfb,
                                )
                            )
                if client != args.clients[0]:
                    paths.pop("PACS direct", None)
                measured = asyncio.run(study_level(paths, args.repeat, headers))
                for name, url in paths.items():
                    label = name if name == "PACS direct" else f"{name} [{client}]"
                    mbps, ttfb = measured[name]
                    rows.append(Row(label, "study", mbps, mbps * 1e6 / (study.bytes / args.instances), ttfb))
                    inst_urls = [f"{url}/series/{study.series}/instances/{u}" for u in study.instances]
                    mbps_i, ips, ttfb_i = asyncio.run(per_instance(inst_urls, args.concurrency, headers))
                    rows.append(Row(label, f"instance x{args.concurrency}", mbps_i, ips, ttfb_i))
                gw_peak = {
                    role: peak_rss_mb(pid) for role, pid in fed.pids.items() if role.endswith("/gateway")
                }
                for role, mb in gw_peak.items():
                    rows.append(
                        Row(
                            f"peak RSS {role} [{client}{', mTLS' if secure else ''}]",
                            "-",
                            0,
                            0,
                            0,
                            f"{mb:.0f} MB for a {study.bytes / 1e6:.0f} MB study",
                        )
                    )
        if args.orthanc and orthanc_available():
            rows += orthanc_rows(args, Path(tmp) / "orthanc")
    return rows


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
[countries.AT]
home_community_id = "2.999.40.1"
patient_id_issuer = "2.999.40.2"
architecture = "C"
registries = [{ id = "national" }]
pacs = [{ id = "vna", retrieve_location_uid = "2.25.124730087464102372658485198995786580382" }]
"""


def orthanc_rows(args: argparse.Namespace, work: Path) -> list[Row]:
    """Orthanc as FR's PACS: direct vs through both gateways; then a requester-side Orthanc in AT pulling
    the study straight from FR's Orthanc vs through XC-WADO (MCWG 1.7.1)."""
    work.mkdir(parents=True)
    topology = work / "topology.toml"
    topology.write_text(ORTHANC_TOPOLOGY)
    rows: list[Row] = []
    with Federation(str(topology), work / "run", mode="process", secure=False) as fed:
        fr, at = fed.plan.endpoints["FR"], fed.plan.endpoints["AT"]
        rluid, pacs = next(iter(fr.pacs.items()))
        study = make_study(pacs, rluid, args.instances, args.instance_kb)
        xc = f"homeCommunityId/{fr.home_community_id}/RetrieveLocationUID/{rluid}"
        paths = {
            "Orthanc direct": f"{pacs}studies/{study.study}",
            "Orthanc via two gateways [aiohttp]": f"{at.gateway}/wado/{xc}/studies/{study.study}",
        }
        per_instance_size = study.bytes / args.instances
        for name, (mbps, ttfb) in asyncio.run(study_level(paths, args.repeat)).items():
            rows.append(Row(name, "study", mbps, mbps * 1e6 / per_instance_size, ttfb))
        for name, base in (("direct", pacs), ("through XC-WADO", f"{at.gateway}/wado/{xc}/")):
            seconds = requester_pull(work / f"requester-{name.split()[0]}", base, study)
            rows.append(
                Row(
                    f"requester-side Orthanc pull, {name}",
                    "study",
                    study.bytes / seconds / 1e6,
                    args.instances / seconds,
                    0.0,
                    note=f"{seconds:.2f} s for {study.bytes / 1e6:.0f} MB",
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


def render(rows: list[Row], args: argparse.Namespace) -> str:
    direct = {r.level: r for r in rows if r.path == "PACS direct"}
    lines = [
        f"study: {args.instances} instances x ~{args.instance_kb} KB; repeat {args.repeat}; "
        f"per-instance concurrency {args.concurrency}",
        "",
        "| path | level | MB/s | instances/s | TTFB ms (median) | vs PACS direct |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.note and not r.mbps:
            lines.append(f"| {r.path} | - | - | - | - | {r.note} |")
            continue
        if r.note:
            lines.append(f"| {r.path} | {r.level} | {r.mbps:.0f} | {r.per_second:.0f} | - | {r.note} |")
            continue
        base = direct.get(r.level)
        ratio = f"{r.mbps / base.mbps:.2f}x" if base and base.mbps else "-"
        lines.append(
            f"| {r.path} | {r.level} | {r.mbps:.0f} | {r.per_second:.0f} | {r.ttfb_ms:.1f} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ncp.bench", description=__doc__)
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--instance-kb", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-orthanc", dest="orthanc", action="store_false", help="skip the Orthanc rows")
    parser.add_argument("--no-mtls", dest="mtls", action="store_false", help="skip the mTLS + token run")
    parser.add_argument("--clients", nargs="+", default=["aiohttp", "httpx"], choices=["aiohttp", "httpx"])
    link = parser.add_mutually_exclusive_group()
    link.add_argument("--link-only", action="store_true", help="only the emulated-link section")
    link.add_argument("--no-link", dest="link", action="store_false", help="skip the emulated-link section")
    parser.add_argument("--link-instances", type=int, default=100, help="study size over the emulated link")
    parser.add_argument("--link-rtt-ms", type=float, default=30.0)
    parser.add_argument("--link-mbit", type=float, default=100.0)
    args = parser.parse_args(argv)
    if not args.link_only:
        print(render(run(args), args), end="\n\n" if args.link else "\n")
    if args.link:
        with tempfile.TemporaryDirectory(prefix="xcwado-bench-link-") as tmp:
            print(render_link(link_rows(args, Path(tmp)), args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
