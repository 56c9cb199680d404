"""Locust event listeners of the XC-WADO load tests (imports ``locust``: load only inside Locust).

- command-line options, each with an ``XCWADO_*`` environment variable (locust
  ``examples/add_command_line_argument.py``);
- one :class:`Runtime` per Locust process (state file, custom metrics, CPU meter), attached to
  the ``Environment``, never a module global;
- custom metrics travel from workers to the master inside ``report_to_master`` and are written
  by the master (or the local runner) to ``<csv prefix>_xcwado.json`` at exit;
- each load-generating process can keep a *ledger* of the requests it fired, independent of
  Locust's stats pipeline, to check that the master's totals are exactly the workers' sums;
- thresholds set a non-zero exit code in a ``quitting`` listener (locust-plugins ``do_checks``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
from checks import Thresholds
from locust import events
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.event import EventHook
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import CSV_STATS_INTERVAL_SEC
from metrics import CpuMeter, Metrics
from state import FederationState, StateError, load_state

__all__ = ["Runtime"]

log = logging.getLogger("xcwado")
_ATTR = "_xcwado_runtime"
THRESHOLD_EXIT_CODE = 3  # as locust-plugins: distinguishes a breached threshold from a crash


@dataclass
class Runtime:
    """Everything a Locust process of this load test shares between its users and listeners."""

    environment: Environment
    role: str
    metrics: Metrics = field(default_factory=Metrics)
    ledger: dict[str, list[int]] = field(default_factory=dict)  # "METHOD name" -> [requests, failures]
    cpu: CpuMeter | None = None
    state: FederationState | None = None
    started: float = field(default_factory=time.time)
    stopped: float | None = None  # when the users stopped (test_stop), for rates over the test's time
    users_started: int = 0  # seeds each user's choices reproducibly
    _sampler: Any = None

    @classmethod
    def of(cls, environment: Environment) -> Runtime:
        runtime: Runtime | None = getattr(environment, _ATTR, None)
        if runtime is None:
            raise RuntimeError("the xcwado hooks are not loaded (use -f loadtests/locustfile.py)")
        return runtime

    def option(self, name: str, default: Any = None) -> Any:
        return getattr(self.environment.parsed_options, name, default)

    def federation(self) -> FederationState:
        """The state file, read once per process (workers read it when the master's options arrive)."""
        if self.state is None:
            self.state = load_state(self.option("state"))
        return self.state

    @property
    def label(self) -> str:
        runner = self.environment.runner
        if isinstance(runner, WorkerRunner):
            return f"worker-{runner.worker_index}"
        return self.role

    def next_user(self) -> int:
        self.users_started += 1
        return self.users_started

    def restart(self) -> None:
        self.metrics.reset()
        self.users_started = 0
        self.ledger.clear()
        self.started = time.time()
        self.stopped = None
        if self._sampler is not None:
            self._sampler.kill(block=False)
        self.cpu = CpuMeter(self.label, self.role)
        self._sampler = gevent.spawn(_sample_forever, self.cpu)

    def cpu_record(self) -> dict[str, dict[str, Any]]:
        return {self.cpu.label: self.cpu.record()} if self.cpu else {}


def _on(hook: EventHook, listener: Callable[..., None]) -> None:
    hook.add_listener(listener)  # type: ignore[no-untyped-call]  # locust's EventHook is untyped


def _sample_forever(cpu: CpuMeter) -> None:
    while True:
        cpu.sample()
        gevent.sleep(1.0)


def _options(parser: LocustArgumentParser) -> None:
    group = parser.add_argument_group("xcwado", "XC-WADO federation under test")
    group.add_argument("--state", env_var="XCWADO_STATE", default=None, help="state file of `xcwado up`")
    group.add_argument(
        "--treatment",
        env_var="XCWADO_TREATMENT",
        default=None,
        help="country of treatment (B); default: per patient, the first country that is not theirs",
    )
    group.add_argument(
        "--load-profile",
        env_var="XCWADO_PROFILE",
        default="steady",
        choices=["ramp", "steady", "spike", "soak"],
        help="load profile of shapes.py",
    )
    group.add_argument(
        "--think-time",
        env_var="XCWADO_THINK_TIME",
        type=float,
        default=0.5,
        help="mean pause between tasks of a user, in seconds (uniform 0..2x)",
    )
    group.add_argument(
        "--seed", env_var="XCWADO_SEED", type=int, default=1, help="seed of the users' choices"
    )
    group.add_argument(
        "--check-fail-ratio",
        env_var="XCWADO_CHECK_FAIL_RATIO",
        type=float,
        default=None,
        help=f"exit {THRESHOLD_EXIT_CODE} when the failure ratio exceeds this (0..1)",
    )
    group.add_argument(
        "--check-p95-ms",
        env_var="XCWADO_CHECK_P95_MS",
        type=float,
        default=None,
        help=f"exit {THRESHOLD_EXIT_CODE} when the aggregated p95 exceeds this (ms)",
    )
    group.add_argument(
        "--xcwado-metrics",
        env_var="XCWADO_METRICS",
        default=None,
        help="custom metrics JSON (default <csv prefix>_xcwado.json)",
    )
    group.add_argument(
        "--xcwado-ledger",
        env_var="XCWADO_LEDGER",
        default=None,
        help="folder where each load-generating process writes the requests it fired",
    )


_on(events.init_command_line_parser, _options)


def _init(environment: Environment, **_: Any) -> None:
    role = _role(environment.runner)
    runtime = Runtime(environment, role)
    setattr(environment, _ATTR, runtime)
    if role != "worker":  # fail fast, before any user starts; workers get --state from the master
        try:
            runtime.federation()
        except StateError as exc:
            sys.stderr.write(f"xcwado: {exc}\n")
            sys.exit(2)
    _listen(runtime)


_on(events.init, _init)


def _role(runner: object) -> str:
    if isinstance(runner, MasterRunner):
        return "master"
    return "worker" if isinstance(runner, WorkerRunner) else "local"


def _listen(runtime: Runtime) -> None:
    """Listeners bound to this process's runtime (report_to_master and worker_report carry no environment)."""
    ev = runtime.environment.events

    def _test_start(**_: Any) -> None:
        runtime.restart()

    _on(ev.test_start, _test_start)

    def _test_stop(**_: Any) -> None:
        runtime.stopped = time.time()

    _on(ev.test_stop, _test_stop)

    def _count(request_type: str, name: str, exception: BaseException | None = None, **_: Any) -> None:
        entry = runtime.ledger.setdefault(f"{request_type} {name}", [0, 0])
        entry[0] += 1
        entry[1] += exception is not None

    _on(ev.request, _count)

    def _report(client_id: str, data: dict[str, Any]) -> None:
        drained = runtime.metrics.drain()
        drained["processes"] = runtime.cpu_record()
        data["xcwado"] = drained

    _on(ev.report_to_master, _report)

    def _worker_report(client_id: str, data: dict[str, Any]) -> None:
        if "xcwado" in data:
            runtime.metrics.merge(data["xcwado"])

    _on(ev.worker_report, _worker_report)

    def _quitting(**_: Any) -> None:
        if runtime.role != "master":
            _write_ledger(runtime)
        if runtime.role == "worker":
            return
        if runtime.option("csv_prefix"):
            # Locust rewrites <prefix>_stats.csv every CSV_STATS_INTERVAL_SEC and closes it without a
            # last write: wait one full cycle so the file holds the workers' final reports too.
            gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.3)
        _write_metrics(runtime)
        _apply_thresholds(runtime)

    _on(ev.quitting, _quitting)


