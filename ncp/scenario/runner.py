"""Load the scenario catalogue, start and seed one federation per (topology, encoding), run, report.

The catalogue lives in the repository's ``scenarios/`` folder (one module per group); each
module-level :class:`~ncp.scenario.model.Scenario` is collected, so there is no registry to mutate.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import logging
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import httpx
from rich.console import Console
from rich.text import Text

from ncp.app import load_source
from ncp.errors import NcpError, Unavailable
from ncp.federation import Federation
from ncp.publish import seed_federation
from ncp.scenario.context import ScenarioContext, Seeded, Target
from ncp.scenario.model import Outcome, Result, Scenario, ScenarioFailed, ScenarioSkipped
from ncp.scenario.reports import console_report, write_html, write_json, write_junit
from ncp.topology import Topology, nothing_listens, unreachable

__all__ = [
    "DEFAULT_DIR",
    "list_scenarios",
    "load_scenarios",
    "run_against",
    "run_scenarios",
    "run_selected",
    "select",
]

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "scenarios"
_PACKAGE = "xcwado_scenarios"


def load_scenarios(directory: Path = DEFAULT_DIR) -> list[Scenario]:
    """Every scenario of every module in ``directory``, sorted by ID; IDs must be unique."""
    found: dict[str, Scenario] = {}
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        for value in vars(_import(path)).values():
            if isinstance(value, Scenario):
                if value.id in found and found[value.id] is not value:
                    raise ValueError(f"scenario ID {value.id} defined twice")
                found[value.id] = value
    return [found[k] for k in sorted(found)]


def _import(path: Path) -> ModuleType:
    # the folder is part of the name: two catalogues with a module of the same name do not collide
    folder = hashlib.sha256(str(path.parent).encode()).hexdigest()[:12]
    name = f"{_PACKAGE}_{folder}.{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load scenarios from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and postponed annotations resolve through sys.modules
    spec.loader.exec_module(module)
    return module


def list_scenarios(directory: Path = DEFAULT_DIR) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(s.id, s.title, s.tags) for s in load_scenarios(directory)]


def select(
    scenarios: Sequence[Scenario], ids: Iterable[str] | None, tags: Iterable[str] | None
) -> list[Scenario]:
    """By ID (exact, or a prefix such as ``NG-``) and/or tag (any of them); unknown IDs are an error."""
    chosen = list(scenarios)
    if ids:
        wanted = [i.upper() for i in ids]
        unknown = [w for w in wanted if not any(s.id.startswith(w) for s in scenarios)]
        if unknown:
            raise ValueError(f"unknown scenario ID(s): {', '.join(unknown)}")
        chosen = [s for s in chosen if any(s.id.startswith(w) for w in wanted)]
    if tags:
        wanted_tags = set(tags)
        chosen = [s for s in chosen if wanted_tags & set(s.tags)]
    return chosen


def run_scenarios(
    ids: list[str] | None,
    tags: list[str] | None,
    topology: str,
    *,
    junit: Path | None,
    json_path: Path | None,
    html: Path | None,
    console: Console | None,
    directory: Path = DEFAULT_DIR,
    target: Path | None = None,
    role_log: Path | None = None,
) -> int:
    """Run the selection and write the reports. Exit status: 0 all passed (or skipped), 1 not, 2 usage.

    With ``target`` (a state file), nothing is started: the scenarios run against those systems. Else the
    roles started log to ``role_log`` (default: a file in the run's temporary folder), not the console."""
    console = console or Console()
    try:
        chosen = select(load_scenarios(directory), ids, tags)
    except ValueError as exc:
        console.print(Text(str(exc), style="red"), soft_wrap=True)  # one line, never markup
        return 2
    if not chosen:
        console.print("[red]no scenario matches the selection[/]")
        return 2
    try:
        results = (
            run_against(chosen, listening(Target.from_state(target), target), console)
            if target
            else run_selected(chosen, topology, console=console, role_log=role_log)
        )
    except NcpError as exc:
        console.print(Text(str(exc), style="red"), soft_wrap=True)  # one line, never markup
        return 2
    console_report(results, console)
    if junit:
        write_junit(results, junit)
    if json_path:
        write_json(results, json_path)
    if html:
        write_html(results, html, target=_described(results, target))
    return 0 if all(r.outcome in ("passed", "skipped") for r in results) else 1


def listening(target: Target, path: Path) -> Target:
    """The target, once something listens at every gateway and border it names: a stopped federation
    fails here, in a second, not as minutes of refused connections reported as failed scenarios."""
    down = unreachable(target.endpoints.entry_points())
    if down:
        raise Unavailable(f"target {path}: {nothing_listens(down)}")
    return target


def _described(results: Sequence[Result], target: Path | None) -> str:
    if target is not None:
        return f"systems of the state file {target}"
    started = sorted({r.topology for r in results if r.topology})
    return f"federations started for the run: {', '.join(started)}"


def run_selected(
    chosen: Sequence[Scenario],
    topology: str,
    *,
    console: Console | None = None,
    run_dir: Path | None = None,
    role_log: Path | None = None,
) -> list[Result]:
    """One seeded federation per (topology, encoding) group, the scenarios of the group run in order; a
    scenario naming the encoding its topology holds anyway shares that topology's federation."""
    groups: dict[tuple[str, str | None], list[Scenario]] = {}
    for sc in chosen:
        source = sc.topology or topology
        held = load_source(source).synth.manifest_encoding
        groups.setdefault((source, None if sc.encoding == held else sc.encoding), []).append(sc)
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="xcwado-scenarios-") as tmp:
        base = run_dir or Path(tmp)
        log = role_log or base / "roles.log"
        with _role_logs(log):
            for n, ((source, encoding), members) in enumerate(groups.items()):
                if console:
                    what = encoding or "topology's encoding"
                    console.print(f"[bold]{source}[/] ({what}): {len(members)} scenarios")
                for result in _run_group(source, encoding, members, base / f"group-{n}", console):
                    results[result.scenario.id] = result
        if console and role_log and log.exists() and log.stat().st_size:
            console.print(f"Logs of the roles (expected faults log tracebacks there): {log}", soft_wrap=True)
    return [results[s.id] for s in chosen]


