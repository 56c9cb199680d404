"""``make soak``: a bounded soak test of a secured federation (issue 11, part 6).

Starts the topology as role processes with mTLS and tokens, seeds it, then runs ``--clients`` simulated
health professionals (one thread and one connection pool each) for ``--minutes``: full three-step flows
(authenticate, identify, treatment context, ITI-67, ITI-68, RAD-160 series verified against the manifest)
mixed with viewer sessions that fetch a series instance by instance (RAD-160, one request per image).

Every ``--interval`` seconds it prints one line: requests and errors in the interval (any non-2xx answer or
exception, classified) and each role's RSS. The verdict: every role's RSS grew at most ``--tolerance`` over
the last 20 minutes (the last 2/3 of a shorter run; the first part is warm-up) and no request failed.
The series goes to ``soak.csv`` and ``soak.json`` in the run directory, failures to ``errors.log``.
Exit status 0 only when the verdict passes.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import math
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import httpx
import psutil
import pydicom

from ncp.consumer.client import DICOM_MULTIPART, ImagingConsumer
from ncp.dicom.multipart import MultipartDecoder
from ncp.federation import Federation
from ncp.model import SeriesRecord, StudyRecord
from ncp.publish import Published, seed_federation
from ncp.synth import catalogue_json

__all__ = ["Sample", "SoakConfig", "SoakReport", "main", "rss_growth", "run_soak"]

FLAT_WINDOW_S = 20 * 60.0  # the window; a shorter run uses its last 2/3
_TOKEN_RENEW_S = 120.0  # viewers keep a treatment token this long (tokens live 5 min)
_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
_JOIN_S = 90.0  # a client finishes its request in flight: at most one timeout


@dataclass(frozen=True)
class SoakConfig:
    run_dir: Path
    minutes: float = 30.0
    clients: int = 16
    interval_s: float = 60.0
    topology: str = "builtin:default"
    flow_share: float = 0.25  # of client iterations; the rest are viewer sessions
    tolerance: float = 0.05
    seed: int = 1

    @property
    def duration_s(self) -> float:
        return self.minutes * 60.0

    @property
    def window_s(self) -> float:
        return min(FLAT_WINDOW_S, self.duration_s * 2 / 3)


@dataclass(frozen=True)
class Visit:
    """A study a consumer in country B can consult: B's gateway, A's community, the study."""

    gateway: str
    home_community_id: str
    study: StudyRecord


@dataclass(frozen=True)
class Sample:
    elapsed_s: float
    requests: int  # in the interval that ends here
    errors: dict[str, int]  # class -> count, in the interval
    rss_mb: dict[str, float]  # role id -> RSS (NaN: the process is gone)
    kinds: dict[str, int] = field(default_factory=dict)  # request kind -> count, in the interval

    @property
    def minute(self) -> float:
        return self.elapsed_s / 60.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass(frozen=True)
class SoakReport:
    config: SoakConfig
    roles: tuple[str, ...]
    samples: tuple[Sample, ...]
    growth: dict[str, float]  # role -> relative RSS growth over the window
    window_start_s: float

    @property
    def requests(self) -> int:
        return sum(s.requests for s in self.samples)

    @property
    def errors(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for s in self.samples:
            total.update(s.errors)
        return total

    @property
    def rss_flat(self) -> bool:
        # NaN (a role died) compares False, so it fails too
        return bool(self.growth) and all(g <= self.config.tolerance for g in self.growth.values())

    @property
    def ok(self) -> bool:
        return self.rss_flat and not self.errors


class CheckFailed(Exception):
    """An answer was 2xx but wrong (selection, manifest, instances): the message is its class."""


class Tally:
    """Counters of the current interval, shared by the client threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kinds: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()

    def request(self, kind: str) -> None:
        with self._lock:
            self._kinds[kind] += 1

    def error(self, cls: str) -> None:
        with self._lock:
            self._errors[cls] += 1

    def take(self) -> tuple[Counter[str], Counter[str]]:
        """(requests by kind, errors by class) since the last call, and start over."""
        with self._lock:
            kinds, errors = self._kinds, self._errors
            self._kinds, self._errors = Counter(), Counter()
        return kinds, errors


