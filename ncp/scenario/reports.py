"""Conformance reports of a run: console table, JUnit XML, JSON and one self-contained HTML file."""

from __future__ import annotations

import html
import json
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table

from ncp.scenario.mcwg import Evidence, assess
from ncp.scenario.model import Result, Step

__all__ = ["console_report", "report_json", "write_html", "write_json", "write_junit"]

_STYLE = {"passed": "green", "failed": "red", "error": "red", "skipped": "yellow"}


def console_report(results: Sequence[Result], console: Console) -> None:
    table = Table(title="Scenarios")
    for col in ("id", "title", "outcome", "steps", "s", "message"):
        table.add_column(col, overflow="fold")
    for r in results:
        style = _STYLE[r.outcome]
        table.add_row(
            r.scenario.id,
            r.scenario.title,
            f"[{style}]{r.outcome.upper()}[/]",
            str(len(r.steps)),
            f"{r.seconds:.2f}",
            r.message.splitlines()[0] if r.message else "",
        )
    console.print(table)
    dash = Table(title="MCWG checklist")
    for col in ("item", "recommendation", "verdict", "evidence"):
        dash.add_column(col, overflow="fold")
    for a in assess(results):
        colour = {"supported": "green", "not supported": "red", "not tested": "yellow"}[a.verdict]
        evidence = ", ".join(sorted({e.scenario for e in a.evidence}))
        dash.add_row(a.item, a.text, f"[{colour}]{a.verdict}[/]", evidence)
    console.print(dash)
    counts = Counter(r.outcome for r in results)
    console.print(", ".join(f"{n} {k}" for k, n in sorted(counts.items())))


# -- JSON ------------------------------------------------------------------------------------------
def _step_json(step: Step) -> dict[str, Any]:
    return {
        "name": step.name,
        "ok": step.ok,
        "status": step.status,
        "seconds": round(step.seconds, 4),
        "error": step.error,
        "requests": [
            {
                "method": x.method,
                "url": x.url,
                "status": x.status,
                "seconds": round(x.seconds, 4),
                "bytes": x.bytes,
                "detail": x.detail,
            }
            for x in step.exchanges
        ],
        "checks": [
            {"name": c.name, "ok": c.ok, "detail": c.detail, "mcwg": list(c.mcwg)} for c in step.checks
        ],
    }


def report_json(results: Sequence[Result]) -> dict[str, Any]:
    return {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "summary": dict(Counter(r.outcome for r in results)),
        "scenarios": [
            {
                "id": r.scenario.id,
                "title": r.scenario.title,
                "tags": list(r.scenario.tags),
                "mcwg": list(r.scenario.mcwg),
                "transactions": list(r.scenario.transactions),
                "topology": r.topology,
                "encoding": r.scenario.encoding,
                "outcome": r.outcome,
                "seconds": round(r.seconds, 4),
                "message": r.message,
                "steps": [_step_json(s) for s in r.steps],
            }
            for r in results
        ],
        "mcwg": [
            {
                "item": a.item,
                "text": a.text,
                "verdict": a.verdict,
                "evidence": [
                    {"scenario": e.scenario, "step": e.step, "check": e.check, "ok": e.ok} for e in a.evidence
                ],
            }
            for a in assess(results)
        ],
    }


def write_json(results: Sequence[Result], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report_json(results), indent=2))


