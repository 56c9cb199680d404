"""The audit trail under load and crashes: group commit loses no record of an answered request."""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from ncp.federation import Federation
from ncp.security.audit import AuditRecord, AuditStore


def event(i: int) -> AuditRecord:
    return AuditRecord(transaction="RAD-160", outcome="0", source="test", request_id=f"r-{i}")


def test_concurrent_records_share_commits_and_all_land(tmp_path: Path) -> None:
    store = AuditStore(tmp_path / "audit.sqlite", max_batch=16)
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda i: store.record(event(i)), range(500)))
    store.close()
    assert AuditStore(tmp_path / "audit.sqlite").count() == 500


def test_a_record_is_committed_before_record_returns(tmp_path: Path) -> None:
    store = AuditStore(tmp_path / "audit.sqlite")
    store.record(event(1))
    other = AuditStore(tmp_path / "audit.sqlite")  # another connection sees it: it is on disk, not queued
    assert other.count({"request-id": "r-1"}) == 1
    store.close()


def test_close_commits_what_is_queued(tmp_path: Path) -> None:
    store = AuditStore(tmp_path / "audit.sqlite")
    pending = [store.submit(event(i)) for i in range(100)]
    store.close()
    assert all(f.done() and f.exception() is None for f in pending)
    assert AuditStore(tmp_path / "audit.sqlite").count() == 100


def test_records_nobody_waits_for_land_beside_awaited_ones_and_at_close(tmp_path: Path) -> None:
    """The nginx front's records (``later``: written once the answer is over) share commits with the
    records callers wait for, and none is left behind when the store closes."""
    store = AuditStore(tmp_path / "audit.sqlite")

    def both(i: int) -> int:
        store.later(event(i))
        store.record(event(1000 + i))  # returns once its record is committed
        return store.count({"request-id": f"r-{1000 + i}"})

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(both, range(300))) == {1}
    for i in range(300, 400):
        store.later(event(i))
    store.close()
    assert AuditStore(tmp_path / "audit.sqlite").count() == 700


def test_a_killed_gateway_keeps_a_record_of_every_request_it_answered(tmp_path: Path) -> None:
    """SIGKILL mid-load: every request that got its answer is in the trail (at most the batch being
    written, whose requests had no answer yet, is lost)."""
    with Federation("builtin:default", tmp_path, mode="process", secure=False) as fed:
        gateway = fed.plan.endpoints["AT"].gateway
        answered: list[str] = []
        lock = threading.Lock()

        def ask(i: int) -> None:
            rid = f"kill-{i}"
            try:
                r = httpx.get(f"{gateway}/fhir/Binary/FR.national.none", headers={"X-Request-Id": rid})
            except httpx.HTTPError:
                return
            if r.status_code < 500:
                with lock:
                    answered.append(rid)

        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(ask, i) for i in range(300)]
            while len(answered) < 100:
                threading.Event().wait(0.01)
            os.kill(fed.pids["AT/gateway"], signal.SIGKILL)
            for f in futures:
                f.result()
        store = AuditStore(tmp_path / "AT" / "audit.sqlite")
        recorded = {r.request_id for r in store.records({"_count": "1000", "source": "ncp-at-gateway"})}
        missing = [rid for rid in answered if rid not in recorded]
        assert len(answered) >= 100 and not missing
        fed.pids.pop("AT/gateway")