class ErrorLog:
    """``errors.log``: every failure with its detail (the console shows only classes)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def write(self, cls: str, detail: str) -> None:
        with self._lock:
            self._out.write(f"{datetime.now().isoformat(timespec='seconds')}\t{cls}\t{detail[:500]}\n")
            self._out.flush()


def request_kind(path: str) -> str:
    """A request's transaction, from its URL path (for counts and error classes)."""
    if path.startswith("/idp/"):
        return "idp-" + path.rsplit("/", 1)[-1]
    if path.startswith("/wado/"):
        return "rad160-instance" if "/instances/" in path else "rad160-series"
    if path.startswith("/fhir/"):
        return "fhir-" + path.split("/")[2]
    return "other"


class SoakClient:
    """One health professional in a thread: its own connection pool, tokens and random choices."""

    def __init__(
        self,
        index: int,
        visits: Sequence[Visit],
        config: SoakConfig,
        tally: Tally,
        errors: ErrorLog,
        stop: threading.Event,
    ) -> None:
        self.visits = visits
        self.config = config
        self.tally = tally
        self.errors = errors
        self.stop = stop
        self.rng = random.Random(f"{config.seed}/{index}")
        # httpx's default pool (idle connections kept 5 s), as ImagingConsumer's: the gateways must keep
        # theirs longer (ncp.app.KEEP_ALIVE_S), else a request sent on one they are closing is lost
        self.http = httpx.Client(timeout=_TIMEOUT, event_hooks={"response": [self._on_response]})
        self._http_errors = 0  # non-2xx answers seen: an exception they cause is not counted again
        self._tokens: dict[tuple[str, str, str], tuple[dict[str, str], float]] = {}

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                visit = self.rng.choice(self.visits)
                task = self.flow if self.rng.random() < self.config.flow_share else self.view
                self._attempt(task, visit)
        finally:
            self.http.close()

    def _on_response(self, response: httpx.Response) -> None:
        kind = request_kind(response.request.url.path)
        self.tally.request(kind)
        if not response.is_success:
            self._http_errors += 1
            cls = f"HTTP {response.status_code} {kind}"
            self.tally.error(cls)
            self.errors.write(cls, f"{response.request.url} {response.headers.get('warning', '')}")

    def _attempt(self, task: Callable[[Visit], None], visit: Visit) -> None:
        before = self._http_errors
        try:
            task(visit)
        except httpx.TransportError as exc:  # no answer: the hook did not see this request
            self.tally.request(_kind_of(exc))
            self._fail(f"{type(exc).__name__} {_kind_of(exc)}", f"{_url_of(exc)} {exc!r}")
        except Exception as exc:  # whatever it is, the soak counts it and goes on
            if self._http_errors == before:  # else the non-2xx answer behind it is already counted
                cls = str(exc) if isinstance(exc, CheckFailed) else type(exc).__name__
                self._fail(cls, repr(exc))

    def _fail(self, cls: str, detail: str) -> None:
        self.tally.error(cls)
        self.errors.write(cls, detail)

    # -- the three steps ---------------------------------------------------------------------------
    def flow(self, visit: Visit) -> None:
        """Authenticate, identify, open a treatment context, find, retrieve the manifest and the images."""
        study, patient = visit.study, visit.study.patient
        consumer = ImagingConsumer(visit.gateway, client=self.http)  # a fresh one: its log grows
        consumer.authenticate()
        consumer.identify(patient.issuer, patient.id)
        consumer.open_treatment_context(patient.issuer, patient.id)
        found = consumer.find(
            patient.issuer, patient.id, region=study.anatomical_region.token(), modality=study.modalities[0]
        )
        chosen = [
            e
            for e in ImagingConsumer.select(found, procedure=study.procedure.display)
            if e.kind == "manifest" and e.study_instance_uid == study.study_instance_uid
        ]
        if len(chosen) != 1:
            raise CheckFailed("find: level-2 selection did not give one manifest")
        manifest = consumer.retrieve_manifest(chosen[0])
        if manifest.study_instance_uid != study.study_instance_uid:
            raise CheckFailed("manifest: another study")
        retrieval = consumer.retrieve_images(visit.home_community_id, manifest)
        if not retrieval.complete:
            failed = next(s for s in retrieval.series if not s.complete)
            if failed.status == 0:  # a transport error the hook did not see
                self.tally.request("rad160-series")
            reason = (failed.error or "missing or unexpected instances").split(":")[0]
            raise CheckFailed(f"images: incomplete series ({reason})")

    # -- a viewer: one request per image -----------------------------------------------------------
    def view(self, visit: Visit) -> None:
        series = self.rng.choice(visit.study.series)
        headers = self._treatment(visit)
        for instance in series.instances:
            if self.stop.is_set():
                return
            self._instance(visit, series, instance.sop_instance_uid, headers)

    def _treatment(self, visit: Visit) -> dict[str, str]:
        """A viewer keeps its treatment token for a while, as an open viewer session does."""
        patient = visit.study.patient
        key = (visit.gateway, patient.issuer, patient.id)
        cached = self._tokens.get(key)
        if cached is None or cached[1] < time.monotonic():
            consumer = ImagingConsumer(visit.gateway, client=self.http)
            consumer.authenticate()
            consumer.open_treatment_context(patient.issuer, patient.id)
            cached = ({"Authorization": consumer.headers["Authorization"]}, time.monotonic() + _TOKEN_RENEW_S)
            self._tokens[key] = cached
        return cached[0]

    def _instance(self, visit: Visit, series: SeriesRecord, sop: str, headers: dict[str, str]) -> None:
        url = (
            f"{visit.gateway}/wado/homeCommunityId/{visit.home_community_id}/RetrieveLocationUID/"
            f"{series.retrieve_location_uid}/studies/{visit.study.study_instance_uid}"
            f"/series/{series.series_instance_uid}/instances/{sop}"
        )
        response = self.http.get(url, headers={**headers, "Accept": DICOM_MULTIPART})
        if not response.is_success:
            raise CheckFailed(f"rad160-instance: {response.status_code}")  # counted by the hook
        if _sop_uids(response) != [sop]:
            raise CheckFailed("rad160-instance: not exactly the instance asked for")


