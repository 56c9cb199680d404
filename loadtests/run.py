"""Bounded, headless load test of a running federation (what `xcwado load` runs).

Given the state file of ``xcwado up``, runs Locust (one local process, or a master and
``--processes N`` workers) with a load profile (ramp, steady, spike, soak), then writes Locust's
CSV/HTML and ``summary.json``/``summary.md`` + PNG plots into ``--out``, and exits:

- 0: every check passed (failure ratio, p95, statistics complete);
- 3: a threshold was breached (as locust-plugins' ``--check-*``);
- 2: the run could not be made (bad state file, Locust did not start or produced no statistics).

Pure module (no ``locust`` import): Locust always runs in child processes::

    python loadtests/run.py --state run/state.json --profile ramp --users 16 --duration 120 --processes 2
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from checks import Thresholds
from profiles import DEFAULT_DURATION_S, PROFILES
from state import FederationState, StateError, load_state
from summary import render_markdown, summarize, write_plots, write_summary

from ncp.topology import nothing_listens, unreachable

__all__ = ["build_parser", "locust_command", "main", "progress_line"]

# `xcwado load` runs this file and sets the name, so that usage and errors name the command typed
PROG = os.environ.get("XCWADO_LOAD_PROG", "run.py")
HERE = Path(__file__).resolve().parent
USER_CLASSES = (
    "ClinicianUser",
    "InstanceRetriever",
    "StudyRetriever",
    "ViewerUser",
    "ViewerInstancesUser",
    "DirectPacsUser",
)
_STARTUP_S = 60.0  # workers to connect, users to spawn
_SHUTDOWN_S = 60.0  # users to stop, final reports, CSV and HTML written
_PROGRESS_S = 5.0  # a line this often while Locust runs: a long run is not silence


class _Help(argparse.HelpFormatter):
    """Every option's help ends with its default, unless it says it already or there is none to say."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0], formatter_class=_Help)
    p.add_argument(
        "--state",
        default=os.environ.get("XCWADO_STATE"),
        help="state file of `xcwado up` (default: $XCWADO_STATE)",
    )
    p.add_argument("--profile", choices=PROFILES, default="steady", help="how users come and go over the run")
    p.add_argument("--users", type=int, default=4, help="peak concurrent users")
    p.add_argument(
        "--spawn-rate", type=float, default=None, help="users started per second (default: --users)"
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds (default per profile: "
        + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_DURATION_S.items())
        + ")",
    )
    p.add_argument(
        "--user-classes",
        nargs="+",
        choices=USER_CLASSES,
        default=["ClinicianUser"],
        metavar="CLASS",
        help=f"among {', '.join(USER_CLASSES)} (default ClinicianUser)",
    )
    p.add_argument(
        "--treatment",
        default=os.environ.get("XCWADO_TREATMENT"),
        help="country of treatment (B) (default: $XCWADO_TREATMENT, else any country but the patient's)",
    )
    p.add_argument("--processes", type=int, default=1, help="N > 1: a master and N worker processes")
    p.add_argument("--think-time", type=float, default=0.5, help="mean pause between a user's tasks (s)")
    p.add_argument("--seed", type=int, default=1, help="seed of the users' random choices")
    p.add_argument("--out", type=Path, default=None, help="output folder (default run/load/<time>-<profile>)")
    p.add_argument("--max-fail-ratio", type=float, default=0.01, help="threshold, 0..1")
    p.add_argument(
        "--max-p95-ms", type=float, default=None, help="threshold on the aggregated p95 (ms) (default: none)"
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return p


def locust_command(args: argparse.Namespace, out: Path, duration: float, role: Sequence[str]) -> list[str]:
    """The Locust command line of the master (or local) process; workers get ``role`` only."""
    files = f"{HERE / 'locustfile.py'},{HERE / 'shapes.py'}"
    base = [sys.executable, "-m", "locust", "-f", files, "--headless", "--loglevel", "INFO"]
    if "--worker" in role:
        return [*base, *role]
    rate = args.spawn_rate or float(args.users)
    return [
        *base,
        *role,
        "-u", str(args.users), "-r", f"{rate:g}", "-t", f"{math.ceil(duration)}s",
        "--csv", str(out / "locust"), "--csv-full-history", "--html", str(out / "report.html"),
        "--only-summary", "--exit-code-on-error", "0",
        "--state", str(Path(args.state).resolve()), "--load-profile", args.profile,
        "--think-time", f"{args.think_time:g}", "--seed", str(args.seed),
        "--xcwado-ledger", str(out / "ledger"),
        *(["--treatment", args.treatment] if args.treatment else []),
        *args.user_classes,
    ]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (Locust then writes its files), SIGKILL when it does not end."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_locust(args: argparse.Namespace, out: Path, duration: float) -> int:
    """Run the processes, bounded in time; return the master's (or local process's) exit code."""
    with ExitStack() as stack:
        role: list[str] = []
        if args.processes > 1:
            port = str(_free_port())
            for i in range(args.processes):
                log = stack.enter_context(open(out / f"worker-{i}.log", "wb"))
                worker = ["--worker", "--master-host", "127.0.0.1", "--master-port", port]
                proc = subprocess.Popen(locust_command(args, out, duration, worker), stdout=log, stderr=log)
                stack.callback(_stop, proc)
            role = ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", port,
                    "--expect-workers", str(args.processes), "--expect-workers-max-wait", "30"]  # fmt: skip
        log = stack.enter_context(open(out / "locust.log", "wb"))
        master = subprocess.Popen(locust_command(args, out, duration, role), stdout=log, stderr=log)
        stack.callback(_stop, master)
        return _watch(master, out, duration)
    return 2  # pragma: no cover - the with block always returns


