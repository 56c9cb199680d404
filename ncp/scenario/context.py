"""What a scenario function works with: the seeded federation, consumers, steps and checks."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ncp.app import link_role_id, load_source
from ncp.consumer.client import ImagingConsumer, default_tls
from ncp.errors import InvalidTopology, NcpError
from ncp.federation import Federation
from ncp.link import FaultSpec
from ncp.model import PatientRecord, StudyRecord
from ncp.pacs import InstanceStore
from ncp.scenario.model import Check, Exchange, ScenarioFailed, ScenarioSkipped, Step
from ncp.state import FederationState
from ncp.synth import CountryData, synthesize
from ncp.topology import Endpoints, Topology

__all__ = ["ScenarioContext", "Seeded", "Target"]


@dataclass(frozen=True)
class Target:
    """What the scenarios run against: a federation this run started, or running systems described by
    a state file (docs/state-file.md) that hold the synthetic catalogue of the state's topology."""

    source: str
    topology: Topology
    endpoints: Endpoints
    secure: bool
    pki_dir: Path | None = None  # the federation's test PKI: lets scenarios forge expired/foreign tokens
    run_dir: Path | None = None  # the simulated federation's files: lets scenarios inject storage faults
    outage: Callable[[str], AbstractContextManager[None]] | None = None  # stops one role for a block
    link_fault: Callable[[str, FaultSpec], AbstractContextManager[None]] | None = None  # breaks a link

    @classmethod
    def of(cls, fed: Federation) -> Target:
        plan = fed.plan
        secure = plan.pki_dir is not None
        return cls(
            plan.source,
            fed.topology,
            plan.endpoints,
            secure,
            plan.pki_dir,
            plan.run_dir,
            outage=fed.role_down,
            link_fault=fed.link_fault if fed.mode == "thread" else None,
        )

    @classmethod
    def from_state(cls, path: Path) -> Target:
        """A state file as ``xcwado up`` writes it (docs/state-file.md); errors name the key at fault."""
        if not path.is_file():
            raise InvalidTopology(f"target {path}: no such file (a state file, as xcwado up writes it)")
        state = FederationState.from_path(path)
        return cls(
            source=state.topology,
            topology=load_source(state.topology),
            endpoints=state.endpoints(),
            secure=state.security.enabled,
            pki_dir=_existing(state.security.pki_dir),
            run_dir=_existing(state.run_dir),
        )

    def synthetic_data(self) -> dict[str, CountryData]:
        """The catalogue the target holds: synthesis is deterministic from the topology's seed."""
        return {
            code: synthesize(self.topology, code, retrieve_urls=self.endpoints[code].pacs)
            for code in self.topology.countries
        }


def _diagnostics(response: httpx.Response) -> str:
    """An error's OperationOutcome text, as evidence for the report."""
    if response.is_success or "json" not in response.headers.get("content-type", ""):
        return ""
    try:
        issues = response.json().get("issue", [])
    except ValueError:
        return ""
    return "; ".join(str(i.get("diagnostics") or i.get("code", "")) for i in issues if isinstance(i, dict))


def _existing(value: object) -> Path | None:
    return Path(str(value)) if value and Path(str(value)).is_dir() else None


@dataclass
class Seeded:
    """A running target and the synthetic catalogue it holds."""

    target: Target
    data: Mapping[str, CountryData]

    @classmethod
    def of(cls, fed: Federation) -> Seeded:
        target = Target.of(fed)
        return cls(target, target.synthetic_data())