def _sop_uids(response: httpx.Response) -> list[str]:
    decoder = MultipartDecoder(response.headers.get("content-type", ""))
    parts = decoder.feed(response.content)
    decoder.close()
    return [_sop_uid(p.body) for p in parts]


def _sop_uid(body: bytes) -> str:
    ds = pydicom.dcmread(io.BytesIO(body), stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
    return str(ds.SOPInstanceUID)


def _kind_of(exc: httpx.TransportError) -> str:
    url = _url_of(exc)
    return request_kind(url.path) if url else "other"


def _url_of(exc: httpx.TransportError) -> httpx.URL | None:
    try:
        return exc.request.url
    except RuntimeError:  # an error raised before a request existed
        return None


# -- memory ---------------------------------------------------------------------------------------------
def rss_mb(pid: int) -> float:
    """Resident memory of a role process and its children, in MB; NaN once it is gone."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:  # exited, not yet reaped: psutil would say 0 bytes
            return math.nan
        procs = [proc, *proc.children(recursive=True)]
        return float(sum(p.memory_info().rss for p in procs)) / 1e6
    except psutil.Error:
        return math.nan


def rss_growth(samples: Sequence[Sample], window_s: float) -> tuple[float, dict[str, float]]:
    """(window start, per-role relative RSS growth from the first sample in the last ``window_s`` to the
    last sample); a role that died grows by NaN."""
    end = samples[-1]
    start = next(s for s in samples if s.elapsed_s >= end.elapsed_s - window_s - 1e-9)
    return start.elapsed_s, {
        role: end.rss_mb[role] / start.rss_mb[role] - 1.0 if start.rss_mb[role] > 0 else math.nan
        for role in end.rss_mb
    }


# -- the run --------------------------------------------------------------------------------------------
def visits_of(
    published: Mapping[str, Published], gateways: Mapping[str, str], hcids: Mapping[str, str]
) -> list[Visit]:
    """Every study of every country, consulted from the first other country (both directions)."""
    out = []
    for code, pub in published.items():
        b = next(c for c in gateways if c != code)
        out += [Visit(gateways[b], hcids[code], study) for study in pub.data.studies]
    return out


@contextmanager
def seeded_federation(config: SoakConfig) -> Iterator[tuple[Federation, list[Visit]]]:
    with Federation(config.topology, config.run_dir, mode="process", secure=True) as fed:
        published = asyncio.run(seed_federation(fed.topology, fed.plan.endpoints))
        fed.catalogue = {"patients": [p for pub in published.values() for p in catalogue_json(pub.data)]}
        fed.write_state(config.run_dir / "state.json")
        countries = fed.plan.endpoints.countries
        gateways = {code: ep.gateway for code, ep in countries.items()}
        hcids = {code: ep.home_community_id for code, ep in countries.items()}
        yield fed, visits_of(published, gateways, hcids)


def sample(elapsed_s: float, tally: Tally, pids: Mapping[str, int]) -> Sample:
    kinds, errors = tally.take()
    rss = {role: rss_mb(pid) for role, pid in sorted(pids.items())}
    return Sample(elapsed_s, sum(kinds.values()), dict(errors), rss, dict(kinds))


def run_soak(config: SoakConfig, out: TextIO = sys.stdout) -> SoakReport:
    config.run_dir.mkdir(parents=True, exist_ok=True)
    with seeded_federation(config) as (fed, visits), open(config.run_dir / "errors.log", "w") as log:
        pids = dict(fed.pids)
        print(
            f"soak: {len(pids)} role processes, {len(visits)} studies, {config.clients} clients, "
            f"{config.minutes:g} min, run dir {config.run_dir}",
            file=out,
        )
        samples = _drive(config, visits, pids, ErrorLog(log), out)
    start, growth = rss_growth(samples, config.window_s)
    report = SoakReport(config, tuple(sorted(pids)), tuple(samples), growth, start)
    write_files(report)
    print(render_summary(report), file=out)
    return report


def _drive(
    config: SoakConfig, visits: Sequence[Visit], pids: Mapping[str, int], errors: ErrorLog, out: TextIO
) -> list[Sample]:
    """The client threads for the configured duration, one sample per interval (the first before traffic)."""
    tally, stop = Tally(), threading.Event()
    samples = [sample(0.0, tally, pids)]
    print(render_header(pids), file=out)
    print(render_line(samples[0]), file=out, flush=True)
    # every client consults both ways, so its pool to each gateway idles at times (keep-alive is exercised)
    clients = [SoakClient(i, visits, config, tally, errors, stop) for i in range(config.clients)]
    threads = [threading.Thread(target=c.run, name=f"soak-{i}", daemon=True) for i, c in enumerate(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    try:
        for due in _due_times(config):
            stop.wait(max(0.0, started + due - time.monotonic()))
            samples.append(sample(due, tally, pids))  # the nominal time: windows are cut on it
            print(render_line(samples[-1]), file=out, flush=True)
            write_series(config.run_dir / "soak.csv", samples)  # kept up to date: a killed run leaves it
    finally:
        stop.set()
        for t in threads:
            t.join(_JOIN_S)
    samples[-1] = _with_stragglers(samples[-1], tally, out)
    return samples


def _with_stragglers(last: Sample, tally: Tally, out: TextIO) -> Sample:
    """The requests still in flight at the stop belong to the run: add them to the last interval."""
    kinds, errors = tally.take()
    if errors:
        print(f"after the stop: {sum(errors.values())} errors {dict(errors)}", file=out)
    kinds.update(last.kinds)
    errors.update(last.errors)
    return replace(last, requests=sum(kinds.values()), errors=dict(errors), kinds=dict(kinds))


def _due_times(config: SoakConfig) -> Iterator[float]:
    n = max(1, math.ceil(config.duration_s / config.interval_s - 1e-9))
    for i in range(1, n + 1):
        yield min(i * config.interval_s, config.duration_s)


# -- output ---------------------------------------------------------------------------------------------
def render_header(pids: Mapping[str, int]) -> str:
    roles = "  ".join(f"{r:>{max(len(r), 7)}}" for r in sorted(pids))
    return f"{'minute':>6}  {'requests':>8}  {'errors':>6}  {roles}   (RSS MB)"


def render_line(s: Sample) -> str:
    rss = "  ".join(f"{mb:>{max(len(r), 7)}.1f}" for r, mb in s.rss_mb.items())
    classes = ", ".join(f"{k}: {v}" for k, v in sorted(s.errors.items()))
    return f"{s.minute:>6.2f}  {s.requests:>8}  {s.error_count:>6}  {rss}" + (
        f"   [{classes}]" if classes else ""
    )


def render_summary(report: SoakReport) -> str:
    cfg, last = report.config, report.samples[-1]
    seconds = max(last.elapsed_s, 1e-9)
    lines = [
        "",
        f"soak summary: {last.elapsed_s / 60:.2f} min, {cfg.clients} clients, {report.requests} requests "
        f"({report.requests / seconds:.1f}/s), {sum(report.errors.values())} errors",
    ]
    kinds: Counter[str] = Counter()
    for s in report.samples:
        kinds.update(s.kinds)
    lines.append("  requests by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    lines += [f"  errors {cls}: {n}" for cls, n in report.errors.most_common()]
    start = next(s for s in report.samples if s.elapsed_s == report.window_start_s)
    lines.append(
        f"  RSS growth from minute {start.minute:.2f} to {last.minute:.2f} (limit {cfg.tolerance:.0%}):"
    )
    for role, growth in sorted(report.growth.items()):
        peak = max((s.rss_mb[role] for s in report.samples if not math.isnan(s.rss_mb[role])), default=0.0)
        lines.append(
            f"    {role:<24} {start.rss_mb[role]:8.1f} -> {last.rss_mb[role]:8.1f} MB  {growth:+7.2%}"
            f"  peak {peak:8.1f}  {_role_verdict(growth, cfg.tolerance)}"
        )
    verdict = "PASS" if report.ok else "FAIL"
    lines.append(
        f"verdict: {verdict} (RSS flat: {'yes' if report.rss_flat else 'no'}; "
        f"errors: {sum(report.errors.values())})"
    )
    return "\n".join(lines)


def _role_verdict(growth: float, tolerance: float) -> str:
    if math.isnan(growth):
        return "GONE (the process exited)"
    return "ok" if growth <= tolerance else "GROWS"


def write_series(path: Path, samples: Sequence[Sample]) -> None:
    roles = list(samples[0].rss_mb)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["minute", "elapsed_s", "requests", "errors", "error_classes", *(f"{r} rss_mb" for r in roles)]
        )
        for s in samples:
            classes = "; ".join(f"{k}={v}" for k, v in sorted(s.errors.items()))
            rss = [f"{s.rss_mb[r]:.1f}" for r in roles]
            w.writerow([f"{s.minute:.2f}", f"{s.elapsed_s:.1f}", s.requests, s.error_count, classes, *rss])


def report_json(report: SoakReport) -> dict[str, Any]:
    config = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(report.config).items()}
    return {
        "config": config,
        "roles": list(report.roles),
        "samples": [{"minute": round(s.minute, 3), **asdict(s)} for s in report.samples],
        "window_start_s": report.window_start_s,
        "rss_growth": report.growth,
        "requests": report.requests,
        "errors": dict(report.errors),
        "rss_flat": report.rss_flat,
        "ok": report.ok,
    }


def write_files(report: SoakReport) -> None:
    run_dir = report.config.run_dir
    write_series(run_dir / "soak.csv", report.samples)
    text = json.dumps(_nan_to_none(report_json(report)), indent=2, allow_nan=False)
    (run_dir / "soak.json").write_text(text + "\n")


def _nan_to_none(value: Any) -> Any:
    """A role that died has NaN RSS: null in JSON, which has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ncp.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--interval", type=float, default=60.0, help="sampling interval, seconds")
    parser.add_argument("--topology", default="default", help="default, three-country, wan or a .toml file")
    parser.add_argument("--flow-share", type=float, default=0.25, help="share of full three-step flows")
    parser.add_argument("--tolerance", type=float, default=0.05, help="allowed RSS growth over the window")
    parser.add_argument("--run-dir", help="default: run/soak-<timestamp>")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.clients < 1 or args.interval <= 0:
        parser.error("--minutes and --interval must be positive, --clients at least 1")
    run_dir = Path(args.run_dir or f"run/soak-{datetime.now():%Y%m%d-%H%M%S}")
    topology = args.topology if args.topology.endswith(".toml") else f"builtin:{args.topology}"
    config = SoakConfig(
        run_dir, args.minutes, args.clients, args.interval, topology, args.flow_share, args.tolerance
    )
    return 0 if run_soak(config).ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
