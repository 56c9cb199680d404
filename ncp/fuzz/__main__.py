"""``python -m ncp.fuzz --requests 10000 --seed N``: the table per endpoint family; exit 1 on any failure.

``--case I`` sends only case I of the seed and prints the request and the answer in full.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from ncp.fuzz.runner import Fuzzer, Report, seeded_federation, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ncp.fuzz", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=4, help="requests in flight at a time")
    parser.add_argument("--case", type=int, help="send only this case, print request and answer")
    parser.add_argument("--run-dir", type=Path, help="where the federation runs (default: a temporary dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ncp-fuzz-") as tmp:
        run_dir = args.run_dir or Path(tmp)
        with seeded_federation(run_dir) as corpus:
            fuzzer = Fuzzer(corpus, args.seed)
            if args.case is not None:
                return _one(fuzzer, args.case)
            report = fuzzer.run(args.requests, workers=args.workers, progress=_progress(args.requests))
    print(_summary(report))
    return 0 if report.ok else 1


def _one(fuzzer: Fuzzer, index: int) -> int:
    case = fuzzer.case(index)
    print(case.reproduction(limit=100_000))
    print("mutations:", "; ".join(case.notes))
    response = fuzzer.send(case)
    print(response.status or response.error, dict(response.headers))
    print(response.body[:4000].decode("utf-8", "replace"))
    return 0


def _progress(total: int) -> Callable[[int], None]:
    step = max(1, total // 10)

    def report(done: int) -> None:
        if done % step == 0:
            print(f"  {done}/{total} requests", file=sys.stderr, flush=True)

    return report


def _summary(report: Report) -> str:
    sent = sum(t.requests for t in report.tallies.values())
    head = f"ncp.fuzz seed {report.seed}: {sent} requests in {report.elapsed:.0f} s"
    verdict = "OK" if report.ok else f"FAILED ({len(report.findings)} findings)"
    return "\n".join([head, table(report), *report.finding_lines(), verdict])


if __name__ == "__main__":
    sys.exit(main())
