"""The SQLite outbox: outputs (forwarders) and their delivery rows.

Delivery rows are inserted inside the transaction that stores their message (`insert`, from
`SqliteStore.stage`), so a crash between storing and sending loses nothing. Senders read
their queue on a reader connection and record results in short transactions of their own.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from monitor.store.protocol import Delivery, DeliveryResult, DeliveryRow, OutputRow

# Delivered rows kept per output for the deliveries API; older ones are deleted.
KEEP_DELIVERED = 10_000
_COLS = "id, output_id, seq, type, event, ts, body, status, attempts, next_at, last_error, "
_COLS += "created_at, done_at"


def insert(db: sqlite3.Connection, rows: Sequence[DeliveryRow], now: float) -> None:
    """Queue deliveries (in the caller's transaction)."""
    db.executemany(
        "INSERT INTO deliveries (output_id, seq, type, event, ts, body, created_at) "
        "VALUES (?,?,?,?,?,?,?)",
        [(*r, now) for r in rows],
    )


def _delivery(row: tuple[Any, ...]) -> Delivery:
    return Delivery(*row)


class SqliteOutbox:
    """Outbox methods of SqliteStore; `_reader()` gives this thread's connection."""

    path: str
    _write_lock: threading.Lock
    _writer: sqlite3.Connection

    def _reader(self) -> sqlite3.Connection:
        raise NotImplementedError

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            db = self._writer
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        if self.path == ":memory:":
            with self._write_lock:  # one shared connection
                yield self._writer
        else:
            yield self._reader()

    # -- outputs

    def outputs(self) -> list[OutputRow]:
        """Every output, oldest first."""
        with self._read() as db:
            rows = db.execute(
                "SELECT id, name, origin, spec, created_at, updated_at FROM outputs "
                "ORDER BY created_at, id"
            ).fetchall()
        return [OutputRow(*r) for r in rows]

    def put_output(self, row: OutputRow) -> None:
        """Create or replace an output (its deliveries stay)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO outputs VALUES (?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
                "name = excluded.name, origin = excluded.origin, spec = excluded.spec, "
                "updated_at = excluded.updated_at",
                (row.id, row.name, row.origin, row.spec, row.created_at, row.updated_at),
            )

    def delete_output(self, output_id: str) -> bool:
        """Remove an output and its queue; False if there was none."""
        with self._transaction() as db:
            gone = db.execute("DELETE FROM outputs WHERE id = ?", (output_id,)).rowcount
            db.execute("DELETE FROM deliveries WHERE output_id = ?", (output_id,))
        return gone > 0

    # -- deliveries

    def due_deliveries(self, output_id: str, limit: int) -> list[Delivery]:
        """The head of an output's queue, in order."""
        with self._read() as db:
            rows = db.execute(
                f"SELECT {_COLS} FROM deliveries WHERE output_id = ? AND status = 'pending' "
                "ORDER BY id LIMIT ?",
                (output_id, limit),
            ).fetchall()
        return [_delivery(r) for r in rows]

    def record_deliveries(self, output_id: str, results: Sequence[DeliveryResult]) -> None:
        """Store what a sender did: delivered, failed (to retry) or dead."""
        with self._transaction() as db:
            db.executemany(
                "UPDATE deliveries SET status = ?, attempts = ?, next_at = ?, last_error = ?, "
                "done_at = ? WHERE id = ? AND output_id = ?",
                [
                    (r.status, r.attempts, r.next_at, r.error, r.done_at, r.id, output_id)
                    for r in results
                ],
            )
            if any(r.status == "delivered" for r in results):
                db.execute(
                    "DELETE FROM deliveries WHERE output_id = ? AND status = 'delivered' "
                    "AND id < (SELECT id FROM deliveries WHERE output_id = ? "
                    "AND status = 'delivered' ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (output_id, output_id, KEEP_DELIVERED),
                )

    def deliveries(
        self, output_id: str, status: str | None, page: int, limit: int
    ) -> tuple[list[Delivery], int]:
        """A page of an output's deliveries, newest first."""
        where, args = "output_id = ?", [output_id]
        if status is not None:
            where += " AND status = ?"
            args.append(status)
        with self._read() as db:
            total = db.execute(f"SELECT COUNT(*) FROM deliveries WHERE {where}", args).fetchone()
            rows = db.execute(
                f"SELECT {_COLS} FROM deliveries WHERE {where} ORDER BY id DESC LIMIT ? OFFSET ?",
                [*args, limit, (page - 1) * limit],
            ).fetchall()
        return [_delivery(r) for r in rows], total[0]

    def retry_delivery(self, output_id: str, delivery_id: int) -> Delivery | None:
        """Queue a delivery again now (a dead one included); None if there is none."""
        with self._transaction() as db:
            db.execute(
                "UPDATE deliveries SET status = 'pending', next_at = 0, done_at = NULL "
                "WHERE id = ? AND output_id = ?",
                (delivery_id, output_id),
            )
            row = db.execute(
                f"SELECT {_COLS} FROM deliveries WHERE id = ? AND output_id = ?",
                (delivery_id, output_id),
            ).fetchone()
        return None if row is None else _delivery(row)

    def delivery_counts(self, output_id: str) -> dict[str, int]:
        """Deliveries per status."""
        with self._read() as db:
            rows = db.execute(
                "SELECT status, COUNT(*) FROM deliveries WHERE output_id = ? GROUP BY status",
                (output_id,),
            ).fetchall()
        return {"pending": 0, "delivered": 0, "dead": 0} | dict(rows)
