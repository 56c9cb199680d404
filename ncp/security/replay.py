"""Assertion ids already relied on, so that a replayed NCP assertion is refused even after a restart.

An NCP signs one assertion per request (ncp.gateway.guard); its ``jti`` is kept until the assertion would
fail verification anyway (expiry plus the verifier's skew), in SQLite so that a restarted border still
knows it. WAL with ``synchronous=NORMAL``: a process that dies loses nothing committed; only a power cut
could lose the last commits, and the assertions concerned live minutes.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

__all__ = ["SeenAssertions"]

_PRUNE_EVERY_S = 30.0
_SCHEMA = "CREATE TABLE IF NOT EXISTS seen (jti TEXT PRIMARY KEY, until REAL NOT NULL) WITHOUT ROWID"


class SeenAssertions:
    """The ids seen by one border; ``path`` None keeps them in memory (a test or a benchmark)."""

    def __init__(self, path: Path | None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            str(path) if path else ":memory:", isolation_level=None, check_same_thread=False, timeout=10
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._lock = threading.Lock()
        self._next_prune = 0.0

    def first_use(self, jti: str, until: float) -> bool:
        """Record ``jti`` (valid until the epoch time ``until``); False when it was seen before."""
        with self._lock:
            now = time.time()
            if now >= self._next_prune:
                self._db.execute("DELETE FROM seen WHERE until < ?", (now,))
                self._next_prune = now + _PRUNE_EVERY_S
            try:
                self._db.execute("INSERT INTO seen (jti, until) VALUES (?, ?)", (jti, until))
            except sqlite3.IntegrityError:
                return False
            return True

    def close(self) -> None:
        with self._lock:
            self._db.close()
