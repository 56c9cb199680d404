"""Summarise a Locust run of the XC-WADO load tests: numbers, checks and PNG plots.

Reads what a run left under its CSV prefix (``_stats.csv``, ``_stats_history.csv``,
``_failures.csv``, ``_xcwado.json`` custom metrics, and the per-process ledgers when present) and
writes ``summary.json``, ``summary.md`` and plots next to them. Pure module (no ``locust`` import)::

    python loadtests/summary.py run/load/20260101-steady/locust --max-fail-ratio 0.01 --max-p95-ms 2000
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from checks import Check, Thresholds
from metrics import Histogram

__all__ = ["GENERATOR_LIMIT_PCT", "main", "render_markdown", "summarize", "write_plots", "write_summary"]

# A gevent Locust process uses one core; above this share it limits the load it generates.
GENERATOR_LIMIT_PCT = 85.0
_MB = 1e6


def summarize(prefix: Path, thresholds: Thresholds, *, ledger_dir: Path | None = None) -> dict[str, Any]:
    """Everything a reader (or CI) needs to judge the run, as one JSON-able dict."""
    rows = _read_csv(Path(f"{prefix}_stats.csv"))
    if not rows:
        raise FileNotFoundError(f"{prefix}_stats.csv is missing or empty: did Locust run?")
    custom = _read_json(Path(f"{prefix}_xcwado.json"))
    metrics = custom.get("metrics", {})
    requests = [_request_row(r) for r in rows if r["Name"] != "Aggregated"]
    total = next((_request_row(r) for r in rows if r["Name"] == "Aggregated"), None) or _request_row(rows[-1])
    history = [r for r in _read_csv(Path(f"{prefix}_stats_history.csv")) if r.get("Name") == "Aggregated"]
    duration = _duration(custom, history, total)
    summary: dict[str, Any] = {
        "run": {
            "profile": custom.get("profile"),
            "duration_s": round(duration, 1),
            "peak_users": max((_int(r.get("User Count")) for r in history), default=None),
        },
        "totals": {
            k: total[k] for k in ("requests", "failures", "rps", "p50_ms", "p95_ms", "p99_ms", "max_ms")
        }
        | {"fail_ratio": total["failures"] / total["requests"] if total["requests"] else 0.0},
        "requests": requests,
        "retrievals": _retrievals(metrics.get("names", {}), requests, duration),
        "flow": _flow(metrics),
        "generator": _generator(metrics.get("processes", {})),
        "drift": _drift(history),
        "failures": _failures(Path(f"{prefix}_failures.csv")),
    }
    checks = thresholds.evaluate(total["requests"], total["failures"], total["p95_ms"])
    ledger = _ledger_check(ledger_dir, requests)
    if ledger is not None:
        checks.append(ledger)
    summary["checks"] = [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks]
    summary["ok"] = all(c.ok for c in checks)
    return summary


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _num(value: str | None) -> float | None:
    try:
        number = float(value or "")
    except ValueError:
        return None  # Locust writes "N/A" before the first sample
    return number if math.isfinite(number) else None


def _int(value: str | None) -> int:
    return int(_num(value) or 0)


def _request_row(r: Mapping[str, str]) -> dict[str, Any]:
    return {
        "method": r.get("Type", ""),
        "name": r.get("Name", ""),
        "requests": _int(r.get("Request Count")),
        "failures": _int(r.get("Failure Count")),
        "rps": round(_num(r.get("Requests/s")) or 0.0, 2),
        "p50_ms": _num(r.get("50%")),
        "p95_ms": _num(r.get("95%")),
        "p99_ms": _num(r.get("99%")),
        "max_ms": _num(r.get("100%")),
        "avg_bytes": round(_num(r.get("Average Content Size")) or 0.0),
    }


def _duration(
    custom: Mapping[str, Any], history: Sequence[Mapping[str, str]], total: Mapping[str, Any]
) -> float:
    if custom.get("started") and custom.get("stopped"):
        return max(1e-3, float(custom["stopped"]) - float(custom["started"]))
    stamps = [_int(r.get("Timestamp")) for r in history]
    if len(stamps) > 1:
        return float(max(stamps) - min(stamps))
    return total["requests"] / total["rps"] if total["rps"] else 0.0


def _retrievals(
    names: Mapping[str, Any], requests: Sequence[Mapping[str, Any]], duration: float
) -> list[dict[str, Any]]:
    """Per retrieval template: throughput (MB/s, instances/s), TTFB vs TTLB, each hop's share."""
    locust = {r["name"]: r for r in requests}
    out = []
    for name, raw in sorted(names.items()):
        ttfb = Histogram()
        ttfb.merge(raw.get("ttfb", {}))
        count = int(raw.get("retrievals", 0))
        size, transfer = int(raw.get("bytes", 0)), float(raw.get("transfer_s", 0.0))
        hops = {}
        for hop, counts in raw.get("hops", {}).items():
            h = Histogram()
            h.merge(counts)
            hops[hop] = {
                "n": h.count,
                "p50_ms": h.percentile(0.5),
                "p95_ms": h.percentile(0.95),
                "mean_ms": _round(h.mean()),
                # mean over *all* retrievals of the name (0 for those that did not cross the hop): the
                # shares then add up to the mean time to first byte even when the name mixes routes
                # (FR->AT and AT->FR both use one URL template)
                "share_ms": _round(h.mean() * h.count / count) if count and h.count else None,
            }
        row = locust.get(name, {})
        out.append(
            {
                "name": name,
                "retrievals": count,
                "mb": round(size / _MB, 3),
                "mb_per_s": round(size / _MB / duration, 3) if duration else None,
                "instances": int(raw.get("instances", 0)),
                "instances_per_s": round(int(raw.get("instances", 0)) / duration, 2) if duration else None,
                "mb_per_s_per_retrieval": round(size / _MB / transfer, 2) if transfer else None,
                "ttfb_p50_ms": ttfb.percentile(0.5),
                "ttfb_p95_ms": ttfb.percentile(0.95),
                "ttlb_p50_ms": row.get("p50_ms"),
                "ttlb_p95_ms": row.get("p95_ms"),
                "hops": hops,
            }
        )
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _flow(metrics: Mapping[str, Any]) -> dict[str, Any]:
    flows = Histogram()
    flows.merge(metrics.get("flows", {}))
    return {
        "completed": flows.count,
        "failed": int(metrics.get("flows_failed", 0)),
        "p50_ms": flows.percentile(0.5),
        "p95_ms": flows.percentile(0.95),
    }