@contextmanager
def _role_logs(path: Path) -> Iterator[None]:
    """The roles run in this process and log into it; an expected fault (a PACS down, a link cut) logs a
    traceback. While they run, every log record goes to ``path``: the console shows the run, not those."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [handler]
    try:
        yield
    finally:
        root.handlers = saved
        handler.close()


def run_against(chosen: Sequence[Scenario], target: Target, console: Console | None = None) -> list[Result]:
    """Run against systems already running. A scenario that needs its own topology or another manifest
    encoding than the target was seeded with is skipped, saying so."""
    seeded = Seeded(target, target.synthetic_data())
    encoding = target.topology.synth.manifest_encoding
    if console:
        console.print(f"[bold]target {target.source}[/] ({encoding}): {len(chosen)} scenarios")
    results = []
    for sc in chosen:
        reason = _unfit(sc, target.topology)
        result = Result(sc, "skipped", [], 0.0, reason, target.source) if reason else run_one(sc, seeded)
        if console:
            console.print(f"  {_MARK[result.outcome]} {sc.id} {sc.title} ({result.seconds:.1f} s)")
        results.append(result)
    return results


def _unfit(sc: Scenario, topology: Topology) -> str | None:
    """Why the scenario cannot run on systems that hold the topology's catalogue as seeded (None: it can)."""
    if sc.topology and load_source(sc.topology).name != topology.name:
        return f"needs the topology {sc.topology}"
    held = topology.synth.manifest_encoding
    if sc.encoding and sc.encoding != held:
        return f"needs {sc.encoding} manifests; the systems under test hold {held}"
    return None


def _run_group(
    source: str, encoding: str | None, members: list[Scenario], run_dir: Path, console: Console | None
) -> list[Result]:
    try:
        with Federation(source, run_dir, mode="thread", secure=True) as fed:
            asyncio.run(
                seed_federation(fed.topology, fed.plan.endpoints, encoding=encoding)  # type: ignore[arg-type]
            )
            seeded = Seeded.of(fed)
            under_test = any(c.external for c in fed.topology.countries.values())
            out = []
            for sc in members:
                reason = _unfit(sc, fed.topology) if under_test else None
                result = Result(sc, "skipped", [], 0.0, reason, source) if reason else run_one(sc, seeded)
                if console:
                    console.print(f"  {_MARK[result.outcome]} {sc.id} {sc.title} ({result.seconds:.1f} s)")
                out.append(result)
            return out
    except Exception as exc:  # the federation did not start or seed: every scenario of the group errs
        message = f"federation {source} could not start or be seeded: {type(exc).__name__}: {exc}"
        return [Result(sc, "error", [], 0.0, message, source) for sc in members]


_MARK = {
    "passed": "[green]PASS[/]",
    "failed": "[red]FAIL[/]",
    "error": "[red]ERROR[/]",
    "skipped": "[yellow]SKIP[/]",
}


def run_one(sc: Scenario, seeded: Seeded) -> Result:
    """Run one scenario; passed only when it made at least one check and every check held."""
    ctx = ScenarioContext(seeded)
    started = time.perf_counter()
    outcome: Outcome
    message = ""
    try:
        sc.run(ctx)
        checks = [c for s in ctx.steps for c in s.checks]
        failed = [c for c in checks if not c.ok]
        outcome = "passed" if checks and not failed else "failed"
        message = "; ".join(f"{c.name}: {c.detail}" for c in failed) or ("" if checks else "no check made")
    except ScenarioSkipped as exc:
        outcome, message = "skipped", str(exc)
    except (ScenarioFailed, NcpError, AssertionError, httpx.HTTPError) as exc:
        outcome, message = "failed", f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a bug in the scenario or an unexpected answer: reported, never raised
        outcome = "error"
        message = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}"
    finally:
        ctx.close()
    return Result(sc, outcome, ctx.steps, time.perf_counter() - started, message, seeded.target.source)