class ScenarioContext:
    """One scenario's run: every request made through it is recorded in the current step."""

    def __init__(self, seeded: Seeded) -> None:
        self.seeded = seeded
        self.target = seeded.target
        self.topology = seeded.target.topology
        self.data = seeded.data
        self.steps: list[Step] = []
        self._consumers: list[ImagingConsumer] = []
        self._http = httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0), verify=default_tls())
        self._raw: list[Exchange] = []

    # -- the federation ---------------------------------------------------------------------------
    @property
    def countries(self) -> list[str]:
        return list(self.topology.countries)

    @property
    def source(self) -> str:
        """Country A (the patient's affiliation): the topology's first country."""
        return self.countries[0]

    @property
    def treatment(self) -> str:
        """Country B (where the patient is treated): the topology's second country."""
        return self.countries[1]

    def gateway(self, code: str) -> str:
        url = self.target.endpoints[code].gateway
        if not url:
            raise ScenarioSkipped(f"NCP-{code} is under test from outside and declares no consumer gateway")
        return url

    def hcid(self, code: str) -> str:
        return self.topology.country(code).home_community_id

    def studies(
        self, country: str, where: Callable[[StudyRecord], bool] = lambda s: True
    ) -> list[StudyRecord]:
        return [s for s in self.data[country].studies if where(s)]

    def study(self, country: str, where: Callable[[StudyRecord], bool], what: str) -> StudyRecord:
        """The first study matching, or the scenario is skipped: the catalogue cannot exercise it."""
        found = self.studies(country, where)
        if not found:
            raise ScenarioSkipped(f"no study of {country} {what}")
        return found[0]

    @contextmanager
    def lost_instance(self, study: StudyRecord) -> Iterator[str]:
        """A PACS that lost a file: the last instance of the study's first series is moved aside while
        the block runs, then put back (the simulated federation's embedded PACS only)."""
        series = study.series[0]
        country = self.topology.country(study.patient.country)
        pacs = country.pacs_by_rluid(series.retrieve_location_uid)
        if pacs is None or pacs.backend != "embedded" or self.target.run_dir is None:
            raise ScenarioSkipped(
                "only an embedded PACS of the simulated federation can be made to lose a file"
            )
        store = InstanceStore(self.target.run_dir / country.code / f"pacs-{pacs.id}")
        stored = store.instances(study.study_instance_uid, series.series_instance_uid)
        if not stored:
            raise ScenarioFailed(
                f"the PACS {pacs.id} holds no instance of series {series.series_instance_uid}"
            )
        path = store.path(stored[-1])
        aside = path.with_name(path.name + ".lost")
        path.rename(aside)
        try:
            yield stored[-1].sop_uid
        finally:
            aside.rename(path)

    @contextmanager
    def outage(self, role_id: str) -> Iterator[None]:
        """One role of the simulated federation (``FR/pacs/pacs-1``) down for the block, then back."""
        if self.target.outage is None:
            raise ScenarioSkipped(f"an outage of {role_id} can only be caused in the simulated federation")
        with self.target.outage(role_id):
            yield

    @contextmanager
    def link_fault(self, to: str, caller: str, fault: FaultSpec) -> Iterator[None]:
        """The emulated link carrying ``caller``'s requests to ``to`` broken for the block, then mended."""
        role_id = link_role_id(to, caller)
        if self.target.link_fault is None:
            raise ScenarioSkipped(f"the link {role_id} can only be broken in the simulated federation")
        with ExitStack() as stack:
            try:
                stack.enter_context(self.target.link_fault(role_id, fault))
            except KeyError as exc:
                raise ScenarioSkipped(f"no relay on {role_id}: the topology must shape the link") from exc
            yield

    # -- consumers and raw requests --------------------------------------------------------------
    def consumer(self, country: str, patient: PatientRecord | None = None, **kw: Any) -> ImagingConsumer:
        """A consumer at ``country``'s gateway; with ``patient``: authenticated, identified, in context."""
        consumer = ImagingConsumer(self.gateway(country), **kw)
        self._consumers.append(consumer)
        if patient is not None:
            with self.step(f"identify patient {patient.id} at NCP-{country}"):
                if self.target.secure:
                    consumer.authenticate()
                consumer.identify(patient.issuer, patient.id)
                if self.target.secure:
                    consumer.open_treatment_context(patient.issuer, patient.id)
        return consumer

    def http(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        params: Sequence[tuple[str, str]] | dict[str, str] | None = None,
        data: dict[str, str] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        """A raw request (negative paths), recorded like the consumer's."""
        started = time.perf_counter()
        pairs = list(params.items()) if isinstance(params, dict) else list(params or [])
        query = httpx.QueryParams(tuple(pairs))
        response = self._http.request(method, url, headers=headers, params=query, data=data, json=json)
        detail = response.headers.get("warning", "") or _diagnostics(response)
        self._raw.append(
            Exchange(
                method,
                str(response.url),
                response.status_code,
                time.perf_counter() - started,
                len(response.content),
                detail,
            )
        )
        return response

    def cookie(self, name: str) -> str | None:
        """A cookie the raw client holds (a portal session, for the replay scenario)."""
        return self._http.cookies.get(name)

    # -- steps and checks -----------------------------------------------------------------------
    @contextmanager
    def step(self, name: str) -> Iterator[Step]:
        """Record a step; a failing request or precondition inside it ends the scenario."""
        step = Step(name)
        self.steps.append(step)
        before = self._counts()
        started = time.perf_counter()
        try:
            yield step
        except (NcpError, ScenarioFailed, httpx.HTTPError) as exc:
            step.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            step.seconds = time.perf_counter() - started
            step.exchanges = self._since(before)

    def _counts(self) -> tuple[dict[int, int], int]:
        return {id(c): len(c.log) for c in self._consumers}, len(self._raw)

    def _since(self, before: tuple[dict[int, int], int]) -> list[Exchange]:
        consumers, raw = before
        out = [
            Exchange(x.method, x.url, x.status, x.seconds, x.bytes, x.detail)
            for c in self._consumers
            for x in c.log[consumers.get(id(c), 0) :]
        ]
        return out + self._raw[raw:]

    def check(self, name: str, ok: bool, detail: str = "", *, mcwg: Iterable[str] = ()) -> bool:
        """Record a verdict in the current step; the scenario goes on either way."""
        if not self.steps:
            self.steps.append(Step("checks"))
        step = self.steps[-1]
        step.checks.append(Check(name, bool(ok), detail, step.name, tuple(mcwg)))
        return bool(ok)

    def require(self, ok: bool, message: str) -> None:
        """A precondition of what follows: stop the scenario as failed when it does not hold."""
        if not ok:
            self.check(message, False)
            raise ScenarioFailed(message)

    def close(self) -> None:
        for consumer in self._consumers:
            consumer.close()
        self._http.close()