def _write_ledger(runtime: Runtime) -> None:
    folder = runtime.option("xcwado_ledger")
    if not folder:
        return
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    body = {
        "label": runtime.label,
        "pid": os.getpid(),
        "requests": {k: v[0] for k, v in sorted(runtime.ledger.items())},
        "failures": {k: v[1] for k, v in sorted(runtime.ledger.items())},
    }
    (path / f"{runtime.label}-{os.getpid()}.json").write_text(json.dumps(body, indent=2))


def _write_metrics(runtime: Runtime) -> None:
    target = runtime.option("xcwado_metrics")
    prefix = runtime.option("csv_prefix")
    if not target and prefix:
        target = f"{prefix}_xcwado.json"
    if not target:
        return
    runtime.metrics.processes.update(runtime.cpu_record())
    body = {
        "started": runtime.started,
        "stopped": runtime.stopped or time.time(),
        "profile": runtime.option("load_profile"),
        "treatment": runtime.option("treatment"),
        "metrics": runtime.metrics.to_json(),
    }
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    Path(target).write_text(json.dumps(body, indent=1))


def _apply_thresholds(runtime: Runtime) -> None:
    max_ratio, max_p95 = runtime.option("check_fail_ratio"), runtime.option("check_p95_ms")
    if max_ratio is None and max_p95 is None:
        return
    total = runtime.environment.stats.total
    checks = Thresholds(max_ratio, max_p95).evaluate(
        total.num_requests, total.num_failures, total.get_response_time_percentile(0.95) or None
    )
    for check in checks:
        log.log(
            logging.INFO if check.ok else logging.ERROR,
            "check %s: %s (%s)",
            check.name,
            "ok" if check.ok else "FAILED",
            check.detail,
        )
    if not all(c.ok for c in checks):
        runtime.environment.process_exit_code = THRESHOLD_EXIT_CODE
