"""SQLite as both registries keep it: autocommit connections with foreign keys, explicit transactions."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

__all__ = ["connection", "transaction"]


@contextmanager
def connection(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection of its own, closed after the block (several role threads share a process)."""
    with closing(sqlite3.connect(path, timeout=30.0, isolation_level=None)) as db:
        db.execute("PRAGMA foreign_keys=ON")
        yield db


@contextmanager
def transaction(path: Path) -> Iterator[sqlite3.Connection]:
    """A write transaction taken at once (``BEGIN IMMEDIATE``): all of the block is stored, or none of it."""
    with connection(path) as db:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
