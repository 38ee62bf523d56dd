"""The embedded store (SQLite, WAL): connections, the checkpoint thread, the write path.

Writes are idempotent on ids (at-least-once in, exactly-once out) and happen in one writer
with group commit (statements on the event loop, COMMIT on a thread: `stage` then
`commit_staged`); readers use their own connections and never block it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from monitor.store import outbox
from monitor.store.facets import Facets
from monitor.store.faults import as_fault, file_fault, identity
from monitor.store.protocol import (
    DeadLetter,
    MessageRow,
    Publisher,
    Router,
    StorageFault,
    StoreSettings,
    WriteBatch,
    WriteOutcome,
)
from monitor.store.reads import SqliteReads
from monitor.store.schema import migrate
from monitor.store.writer import Writer


class SqliteStore(SqliteReads, outbox.SqliteOutbox):
    """The embedded store: one writer connection, a reader connection per thread."""

    def __init__(self, path: str | Path, settings: StoreSettings | None = None) -> None:
        self.path = str(path)
        self.settings = settings or StoreSettings()
        self._local = threading.local()
        self._write_lock = threading.Lock()
        try:
            self._writer = self._open()
        except (OSError, sqlite3.Error) as exc:
            # One line naming the path, for the start-up error (not a traceback).
            raise StorageFault(f"cannot open the store {self.path}: {exc}") from None
        self._opened = identity(self.path) if self.path != ":memory:" else None
        self._facets = Facets(self._writer)
        self._stop_checkpoints = threading.Event()
        self._checkpointer: threading.Thread | None = None
        # Set by the checkpointer when the WAL has outgrown its limit (see commit_staged).
        self._wal_reset_due = False

    def _open(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        with self._write_lock:
            migrate(conn, self.path)
        return conn

    def check(self) -> str | None:
        """Why writes cannot be durable now (the file removed or replaced), or None."""
        if self.path == ":memory:":
            return None
        return file_fault(self.path, self._opened)

    def start(self) -> None:
        """Start the checkpoint thread (file stores); idempotent."""
        if self.path == ":memory:" or self._checkpointer is not None:
            return
        # Commits only append to the WAL; copying it back into the database file (and its
        # fsyncs) happens on a thread of its own instead of inside every 1000th page's
        # COMMIT. Durability is unchanged: COMMIT still syncs per `synchronous`.
        self._writer.execute("PRAGMA wal_autocheckpoint=0")
        self._stop_checkpoints.clear()
        # Opened here: a data dir removed at once is then a start-up error or a store fault,
        # not a traceback in a thread.
        conn = self._connect()
        self._checkpointer = threading.Thread(
            target=self._checkpoints, args=(conn,), name=f"checkpoint {self.path}", daemon=True
        )
        self._checkpointer.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.settings.synchronous}")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute(f"PRAGMA journal_size_limit={self.settings.wal_size_limit}")
        return conn

    def _checkpoints(self, conn: sqlite3.Connection) -> None:
        try:
            limit = self.settings.wal_size_limit // conn.execute("PRAGMA page_size").fetchone()[0]
            while not self._stop_checkpoints.wait(self.settings.checkpoint_interval):
                # PASSIVE never waits for (or blocks) the writer or readers.
                try:
                    _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error:
                    continue  # busy now; the next round catches up
                if frames > limit:
                    self._wal_reset_due = True
        finally:
            conn.close()

    def _reader(self) -> sqlite3.Connection:
        if self.path == ":memory:":
            return self._writer  # one in-memory database: readers share the writer
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
        return conn

    # -- writes ---------------------------------------------------------------------------

    def write(
        self, batches: Sequence[WriteBatch], publish: Publisher | None = None
    ) -> list[WriteOutcome]:
        """Store batches in one transaction (group commit), with the messages `publish`
        makes of their outcomes (kept in `outcome.messages`, to deliver once this returns)."""
        outcomes = self.stage(batches, publish)
        self.commit_staged()
        return outcomes

    def stage(
        self,
        batches: Sequence[WriteBatch],
        publish: Publisher | None = None,
        router: Router | None = None,
    ) -> list[WriteOutcome]:
        """The statements of `write`, in a transaction left open: `commit_staged` must
        follow (from any thread), and no other write starts until it has. `router` queues
        the published messages' deliveries in the same transaction."""
        fault = self.check()
        if fault is not None:
            raise StorageFault(fault)
        self._write_lock.acquire()
        db = self._writer
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                outcomes = [Writer(db, b, self._facets, self.settings).run() for b in batches]
                if publish is not None:
                    for outcome, messages in zip(outcomes, publish(batches, outcomes), strict=True):
                        outcome.messages = messages
                    messages = [m for o in outcomes for m in o.messages]
                    self._keep_messages(messages)
                    if router is not None and messages:
                        deliveries = router.route(messages)
                        if deliveries:
                            outbox.insert(db, deliveries, time.time())
                return outcomes
            except BaseException:
                self._rollback()
                raise
        except BaseException as exc:
            self._write_lock.release()
            self._raise_fault(exc)
            raise

    def probe(self, size: int = 64 * 1024) -> None:
        """Commit a write that needs `size` bytes of new space (then frees them): raises
        StorageFault while the disk is still full or the file gone."""
        fault = self.check()
        if fault is not None:
            raise StorageFault(fault)
        with self._write_lock:
            db = self._writer
            try:
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT INTO counters VALUES ('store.probe', zeroblob(?))", (size,))
                db.execute("DELETE FROM counters WHERE name = 'store.probe'")
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                self._raise_fault(exc)
                raise

    def _raise_fault(self, exc: BaseException) -> None:
        fault = as_fault(exc, self.path)
        if fault is not None:
            raise fault from exc

    def _keep_messages(self, messages: list[MessageRow]) -> None:
        if not messages:
            return
        db = self._writer
        db.executemany("INSERT INTO messages VALUES (?,?,?,?,?)", [m.row() for m in messages])
        # The high-water mark survives pruning of the messages table.
        db.execute(
            "INSERT INTO counters VALUES ('hub.seq', ?) "
            "ON CONFLICT(name) DO UPDATE SET value = MAX(value, excluded.value)",
            (messages[-1].seq,),
        )

    def commit_staged(self) -> None:
        """Make what `stage` wrote durable (COMMIT syncs per `synchronous`); on failure
        nothing of it is kept."""
        try:
            self._writer.execute("COMMIT")
        except BaseException as exc:
            self._rollback()
            self._raise_fault(exc)
            raise
        else:
            if self._wal_reset_due:
                self._finish_checkpoint()
        finally:
            self._write_lock.release()

    def _finish_checkpoint(self) -> None:
        """Copy the last frames of a large WAL back while no write is open.

        SQLite starts the WAL over only when a write begins after every frame has been
        copied back. Under a steady stream of commits the checkpointer never sees that
        moment, and the WAL (and the cost of every page lookup in it) grows without end.
        The checkpointer has copied nearly all of it already, so this copies only what the
        last commits added, and the next write starts the WAL over.
        """
        self._wal_reset_due = False
        with contextlib.suppress(sqlite3.Error):  # a reader in the way: the next round
            self._writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def _rollback(self) -> None:
        db = self._writer
        if db.in_transaction:
            db.execute("ROLLBACK")
        self._facets = Facets(db)  # forget facets the rolled-back work added

    def put_noise(self, kind: str, item_id: str, body: dict[str, Any]) -> None:
        """Keep (or replace) one noise control item, durably, before it takes effect."""
        self._write_one(
            "INSERT INTO noise VALUES (?,?,?) ON CONFLICT (kind, id) DO UPDATE"
            " SET body = excluded.body",
            (kind, item_id, orjson.dumps(body)),
        )

    def delete_noise(self, kind: str, item_id: str) -> bool:
        """Forget one noise control item; False if there was none."""
        return self._write_one("DELETE FROM noise WHERE kind = ? AND id = ?", (kind, item_id)) > 0

    def _write_one(self, sql: str, args: tuple[Any, ...]) -> int:
        with self._write_lock:
            db = self._writer
            db.execute("BEGIN IMMEDIATE")
            try:
                count = db.execute(sql, args).rowcount
                db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        return count

    def dead_letter(self, letter: DeadLetter) -> bool:
        """Keep a poison record (its first MiB) with its reason; False if already kept."""
        [outcome] = self.write([WriteBatch(dead_letters=[letter])])
        return outcome.dead_lettered > 0

    def close(self) -> None:
        """Stop the checkpoint thread and close the connections."""
        if self._checkpointer is not None:
            self._stop_checkpoints.set()
            self._checkpointer.join()
            self._checkpointer = None
        with self._write_lock:
            self._writer.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
