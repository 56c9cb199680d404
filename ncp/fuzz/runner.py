"""Run the fuzzer against a seeded federation: generate, send, judge, tally.

Case ``i`` of seed ``s`` is drawn from ``random.Random(f"{s}:{i}")`` alone, so any one request can be
made again without the others (``python -m ncp.fuzz --seed s --case i``). Requests go a few at a time
(the roles are processes: both cores work); when a role logs a traceback, each request of that batch is
sent again alone to find the one that did it.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ncp.federation import Federation
from ncp.fuzz.corpus import AFFILIATION, FAMILIES, TREATMENT, Corpus, build_corpus
from ncp.fuzz.credentials import Credentials
from ncp.fuzz.mutate import Palette, mutate, unmutated
from ncp.fuzz.oracle import LogWatch, Problem, judge, snapshot, snapshot_changes
from ncp.fuzz.wire import Listener, RawRequest, RawResponse, exchange
from ncp.publish import seed_federation

__all__ = ["Case", "Finding", "Fuzzer", "Report", "seeded_federation", "stalled_body_probes", "table"]

BODY_BOUND_S = 10.0  # a stalled request body is answered within this
_LOG_LAG_S = 0.3
_TIMEOUT_S = 15.0  # for one answer; a retrieval through both gateways takes well under a second
_SILENT_LIMIT = 4  # unanswered requests in a row (twice that while fuzzing) that end the run
_STOPPED = "the federation stopped answering"


@dataclass(frozen=True)
class Case:
    seed: int
    index: int
    family: str
    listener: Listener
    request: RawRequest
    auth: str
    notes: tuple[str, ...]

    def reproduction(self, limit: int = 300) -> str:
        """One line: method, URL, headers and body as sent (credentials named, not copied)."""
        r = self.request
        url = _clip(self.listener.origin + r.target.decode("latin-1"), limit)
        headers = {k.decode("latin-1"): _clip(v.decode("latin-1"), 80) for k, v in r.headers}
        if self.auth:
            headers["(auth)"] = self.auth
        tls = " (mTLS as AT's NCP)" if self.listener.tls else ""
        body = _clip(r.body.decode("latin-1"), limit)
        which = f"--seed {self.seed} --case {self.index}" if self.index >= 0 else "a template, unmutated"
        return f"{r.method.decode('latin-1')} {url}{tls} headers={headers} body={body!r}  [{which}]"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"


@dataclass
class Tally:
    requests: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    parser: int = 0
    failures: int = 0


@dataclass(frozen=True)
class Finding:
    case: Case | None  # None: found after the run (storage, logs, health)
    problem: Problem

    @property
    def key(self) -> tuple[str, str]:
        return (self.case.family if self.case else "after the run", self.problem.kind)


@dataclass
class Report:
    seed: int
    tallies: dict[str, Tally] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    probes: list[tuple[str, str, bool]] = field(default_factory=list)  # (listener, what happened, ok)
    elapsed: float = 0.0
    digest: str = ""  # SHA-256 of every request sent, in order: a case made again must be the same

    @property
    def ok(self) -> bool:
        return not self.findings and all(ok for _, _, ok in self.probes)

    def of(self, category: str) -> list[Finding]:
        return [f for f in self.findings if f.problem.category == category]

    def groups(self) -> dict[tuple[str, str], list[Finding]]:
        """Findings by (family, kind of problem), in the order first seen."""
        out: dict[tuple[str, str], list[Finding]] = {}
        for finding in self.findings:
            out.setdefault(finding.key, []).append(finding)
        return out

    def finding_lines(self) -> list[str]:
        """One entry per group: how many, what, and the first case as a one-line reproduction."""
        lines = []
        for (family, kind), found in self.groups().items():
            first = found[0]
            lines.append(f"[{family}] {kind} x{len(found)}: {first.problem.detail[:160]}")
            if first.case is not None:
                lines.append(f"    {first.case.reproduction()}")
        return lines

    def count(self, case: Case, verdict_outcome: str, parser: bool, failed: bool) -> None:
        tally = self.tallies.setdefault(case.family, Tally())
        tally.requests += 1
        tally.outcomes[verdict_outcome] = tally.outcomes.get(verdict_outcome, 0) + 1
        tally.parser += parser
        tally.failures += failed


@contextmanager
def seeded_federation(run_dir: Path, source: str = "builtin:default") -> Iterator[Corpus]:
    """A secure federation, roles as processes (each logs to ``run_dir/logs``), seeded, with its corpus."""
    with Federation(source, run_dir, mode="process", secure=True) as fed:
        published = asyncio.run(seed_federation(fed.topology, fed.plan.endpoints))
        yield build_corpus(fed, published)


class Fuzzer:
    def __init__(self, corpus: Corpus, seed: int) -> None:
        self.corpus = corpus
        self.seed = seed
        self.credentials = Credentials(corpus.pki, TREATMENT, AFFILIATION, corpus.patients)
        self.families = [f for f in FAMILIES if corpus.templates.get(f)]
        self.palette = _palette(corpus)
        self._lock = threading.Lock()

    def case(self, index: int) -> Case:
        rng = random.Random(f"{self.seed}:{index}")
        family = rng.choice(self.families)
        template = rng.choice(self.corpus.templates[family])
        listener = self.corpus.listeners[template.listener]
        draft = mutate(rng, template, f"{listener.host}:{listener.port}", self.palette)
        return Case(self.seed, index, family, listener, draft.render(), draft.auth, tuple(draft.notes))

    def controls(self) -> list[Finding]:
        """Every template sent as it stands must be answered 2xx, or the fuzzer starts from requests
        that never reach the code it means to exercise."""
        refused: list[Finding] = []
        silent = 0
        for family, templates in self.corpus.templates.items():
            for k, template in enumerate(templates):
                listener = self.corpus.listeners[template.listener]
                draft = unmutated(random.Random(k), template, f"{listener.host}:{listener.port}")
                case = Case(self.seed, -1, family, listener, draft.render(), draft.auth, ("as it stands",))
                response = self.send(case)
                silent = silent + 1 if response.status == 0 else 0
                if silent >= _SILENT_LIMIT:
                    return [*refused, _stopped(case)]
                if not 200 <= response.status < 300:
                    detail = f"{response.status or response.error}: {response.body[:100]!r}"
                    refused.append(Finding(case, Problem("control", "a valid request refused", detail)))
        return refused

    def send(self, case: Case) -> RawResponse:
        with self._lock:  # minting and the replay bookkeeping are not thread-safe
            extra = tuple(self.credentials.headers(case.auth))
        request = RawRequest(
            case.request.method, case.request.target, (*case.request.headers, *extra), case.request.body
        )
        return exchange(case.listener, request, timeout=_TIMEOUT_S)

    def run(
        self, requests: int, *, workers: int = 4, progress: Callable[[int], None] | None = None
    ) -> Report:
        """``workers`` requests at a time (the roles are separate processes: two cores both work)."""
        report = Report(self.seed)
        started = time.monotonic()
        logs = LogWatch(self.corpus.log_dir)
        report.findings += self.controls()  # before the snapshot: they store (the same bytes) again
        before = snapshot(self.corpus.pacs_dirs)
        if not any(f.problem.kind == _STOPPED for f in report.findings):
            self._cases(requests, workers, report, logs, progress)
        report.probes = stalled_body_probes(self.corpus, self.credentials)
        time.sleep(_LOG_LAG_S)  # a traceback written just after the last answer
        report.findings += [Finding(None, t) for t in logs.tracebacks()]
        changes = snapshot_changes(before, snapshot(self.corpus.pacs_dirs))
        report.findings += [Finding(None, Problem("storage", "PACS storage changed", c)) for c in changes]
        report.findings += [
            Finding(None, Problem("health", "role not healthy", u)) for u in _unhealthy(self.corpus)
        ]
        report.elapsed = time.monotonic() - started
        return report

    def _cases(
        self,
        requests: int,
        workers: int,
        report: Report,
        logs: LogWatch,
        progress: Callable[[int], None] | None,
    ) -> None:
        """Send and judge the cases, stopping early if the federation stops answering altogether."""
        silent, digest = 0, hashlib.sha256()
        with ThreadPoolExecutor(workers) as pool:
            for start in range(0, requests, workers):
                cases = [self.case(i) for i in range(start, min(start + workers, requests))]
                for case in cases:
                    digest.update(case.request.encode())
                report.digest = digest.hexdigest()
                responses = list(pool.map(self.send, cases))
                self._batch(cases, responses, report, logs)
                silent = silent + len(cases) if all(r.status == 0 for r in responses) else 0
                if silent >= 2 * _SILENT_LIMIT:
                    report.findings.append(_stopped(cases[-1]))
                    return
                if progress is not None:
                    progress(start + len(cases))

    def _batch(self, cases: list[Case], responses: list[RawResponse], report: Report, logs: LogWatch) -> None:
        verdicts = [
            judge(c.listener.name, c.request.method, c.request.target, r)
            for c, r in zip(cases, responses, strict=True)
        ]
        if any(v.outcome in ("5xx", "none") for v in verdicts):
            time.sleep(_LOG_LAG_S)  # a 500 is sent before uvicorn logs its traceback
        blamed = self._blame(cases, logs.tracebacks(), logs)
        for case, verdict in zip(cases, verdicts, strict=True):
            problems = [*verdict.problems, *blamed.get(case.index, [])]
            report.findings += [Finding(case, p) for p in problems]
            report.count(case, verdict.outcome, verdict.parser, bool(problems))

    def _blame(
        self, cases: list[Case], tracebacks: list[Problem], logs: LogWatch
    ) -> dict[int, list[Problem]]:
        """Which case of a batch wrote the tracebacks: each is sent again alone; if none does it again,
        the first case of the batch carries them (the reproduction line then names its batch)."""
        if not tracebacks or len(cases) == 1:
            return {cases[0].index: tracebacks} if tracebacks else {}
        blamed: dict[int, list[Problem]] = {}
        for case in cases:
            self.send(case)
            time.sleep(_LOG_LAG_S)
            if again := logs.tracebacks():
                blamed[case.index] = again
        batch = f" (in the batch of cases {cases[0].index}-{cases[-1].index})"
        return blamed or {cases[0].index: [Problem(t.category, t.kind, t.detail + batch) for t in tracebacks]}


def _stopped(case: Case) -> Finding:
    """Every request times out: the rest would only wait (a hung role), so the run ends here."""
    return Finding(case, Problem("status", _STOPPED, f"{_SILENT_LIMIT}+ requests in a row unanswered"))


def _palette(corpus: Corpus) -> Palette:
    urls = [url for ep in corpus.fed.plan.endpoints.countries.values() for url in ep.pacs.values()]
    return Palette(tuple(sorted(corpus.patients)), tuple(corpus.study_uids), tuple(urls))


def _unhealthy(corpus: Corpus) -> list[str]:
    bad = []
    with httpx.Client(timeout=5.0) as client:
        for url in corpus.fed.health_urls():
            try:
                if client.get(url).status_code != 200:
                    bad.append(url)
            except httpx.HTTPError:
                bad.append(url)
    return bad


# -- a request body that stops arriving ----------------------------------------------------------------
def stalled_body_probes(corpus: Corpus, credentials: Credentials) -> list[tuple[str, str, bool]]:
    """Per listener family, a request announcing 1000 body bytes and sending 10: it must be answered
    within BODY_BOUND_S, with 408 where the route reads its body (the border has no such route: it
    answers without reading, which is fine as long as it answers)."""
    probes = _probes(corpus, credentials)
    with ThreadPoolExecutor(len(probes)) as pool:
        answers = list(pool.map(lambda p: exchange(p[1], p[2], timeout=BODY_BOUND_S + 5), probes))
    out = []
    for (name, listener, request, wants_408), answer in zip(probes, answers, strict=True):
        in_time = answer.status and answer.elapsed <= BODY_BOUND_S
        shaped = not judge(listener.name, request.method, request.target, answer).problems
        ok = bool(in_time) and shaped and (answer.status == 408 if wants_408 else answer.status < 500)
        what = f"{answer.status or answer.error} after {answer.elapsed:.1f} s"
        out.append((f"{name} ({listener.name})", what, ok))
    return out


def _probes(corpus: Corpus, credentials: Credentials) -> list[tuple[str, Listener, RawRequest, bool]]:
    def stalled(
        listener: Listener, method: bytes, target: bytes, content_type: bytes, auth: str = ""
    ) -> RawRequest:
        headers = (
            (b"Host", f"{listener.host}:{listener.port}".encode()),
            (b"Content-Type", content_type),
            (b"Content-Length", b"1000"),
            *credentials.headers(auth),
        )
        return RawRequest(method, target, headers, b"0123456789")

    listeners = corpus.listeners
    gateway, border = listeners[f"{TREATMENT} gateway"], listeners[f"{AFFILIATION} border"]
    registry = next(v for k, v in listeners.items() if k.startswith(f"{AFFILIATION} registry"))
    pacs = next(v for k, v in listeners.items() if k.startswith(f"{AFFILIATION} pacs"))
    patient = next(iter(corpus.patients.values()))
    ident = f"/fhir/Patient?identifier=urn:oid:{patient.issuer}|{patient.id}".encode()
    form, fhir = b"application/x-www-form-urlencoded", b"application/fhir+json"
    multipart = b'multipart/related; type="application/dicom"; boundary=x'
    return [
        ("gateway IdP", gateway, stalled(gateway, b"POST", b"/idp/token", form), True),
        ("border ITI-78", border, stalled(border, b"GET", ident, fhir, "assert-hcp"), False),
        ("registry ITI-65", registry, stalled(registry, b"POST", b"/fhir", fhir), True),
        ("pacs STOW-RS", pacs, stalled(pacs, b"POST", b"/dicom-web/studies", multipart), True),
    ]


# -- the table -----------------------------------------------------------------------------------------
COLUMNS = ("requests", "2xx", "3xx", "4xx", "parser", "5xx", "none", "failures")


def table(report: Report) -> str:
    width = max(len(f) for f in [*report.tallies, "family"]) + 2
    lines = ["family".ljust(width) + "".join(c.rjust(10) for c in COLUMNS)]
    total = Tally()
    for family in [f for f in FAMILIES if f in report.tallies]:
        t = report.tallies[family]
        lines.append(family.ljust(width) + _row(t))
        total.requests += t.requests
        total.parser += t.parser
        total.failures += t.failures
        for k, v in t.outcomes.items():
            total.outcomes[k] = total.outcomes.get(k, 0) + v
    lines.append("total".ljust(width) + _row(total))
    for name, what, ok in report.probes:
        lines.append(f"stalled body: {name}: {what} {'ok' if ok else 'FAILED'}")
    return "\n".join(lines)


def _row(t: Tally) -> str:
    cells = [t.requests, *(t.outcomes.get(k, 0) for k in ("2xx", "3xx", "4xx")), t.parser]
    cells += [t.outcomes.get("5xx", 0), t.outcomes.get("none", 0), t.failures]
    return "".join(str(c).rjust(10) for c in cells)