def _watch(master: subprocess.Popen[bytes], out: Path, duration: float) -> int:
    """Wait for Locust, bounded in time, printing a progress line every few seconds."""
    limit = duration + _STARTUP_S + _SHUTDOWN_S
    started = time.monotonic()
    next_line = started + _PROGRESS_S
    while master.poll() is None:
        now = time.monotonic()
        if now - started > limit:
            print(f"{PROG}: Locust still running after {limit:.0f} s; stopped", flush=True)
            _stop(master)
            return 2
        if now >= next_line:
            print(progress_line(out / "locust_stats_history.csv", now - started, duration), flush=True)
            next_line += _PROGRESS_S
        time.sleep(0.2)
    return master.returncode


def progress_line(history: Path, elapsed: float, duration: float) -> str:
    """Where the run is, from the last aggregated row Locust wrote to its statistics history."""
    head = f"  {elapsed:4.0f} s of {duration:g} s:"
    try:
        with history.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("Name") == "Aggregated"]
    except OSError:
        rows = []
    if not rows:
        return f"{head} Locust starting, users spawning"
    last = rows[-1]
    return (
        f"{head} {last.get('User Count', '?')} users, {last.get('Total Request Count', '?')} requests "
        f"({last.get('Total Failure Count', '?')} failed), {float(last.get('Requests/s') or 0):.1f} req/s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        state = load_state(args.state)
        state.visits(args.treatment)  # fail now, not in every user
    except StateError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    if args.users < 1 or args.processes < 1:
        print(f"{PROG}: --users and --processes must be at least 1", file=sys.stderr)
        return 2
    down = unreachable(_entry_points(state, args.user_classes))
    if down:  # a stopped federation: say so in a second, not after a run of refused connections
        print(f"{PROG}: state file {args.state}: {nothing_listens(down)}", file=sys.stderr)
        return 2
    duration = args.duration or DEFAULT_DURATION_S[args.profile]
    out = args.out or Path("run/load") / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.profile}"
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"Locust: {args.profile} profile, {args.users} users, {duration:g} s, "
        f"{args.processes} process(es); results in {out}",
        flush=True,
    )
    code = run_locust(args, out, duration)
    prefix = out / "locust"
    try:
        summary = summarize(
            prefix, Thresholds(args.max_fail_ratio, args.max_p95_ms), ledger_dir=out / "ledger"
        )
    except FileNotFoundError as exc:
        print(f"{PROG}: Locust exited with {code} and no statistics ({exc}); see {out / 'locust.log'}")
        return 2
    summary["run"]["locust_exit_code"] = code
    write_summary(summary, out)
    if not args.no_plots:
        write_plots(prefix, summary, out)
    print(render_markdown(summary))
    print(f"Results in {out}")
    return 0 if summary["ok"] else 3


def _entry_points(state: FederationState, user_classes: Sequence[str]) -> dict[str, str]:
    """What the users call first: every gateway, and the PACS when some users go to them directly."""
    points = {f"{code} gateway": c.gateway for code, c in state.countries.items()}
    if "DirectPacsUser" in user_classes:
        points |= {
            f"{code} PACS {uid}": url for code, c in state.countries.items() for uid, url in c.pacs.items()
        }
    return points


if __name__ == "__main__":
    sys.exit(main())
