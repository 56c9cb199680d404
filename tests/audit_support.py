"""A hop's audit trail as the tests read it: a hop records a request once its answer is sent (behind the nginx
front, once nginx has logged its last byte), so a reader waits for the record briefly."""

from __future__ import annotations

import time
from pathlib import Path

from ncp.security.audit import AuditRecord, AuditStore


def audited(db: Path, request_id: str, timeout: float = 5.0) -> list[AuditRecord]:
    """One hop's records of one request, once there is one (or ``timeout`` has passed)."""
    store = AuditStore(db)
    deadline = time.monotonic() + timeout
    while not (records := store.records({"request-id": request_id})) and time.monotonic() < deadline:
        time.sleep(0.05)
    return records
