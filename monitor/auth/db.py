"""The access-control database: API keys and the audit log, in `auth.db` beside the store.

A file of its own so that the offline `driftline keys` / `driftline audit` commands and a
running server share it (SQLite WAL, busy timeout) without touching the event store, and so
that key changes by another process are the only commits this connection did not make.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, name TEXT NOT NULL, role TEXT NOT NULL,
    created_by TEXT, created_at TEXT NOT NULL, last_used_at TEXT, expires_at TEXT,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY, at TEXT NOT NULL, actor_id TEXT, actor_name TEXT,
    action TEXT NOT NULL, target TEXT, details TEXT NOT NULL, prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_actor ON audit_log(actor_id, seq);
CREATE INDEX IF NOT EXISTS audit_action ON audit_log(action, seq);
CREATE INDEX IF NOT EXISTS audit_at ON audit_log(at)
"""
FILENAME = "auth.db"


class AuthDbError(OSError):
    """The access-control database cannot be opened; the message names the path."""


class AuthDb:
    """One SQLite connection, used from any thread under a lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                # Key hashes and the audit trail are nobody else's business.
                fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
                os.close(fd)
            self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA busy_timeout = 5000")
            if self.path != ":memory:":
                self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = FULL")
            self.db.executescript(SCHEMA)
            # Key lookups on the event loop must never wait behind an audit commit's fsync:
            # they read on a connection of their own (WAL readers do not block on writers).
            self.reader = (
                self.db
                if self.path == ":memory:"
                else sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            )
            self.reader.execute("PRAGMA busy_timeout = 5000")
        except (OSError, sqlite3.Error) as exc:
            raise AuthDbError(
                f"{self.path}: cannot open the access-control database: {exc}"
            ) from None
        self.lock = threading.Lock()
        self.read_lock = self.lock if self.reader is self.db else threading.Lock()

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A connection for reads that does not wait for the writer."""
        with self.read_lock:
            yield self.reader

    @classmethod
    def in_dir(cls, data_dir: str | Path | None) -> AuthDb:
        """`auth.db` in the data directory, or an in-memory database for `None`."""
        return cls(":memory:" if data_dir is None else Path(data_dir) / FILENAME)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection inside BEGIN IMMEDIATE ... COMMIT (rolled back on error)."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def close(self) -> None:
        with self.lock:
            if self.reader is not self.db:
                with self.read_lock:
                    self.reader.close()
            self.db.close()