# -- JUnit XML -------------------------------------------------------------------------------------
def write_junit(results: Sequence[Result], path: Path) -> None:
    """One testsuite, one testcase per scenario (the common JUnit schema CI servers read)."""
    counts = Counter(r.outcome for r in results)
    suite = ET.Element(
        "testsuite",
        name="xcwado-scenarios",
        tests=str(len(results)),
        failures=str(counts["failed"]),
        errors=str(counts["error"]),
        skipped=str(counts["skipped"]),
        time=f"{sum(r.seconds for r in results):.3f}",
    )
    for r in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"scenarios.{r.scenario.group or 'scenario'}",
            name=f"{r.scenario.id} {r.scenario.title}",
            time=f"{r.seconds:.3f}",
        )
        if r.outcome in ("failed", "error"):
            tag = "failure" if r.outcome == "failed" else "error"
            first = r.message.splitlines()[0] if r.message else r.outcome
            ET.SubElement(case, tag, message=first).text = r.message
        elif r.outcome == "skipped":
            ET.SubElement(case, "skipped", message=r.message)
        ET.SubElement(case, "system-out").text = _steps_text(r)
    root = ET.Element("testsuites")
    root.append(suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _steps_text(r: Result) -> str:
    lines = []
    for s in r.steps:
        lines.append(f"[{'ok' if s.ok else 'FAIL'}] {s.name} ({s.seconds * 1000:.0f} ms)")
        lines += [f"    {x.method} {x.url} -> {x.status} {x.detail}".rstrip() for x in s.exchanges]
        lines += [f"    {'PASS' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in s.checks]
        if s.error:
            lines.append(f"    error: {s.error}")
    return "\n".join(lines)


# -- HTML ------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;overflow-wrap:break-word}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .5em;
vertical-align:top;text-align:left;font-size:.9em}th{background:#f2f2f2}
.passed,.supported{color:#176d17;font-weight:600}.failed,.error,.not-supported{color:#b00;font-weight:600}
.skipped,.not-tested{color:#a66b00;font-weight:600}td.wrap{overflow-wrap:anywhere}.none{color:#888}
code,pre{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:.9em}
code{word-break:break-all}pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f7f7f7;padding:.5em}
details{margin:.3em 0 .8em}summary{cursor:pointer}td details{margin:0}.n{color:#555;font-weight:600}
table.dash td:nth-child(2){max-width:22em}ul.ev{margin:.2em 0;padding-left:1.2em}td.count{white-space:nowrap}
"""
_T = TypeVar("_T", bound=Hashable)
_OUTCOMES = ("passed", "failed", "error", "skipped")
_VERDICTS = ("supported", "not supported", "not tested")


def _e(value: object) -> str:
    return html.escape(str(value))


def _tally(counts: Counter[str], keys: Sequence[str]) -> str:
    return ", ".join(
        f"<span class='{k.replace(' ', '-') if counts[k] else 'none'}'>{counts[k]} {_e(k)}</span>"
        for k in keys
    )


def render_html(results: Sequence[Result], *, target: str = "") -> str:
    verdicts: Counter[str] = Counter(a.verdict for a in assess(results))
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>XC-WADO testbed conformance report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>XC-WADO testbed conformance report</h1>",
        "<table class='totals'>",
        f"<tr><th>target</th><td>{_e(target or 'not recorded')}</td></tr>",
        f"<tr><th>scenarios</th><td>{len(results)}: {_tally(Counter(r.outcome for r in results), _OUTCOMES)}"
        "</td></tr>",
        f"<tr><th>MCWG items</th><td>{sum(verdicts.values())}: {_tally(verdicts, _VERDICTS)}</td></tr>",
        f"<tr><th>generated</th><td>{_e(datetime.now(UTC).isoformat(timespec='seconds'))}</td></tr>",
        "</table>",
        _dashboard(results),
        _summary(results),
        "<h2>Scenarios, step by step</h2>",
        *(_scenario(r) for r in results),
        "</body></html>",
    ]
    return "\n".join(parts)


def _collapsed(lines: Iterable[_T]) -> list[tuple[_T, int]]:
    """Identical lines once each, in first-seen order, with how often they occurred."""
    return list(Counter(lines).items())


def _listed(lines: Iterable[str]) -> str:
    items = "".join(
        f"<li>{line}{f' <span class=n>×{n}</span>' if n > 1 else ''}</li>" for line, n in _collapsed(lines)
    )
    return f"<ul class='ev'>{items}</ul>"


def _dashboard(results: Sequence[Result]) -> str:
    """One row per item: verdict, check counts and scenarios at a glance; failing evidence shown, the
    passing evidence folded (a full run gives some items dozens of lines)."""
    rows = []
    for a in assess(results):
        passed = [e for e in a.evidence if e.ok]
        failed = [e for e in a.evidence if not e.ok]
        scenarios = sorted({e.scenario for e in a.evidence})
        links = ", ".join(f"<a href='#{_e(s)}'>{_e(s)}</a>" for s in scenarios) or "-"
        shown = _listed(f"✘ {_evidence(e)}" for e in failed) if failed else ""
        folded = (
            f"<details><summary>{len(passed)} passing checks</summary>"
            f"{_listed(f'✔ {_evidence(e)}' for e in passed)}</details>"
            if passed
            else ""
        )
        rows.append(
            f"<tr><td>{_e(a.item)}</td><td>{_e(a.text)}</td>"
            f"<td class='{a.verdict.replace(' ', '-')}'>{_e(a.verdict)}</td>"
            f"<td class='count'>{len(passed)} ✔ {len(failed)} ✘</td><td>{links}</td>"
            f"<td class='wrap'>{shown}{folded}</td></tr>"
        )
    return (
        "<h2 id='mcwg-dashboard'>MCWG dashboard</h2><table class='dash'><tr><th>item</th>"
        "<th>recommendation</th><th>verdict</th><th>checks</th><th>scenarios</th>"
        "<th>evidence (scenario / step: check)</th></tr>" + "".join(rows) + "</table>"
    )


def _evidence(e: Evidence) -> str:
    return f"<a href='#{_e(e.scenario)}'>{_e(e.scenario)}</a> / {_e(e.step)}: {_e(e.check)}"


def _summary(results: Sequence[Result]) -> str:
    rows = "".join(
        f"<tr><td><a href='#{_e(r.scenario.id)}'>{_e(r.scenario.id)}</a></td><td>{_e(r.scenario.title)}</td>"
        f"<td>{_e(', '.join(r.scenario.tags))}</td><td>{_e(', '.join(r.scenario.transactions))}</td>"
        f"<td class='{r.outcome}'>{r.outcome}</td><td>{r.seconds:.2f}</td></tr>"
        for r in results
    )
    return (
        "<h2>Scenarios</h2><table><tr><th>id</th><th>title</th><th>tags</th><th>transactions</th>"
        "<th>outcome</th><th>s</th></tr>" + rows + "</table>"
    )


def _scenario(r: Result) -> str:
    sc = r.scenario
    head = (
        f"<h3 id='{_e(sc.id)}'>{_e(sc.id)} {_e(sc.title)} <span class='{r.outcome}'>{r.outcome}</span></h3>"
        f"<p>{_e(sc.description)}</p><p>topology {_e(r.topology)}; MCWG {_e(', '.join(sc.mcwg) or '-')}</p>"
    )
    if r.message:
        head += f"<pre>{_e(r.message)}</pre>"
    steps = "".join(_step(s) for s in r.steps)
    return head + steps


def _step(s: Step) -> str:
    requests = "".join(
        f"<tr><td>{_e(x.method)}</td><td><code>{_e(x.url)}</code></td><td>{x.status}</td>"
        f"<td>{x.seconds * 1000:.1f}</td><td>{x.bytes}</td><td class='wrap'>{_e(x.detail)}</td></tr>"
        for x in s.exchanges
    )
    checks = "".join(
        f"<li class='{'passed' if ok else 'failed'}'>{'PASS' if ok else 'FAIL'} {_e(name)}"
        f"<span style='font-weight:normal;color:#444'> - {_e(detail)}</span>"
        f"{f' <span class=n>×{n}</span>' if n > 1 else ''}</li>"
        for (ok, name, detail), n in _collapsed((c.ok, c.name, c.detail) for c in s.checks)
    )
    error = f"<pre class='error'>{_e(s.error)}</pre>" if s.error else ""
    table = (
        "<table><tr><th>method</th><th>url</th><th>status</th><th>ms</th><th>bytes</th><th>detail</th></tr>"
        + requests
        + "</table>"
        if requests
        else ""
    )
    state = "passed" if s.ok else "failed"
    return (
        f"<details open><summary><span class='{state}'>{state}</span> {_e(s.name)} "
        f"({s.seconds * 1000:.0f} ms)</summary>{table}<ul>{checks}</ul>{error}</details>"
    )


def write_html(results: Sequence[Result], path: Path, *, target: str = "") -> None:
    """``target``: what the scenarios ran against, for the report's header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(results, target=target), encoding="utf-8")
