"""``make bench`` (ncp/bench.py): its quick mode runs every path for real and reports each goal's verdict.

The numbers themselves are not asserted (the machine is shared); what is asserted is the report's shape:
every row measured ``--repeat`` times, every goal row with its ratio, its goal and met / not met, and a
path that does not answer frames reported as not measured with its status instead of failing the run.
"""

from __future__ import annotations

import argparse
import asyncio
import re

import pytest

from ncp.bench import MemoryRow, Probe, Row, Sample, main, measure, render


def _args(**overrides: object) -> argparse.Namespace:
    values: dict[str, object] = {
        "instances": 4,
        "instance_kb": 64,
        "repeat": 3,
        "concurrency": 16,
        "sample_s": 1.0,
    }
    return argparse.Namespace(**{**values, **overrides})


def _rates(*per_second: float) -> list[Sample]:
    return [Sample(mbps=r / 10, per_second=r, ttfb_ms=5.0, cpu_ms=1.5) for r in per_second]


def test_a_goal_row_shows_median_min_max_its_ratio_per_round_and_whether_the_goal_is_met() -> None:
    direct = Row("PACS direct [aiohttp run]", "instance x16", _rates(100, 200, 300))
    chain = Row("two gateways [aiohttp]", "instance x16", _rates(80, 100, 270), baseline=direct, goal=0.75)

    table = render([direct, chain], [], _args())

    line = next(line for line in table.splitlines() if line.startswith("| two gateways"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3] == "100 (80-270)"  # requests/s: median (min-max) of the three repetitions
    assert cells[6] == "PACS direct [aiohttp run], instance x16"
    assert cells[7] == "0.80 (0.50-0.90)"  # 80/100, 100/200, 270/300: taken round by round
    assert cells[8:] == [">= 0.75x", "yes"]
    assert chain.met is True
    assert table.splitlines()[-1] == "ratio goals met: 1 of 1"
    chain.goal = 0.85
    assert chain.met is False
    table = render([direct, chain], [], _args())
    assert table.splitlines()[-3].endswith("| >= 0.85x | NO |")
    # the last line names what missed its goal, so that a run's verdict needs no scrolling
    assert table.splitlines()[-1] == (
        "ratio goals met: 0 of 1; not met: two gateways [aiohttp], instance x16 (0.80x)"
    )


def test_a_missed_goal_names_what_two_bare_nginx_proxies_kept_of_the_same_pacs() -> None:
    """The least any two relays cost on the machine, measured in the same run, beside the miss."""
    direct = Row("PACS direct [h1 run]", "study", _rates(100, 100, 100))
    pair = Row("two nginx proxies (nginx -> nginx)", "study", _rates(86, 90, 80), baseline=direct)
    tls_pair = Row(
        "two nginx proxies, mTLS between them (nginx -> nginx)", "study", _rates(60), baseline=direct
    )
    front_direct = Row("PACS direct [nginx front run]", "study", _rates(200, 200, 200))
    front = Row("two gateways [nginx front]", "study", _rates(174, 174, 180), baseline=front_direct, goal=0.9)
    orthanc_direct = Row("Orthanc direct", "study", _rates(100, 100, 100))
    orthanc = Row(
        "Orthanc via two gateways [h1]", "study", _rates(70, 70, 70), baseline=orthanc_direct, goal=0.8
    )

    rows = [direct, pair, tls_pair, front_direct, front, orthanc_direct, orthanc]
    verdict = render(rows, [], _args()).splitlines()[-1]

    front_miss = "two gateways [nginx front], study (0.87x; two nginx proxies: 0.86x)"
    orthanc_miss = (
        "Orthanc via two gateways [h1], study (0.70x)"  # against Orthanc: the pair relayed the other PACS
    )
    assert verdict == f"ratio goals met: 0 of 2; not met: {front_miss}; {orthanc_miss}"


def test_a_repetition_fetches_again_until_its_minimum_time_and_counts_the_work_it_did() -> None:
    rates = iter([100.0, 300.0] * 50)
    fetched: list[float] = []

    async def fetch() -> Sample:
        await asyncio.sleep(0.01)
        fetched.append(rate := next(rates))
        return Sample(mbps=rate / 10, per_second=rate, ttfb_ms=rate / 100)

    row = Row("PACS direct [h1 run]", "study")
    measure([Probe(row, fetch, 1)], repeat=1, sample_s=0.05)

    repetition = fetched[1:]  # after the warm-up
    assert len(repetition) >= 5  # fetched again until 0.05 s had passed
    assert len(row.samples) == 1
    # the same work per fetch: the rate of the whole is the harmonic mean, not the arithmetic one
    assert row.samples[0].per_second == pytest.approx(len(repetition) / sum(1 / r for r in repetition))
    assert row.samples[0].per_second < sum(repetition) / len(repetition)


def test_a_round_interleaves_its_paths_fetch_by_fetch_until_each_has_had_its_time() -> None:
    order: list[str] = []

    def probe(name: str, seconds: float) -> Probe:
        async def fetch() -> Sample:
            await asyncio.sleep(seconds)
            order.append(name)
            return Sample(mbps=10.0, per_second=100.0, ttfb_ms=1.0)

        return Probe(Row(name, "study"), fetch, 1)

    direct, chain = probe("direct", 0.01), probe("chain", 0.02)
    measure([direct, chain], repeat=1, sample_s=0.1)

    repetition = order[2:]  # after one warm-up fetch each
    # the host's slow moments fall on both paths alike: they alternate while both still need time ...
    assert repetition[:6] == ["direct", "chain"] * 3
    # ... and the path with the shorter fetches goes on alone once the other has had its 0.1 s
    assert repetition.count("direct") > repetition.count("chain") >= 3
    assert len(direct.row.samples) == len(chain.row.samples) == 1


def test_a_path_that_does_not_answer_frames_is_reported_not_measured_with_its_status() -> None:
    row = Row("frames: PACS direct", "frame x16", note="not measured: PACS answers 400")

    table = render([row], [], _args())

    assert "| frames: PACS direct | frame x16 | - | - | - | - | - | not measured: PACS answers 400 |" in table
    assert row.met is None


def test_memory_growth_is_per_study_in_flight_against_8_mb() -> None:
    grew = MemoryRow("FR/gateway", "aiohttp", before_mb=100, peak_mb=140)  # 4 studies in flight: 10 MB each
    unknown = MemoryRow("AT/gateway", "aiohttp", before_mb=100, peak_mb=None)

    table = render([], [grew, unknown], _args())

    assert grew.growth_mb == 10.0
    assert "| FR/gateway | aiohttp | 100 | 140 | 10.0 | <= 8 MB | NO |" in table
    assert (
        "| AT/gateway | aiohttp | 100 | not measured (no access to clear_refs) | - | <= 8 MB | - |" in table
    )


@pytest.mark.slow
def test_quick_mode_measures_every_path_and_states_every_goal(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--quick", "--no-link", "--no-orthanc", "--no-front", "--clients", "h1"]) == 0

    captured = capsys.readouterr()
    rows = [line for line in captured.out.splitlines() if line.startswith("| ")]
    table = [r for r in rows if not r.startswith(("| path", "| gateway |"))]
    # what the run is doing shows on stderr while it runs: each federation and each round of its paths
    assert re.search(r"run 1/2: h1, front none", captured.err), captured.err
    assert re.search(r"run 2/2: h1, mTLS \+ tokens, front none", captured.err), captured.err
    assert len(re.findall(r"round \d/2 of \d+ measurements done", captured.err)) == 4, captured.err
    goals = [r for r in table if ">= 0." in r]
    assert len(goals) == 3  # two gateways: study and per instance in plain HTTP, per instance with mTLS
    for row in goals:
        assert re.search(r"\| \d+\.\d\d \(\d+\.\d\d-\d+\.\d\d\) \| >= 0\.\d\dx \| (yes|NO) \|$", row), row
    frames = [r for r in table if r.startswith("| frames:")]
    assert frames, "the frames rows are missing"
    for row in frames:
        assert "not measured: " in row or re.search(r"\| \d+ \(\d+-\d+\) \|", row), row
    memory = [r for r in rows if r.startswith(("| FR/gateway", "| AT/gateway"))]
    assert len(memory) == 4 and all(r.endswith(("| yes |", "| NO |", "| - |")) for r in memory)
    # Two nginx proxies in the gateways' place, plain and with mTLS between them (nginx: `make system-deps`),
    # at both levels: against the PACS direct, with the CPU their processes spent per request ...
    pairs = [r for r in table if r.startswith("| two nginx proxies")]
    assert len(pairs) == 4, "the nginx pair rows are missing"
    for row in pairs:
        assert re.search(r"\| \d+\.\d\d \(\d+\.\d\d-\d+\.\d\d\) \| PACS direct \[h1", row), row
    # ... and the gateways' rows again, with the gateways' rate over the nginx pair's, round by round.
    versus = [r for r in table if re.match(r"\| two gateways.* vs nginx \| (study|instance x16) \|", r)]
    assert len(versus) == 4
    for row in versus:
        assert re.search(r"\| two nginx proxies[^|]*, (study|instance x16) \| \d+\.\d\d \(", row), row