def _generator(processes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Each Locust process's CPU; a load-generating one near a full core limited the test itself."""
    rows: list[dict[str, Any]] = []
    busy: list[tuple[str, float]] = []
    for label, p in sorted(processes.items()):
        samples = sorted(float(s[1]) for s in p.get("samples", []))
        p90 = samples[min(len(samples) - 1, math.ceil(0.9 * len(samples)) - 1)] if samples else None
        mean = float(p.get("mean_pct") or 0.0)
        rows.append(
            {
                "label": label,
                "role": p.get("role"),
                "cpu_s": p.get("cpu_s"),
                "mean_pct": mean,
                "p90_pct": p90,
                "max_pct": samples[-1] if samples else None,
            }
        )
        load = max(mean, p90 or 0.0)
        if p.get("role") != "master" and load >= GENERATOR_LIMIT_PCT:
            busy.append((label, load))
    machine = sorted(float(m[1]) for p in processes.values() if p.get("role") != "worker"
                     for m in p.get("machine_samples", []))  # fmt: skip
    machine_mean = round(sum(machine) / len(machine), 1) if machine else None
    machine_p90 = machine[min(len(machine) - 1, math.ceil(0.9 * len(machine)) - 1)] if machine else None
    note = (
        "generator-bound: "
        + ", ".join(f"{label} at {load:.0f}% of a core" for label, load in busy)
        + "; the numbers measure Locust as much as the federation: add --processes or retrieve at study level"
        if busy
        else f"no Locust process above {GENERATOR_LIMIT_PCT:.0f}% of a core"
    )
    # the mean hides a saturated stretch (a ramp's last steps): judge by the busiest tenth as well
    if machine_p90 is not None and max(machine_mean or 0.0, machine_p90) >= GENERATOR_LIMIT_PCT:
        note += (
            f"; the machine was {machine_mean:.0f}% busy on average, {machine_p90:.0f}% (p90): "
            "Locust and the federation shared saturated cores"
        )
    return {
        "processes": rows,
        "bottleneck": bool(busy),
        "machine_mean_pct": machine_mean,
        "machine_p90_pct": machine_p90,
        "note": note,
    }


def _drift(history: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """p95 of the first and last tenth of the run (soak: does latency creep up?)."""
    p95 = [v for v in (_num(r.get("95%")) for r in history) if v is not None]
    if len(p95) < 10:
        return {"p95_first_ms": None, "p95_last_ms": None}
    tenth = max(1, len(p95) // 10)
    return {"p95_first_ms": max(p95[:tenth]), "p95_last_ms": max(p95[-tenth:])}


def _failures(path: Path) -> list[dict[str, Any]]:
    return [
        {
            "method": r.get("Method", ""),
            "name": r.get("Name", ""),
            "error": r.get("Error", ""),
            "occurrences": _int(r.get("Occurrences")),
        }
        for r in _read_csv(path)
    ]


def _ledger_check(folder: Path | None, requests: Iterable[Mapping[str, Any]]) -> Check | None:
    """The reported totals equal what the load-generating processes say they sent, per name."""
    if folder is None or not folder.is_dir():
        return None
    sent: Counter[str] = Counter()
    files = sorted(folder.glob("*.json"))
    for f in files:
        sent.update(json.loads(f.read_text()).get("requests", {}))
    reported = Counter({f"{r['method']} {r['name']}": int(r["requests"]) for r in requests})
    sent, reported = +sent, +reported  # drop zero counts
    diff = {k: (sent[k], reported[k]) for k in set(sent) | set(reported) if sent[k] != reported[k]}
    detail = (
        f"{sum(reported.values())} reported = {sum(sent.values())} sent by {len(files)} process(es)"
        if not diff
        else "sent vs reported differ: " + "; ".join(f"{k}: {a} vs {b}" for k, (a, b) in sorted(diff.items()))
    )
    return Check("stats complete", not diff and bool(files), detail)


# -- outputs ---------------------------------------------------------------------------------------
def write_summary(summary: Mapping[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    as_json, as_md = out_dir / "summary.json", out_dir / "summary.md"
    as_json.write_text(json.dumps(summary, indent=2) + "\n")
    as_md.write_text(render_markdown(summary))
    return [as_json, as_md]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def render_markdown(s: Mapping[str, Any]) -> str:
    t, run, gen = s["totals"], s["run"], s["generator"]
    lines = [
        f"# Load test summary: {'PASS' if s['ok'] else 'FAIL'}",
        "",
        f"Profile {run['profile'] or '-'}, {run['duration_s']} s, peak {run['peak_users']} users: "
        f"{t['requests']} requests ({t['rps']} /s), {t['failures']} failures ({t['fail_ratio']:.2%}), "
        f"p50 {_fmt(t['p50_ms'])} ms, p95 {_fmt(t['p95_ms'])} ms, p99 {_fmt(t['p99_ms'])} ms.",
        "",
        "## Checks",
        "",
        *_table(
            ["check", "result", "detail"],
            [(c["name"], "ok" if c["ok"] else "FAILED", c["detail"]) for c in s["checks"]],
        ),
        "## Requests (image retrievals: time to last byte)",
        "",
        *_table(
            ["method", "name", "requests", "failures", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"],
            [
                (
                    r["method"],
                    r["name"],
                    r["requests"],
                    r["failures"],
                    r["rps"],
                    r["p50_ms"],
                    r["p95_ms"],
                    r["p99_ms"],
                    r["max_ms"],
                )
                for r in s["requests"]
            ],
        ),
    ]
    if s["retrievals"]:
        lines += [
            "## Retrievals",
            "",
            *_table(
                ["name", "n", "MB/s", "inst/s", "MB/s each", "TTFB p50", "TTFB p95", "TTLB p50", "TTLB p95"],
                [
                    (
                        r["name"],
                        r["retrievals"],
                        r["mb_per_s"],
                        r["instances_per_s"],
                        r["mb_per_s_per_retrieval"],
                        r["ttfb_p50_ms"],
                        r["ttfb_p95_ms"],
                        r["ttlb_p50_ms"],
                        r["ttlb_p95_ms"],
                    )
                    for r in s["retrievals"]
                ],
            ),
        ]
        hop_rows = [
            (r["name"], hop, v.get("n"), v["p50_ms"], v["p95_ms"], v["mean_ms"], v.get("share_ms"))
            for r in s["retrievals"]
            for hop, v in r["hops"].items()
        ]
        if hop_rows:
            lines += [
                "## Share of time to first byte per hop (Server-Timing)",
                "",
                "p50/p95/mean over the retrievals that crossed the hop (n); share: mean over all the "
                "name's retrievals, so the shares add up to the mean time to first byte.",
                "",
                *_table(["name", "hop", "n", "p50 ms", "p95 ms", "mean ms", "share ms"], hop_rows),
            ]
    f = s["flow"]
    if f["completed"] or f["failed"]:
        lines += [
            f"Clinician flow (identify, query, manifest, images): {f['completed']} completed, "
            f"{f['failed']} failed, p50 {_fmt(f['p50_ms'])} ms, p95 {_fmt(f['p95_ms'])} ms.",
            "",
        ]
    lines += [
        "## Generator",
        "",
        *_table(
            ["process", "role", "CPU s", "mean %", "p90 %", "max %"],
            [
                (p["label"], p["role"], p["cpu_s"], p["mean_pct"], p["p90_pct"], p["max_pct"])
                for p in gen["processes"]
            ],
        ),
        f"Machine CPU (all cores) mean: {_fmt(gen.get('machine_mean_pct'))} %, "
        f"p90: {_fmt(gen.get('machine_p90_pct'))} %. **{gen['note']}**",
        "",
    ]
    if s["failures"]:
        lines += [
            "## Failures",
            "",
            *_table(
                ["method", "name", "error", "n"],
                [(x["method"], x["name"], x["error"][:160], x["occurrences"]) for x in s["failures"]],
            ),
        ]
    return "\n".join(lines)


def write_plots(prefix: Path, summary: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """PNG plots: throughput and users, latency over time, per-hop shares, generator CPU."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    history = [r for r in _read_csv(Path(f"{prefix}_stats_history.csv")) if r.get("Name") == "Aggregated"]
    custom = _read_json(Path(f"{prefix}_xcwado.json"))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    t0 = min((_int(r.get("Timestamp")) for r in history), default=0)
    xs = [_int(r.get("Timestamp")) - t0 for r in history]
    if history:
        fig, ax = plt.subplots(figsize=(9, 4))
        ax.plot(xs, [_num(r.get("Requests/s")) or 0 for r in history], label="requests/s")
        ax.plot(xs, [_num(r.get("Failures/s")) or 0 for r in history], label="failures/s", color="tab:red")
        ax.set_xlabel("seconds")
        ax.set_ylabel("per second")
        users = ax.twinx()
        users.plot(
            xs, [_int(r.get("User Count")) for r in history], color="tab:gray", linestyle="--", label="users"
        )
        users.set_ylabel("users")
        handles = ax.get_legend_handles_labels()[0] + users.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.08, 0.5))
        ax.set_title("Throughput")
        written.append(_save(fig, out_dir / "throughput.png", plt))

        fig, ax = plt.subplots(figsize=(9, 4))
        for col in ("50%", "95%", "99%"):
            ax.plot(xs, [_num(r.get(col)) or math.nan for r in history], label=f"p{col.rstrip('%')}")
        ax.set_xlabel("seconds")
        ax.set_ylabel("ms (all requests, recent window)")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
        ax.set_title("Response time")
        written.append(_save(fig, out_dir / "latency.png", plt))

    hop_rows = [(r["name"], r["hops"]) for r in summary.get("retrievals", []) if r["hops"]]
    if hop_rows:
        fig, ax = plt.subplots(figsize=(9, 2.2 + 0.6 * len(hop_rows)))
        hops = list(dict.fromkeys(h for _, hs in hop_rows for h in hs))
        left = [0.0] * len(hop_rows)
        for hop in hops:
            widths = [float(hs.get(hop, {}).get("share_ms") or 0.0) for _, hs in hop_rows]
            ax.barh([n for n, _ in hop_rows], widths, left=left, label=hop)
            left = [a + b for a, b in zip(left, widths, strict=True)]
        ax.set_xlabel("ms of the mean time to first byte (hops weighted by the retrievals crossing them)")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
        ax.set_title("Where the time to first byte goes (Server-Timing per hop)")
        written.append(_save(fig, out_dir / "hops.png", plt))

    processes = custom.get("metrics", {}).get("processes", {})
    if processes:
        fig, ax = plt.subplots(figsize=(9, 4))
        start = min((s[0] for p in processes.values() for s in p.get("samples", [])), default=0.0)
        for label, p in sorted(processes.items()):
            samples = p.get("samples", [])
            ax.plot([s[0] - start for s in samples], [s[1] for s in samples], label=label)
        machine: list[list[float]] = next(
            (p.get("machine_samples", []) for p in processes.values() if p.get("role") != "worker"), []
        )
        if machine:
            ax.plot([m[0] - start for m in machine], [m[1] for m in machine], color="tab:gray",
                    linestyle="--", label="machine (% of all cores)")  # fmt: skip
        ax.axhline(100, color="tab:red", linestyle=":", label="one core")
        ax.set_xlabel("seconds")
        ax.set_ylabel("% CPU")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
        ax.set_title("Load generator CPU")
        written.append(_save(fig, out_dir / "generator_cpu.png", plt))
    return written


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Summarise a Locust run of the XC-WADO load tests.")
    parser.add_argument("prefix", help="the --csv prefix of the run")
    parser.add_argument("--max-fail-ratio", type=float, default=0.01)
    parser.add_argument("--max-p95-ms", type=float, default=None)
    parser.add_argument("--ledger", help="folder of the per-process ledgers (--xcwado-ledger)")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    prefix = Path(args.prefix)
    summary = summarize(
        prefix,
        Thresholds(args.max_fail_ratio, args.max_p95_ms),
        ledger_dir=Path(args.ledger) if args.ledger else None,
    )
    write_summary(summary, prefix.parent)
    if not args.no_plots:
        write_plots(prefix, summary, prefix.parent)
    print(render_markdown(summary))
    return 0 if summary["ok"] else 3


if __name__ == "__main__":
    sys.exit(main())
