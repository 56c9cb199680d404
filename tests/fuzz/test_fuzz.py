"""No 5xx from input, anywhere (issue 11): 2,000 hostile requests over every endpoint family.

One seeded federation, its roles as processes with security on (mTLS, tokens, assertions), takes
mutated versions of valid requests at the gateway, the border, the registry and the PACS (see
:mod:`ncp.fuzz`). Every failure is listed with a one-line reproduction (``--seed 11 --case N``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import nullcontext

import pytest

from ncp.fuzz.corpus import FAMILIES
from ncp.fuzz.runner import Finding, Fuzzer, Report, seeded_federation, table

SEED = 11
REQUESTS = 2000


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzer]:
    with seeded_federation(tmp_path_factory.mktemp("fuzz")) as corpus:
        yield Fuzzer(corpus, SEED)


@pytest.fixture(scope="module")
def report(fuzzer: Fuzzer, pytestconfig: pytest.Config) -> Report:
    result = fuzzer.run(REQUESTS)
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else nullcontext():  # shown even when passing
        print(f"\nncp.fuzz seed {SEED}: {REQUESTS} requests in {result.elapsed:.0f} s\n{table(result)}")
    return result


def explain(findings: list[Finding]) -> str:
    report = Report(SEED, findings=findings)
    return "\n".join(report.finding_lines())


def test_the_fuzzer_starts_from_requests_the_federation_accepts(report: Report) -> None:
    assert not report.of("control"), explain(report.of("control"))


def test_every_case_can_be_made_again_alone_for_its_reproduction(fuzzer: Fuzzer, report: Report) -> None:
    """``--seed 11 --case N`` sends what the run sent: no case depends on the ones before it."""
    digest = hashlib.sha256()
    for index in range(REQUESTS):
        digest.update(fuzzer.case(index).request.encode())
    assert digest.hexdigest() == report.digest


def test_every_endpoint_family_takes_hostile_requests(report: Report) -> None:
    assert set(report.tallies) == set(FAMILIES)
    assert all(t.requests >= REQUESTS // len(FAMILIES) // 2 for t in report.tallies.values())


def test_no_request_is_answered_5xx_or_left_unanswered(report: Report) -> None:
    assert not report.of("status"), explain(report.of("status"))


def test_every_4xx_says_why_in_its_protocol(report: Report) -> None:
    """An OperationOutcome on FHIR routes, a Warning header on DICOMweb ones."""
    assert not report.of("shape"), explain(report.of("shape"))


def test_no_role_logs_a_traceback(report: Report) -> None:
    assert not report.of("traceback"), explain(report.of("traceback"))


def test_stored_instances_stay_byte_for_byte_what_they_were(report: Report) -> None:
    """Every STOW-RS the fuzzer sends is unstorable garbage: nothing new, nothing changed, nothing staged."""
    assert not report.of("storage"), explain(report.of("storage"))


def test_every_role_is_still_healthy_afterwards(report: Report) -> None:
    assert not report.of("health"), explain(report.of("health"))


@pytest.mark.parametrize("listener", ["gateway IdP", "border ITI-78", "registry ITI-65", "pacs STOW-RS"])
def test_a_request_body_that_stops_arriving_is_answered_in_time(report: Report, listener: str) -> None:
    """408 within 10 s where the route reads its body; the border, which reads none, answers at once."""
    (name, what, ok), *_ = [p for p in report.probes if p[0].startswith(listener)]
    assert ok, f"{name}: {what}"
