"""Durable storage of events, alerts, drifts, their lifecycle and hub messages (SQLite, WAL).

`Store` is the interface a PostgreSQL backend would implement; `SqliteStore` is the embedded
default. Writes are idempotent on ids (at-least-once in, exactly-once out) and happen in one
writer with group commit (statements on the event loop, COMMIT on a thread: `stage` then
`commit_staged`); readers use their own connections and never block it.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Protocol

import orjson

from monitor.hub import Message
from monitor.jsondiff import json_diff
from monitor.types import ChangeEvent, Drift, FalcoAlert

SCHEMA_VERSION = 4
STATUSES = ("detected", "investigating", "resolved")
# Forward moves only: detected -> investigating -> resolved (or straight to resolved).
TRANSITIONS = {
    "detected": {"investigating", "resolved"},
    "investigating": {"resolved"},
    "resolved": set(),
}
DRIFT_TYPES = ("configuration", "security", "compliance")
_SECURITY = {"iam", "network", "encryption"}
_COMPLIANCE = {"logging", "monitoring"}
# Single-column filters whose totals are kept as counters (COUNT(*) over a million rows is
# too slow for a page request).
COUNTED = ("severity", "status", "kind", "drift_type", "provider", "resource_type", "actor")
# A drift's facet: its combination of these (a few hundred distinct), counted per block of
# drift numbers and per event day so multi-filter totals and deep pages need no row scan.
FACET_COLS = ("severity", "status", "kind", "drift_type", "provider", "resource_type")
BLOCK_BITS = 14  # facet_counts block: 16,384 consecutive drift numbers
DEEP_OFFSET = 20_000  # rows an OFFSET walk may skip before the block counts are cheaper
# The WAL is checkpointed off the writer's commit path, by a background thread, this often;
# a checkpointed WAL is truncated back to this size.
CHECKPOINT_INTERVAL = 1.0
WAL_SIZE_LIMIT = 64 * 1024 * 1024

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE events (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, time TEXT NOT NULL, received_at TEXT NOT NULL,
        provider TEXT, severity TEXT, name TEXT, source TEXT, actor TEXT, body BLOB NOT NULL
    );
    CREATE INDEX events_time ON events(time);
    CREATE INDEX events_kind_sev ON events(severity, provider);
    CREATE TABLE drifts (
        n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, event_id TEXT NOT NULL,
        kind TEXT NOT NULL, severity TEXT NOT NULL, category TEXT, provider TEXT,
        resource_type TEXT, resource_id TEXT, resource_address TEXT, field TEXT, actor TEXT,
        status TEXT NOT NULL, event_time TEXT NOT NULL, detected_at TEXT NOT NULL,
        body BLOB NOT NULL
    );
    CREATE INDEX drifts_severity ON drifts(severity, n);
    CREATE INDEX drifts_type ON drifts(resource_type, n);
    CREATE INDEX drifts_status ON drifts(status, n);
    CREATE INDEX drifts_kind ON drifts(kind, n);
    CREATE INDEX drifts_resource ON drifts(resource_id, n);
    CREATE INDEX drifts_event ON drifts(event_id);
    CREATE INDEX drifts_time ON drifts(event_time);
    CREATE TABLE messages (
        seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, type TEXT NOT NULL, ts TEXT NOT NULL,
        body BLOB NOT NULL
    );
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)
    """,
    2: """
    ALTER TABLE drifts ADD COLUMN occurrences INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE drifts ADD COLUMN last_seen TEXT;
    ALTER TABLE drifts ADD COLUMN updated_at TEXT;
    ALTER TABLE drifts ADD COLUMN dedup_key TEXT;
    ALTER TABLE drifts ADD COLUMN drift_type TEXT NOT NULL DEFAULT 'configuration';
    UPDATE drifts SET last_seen = event_time, updated_at = detected_at,
        drift_type = CASE WHEN category IN ('iam', 'network', 'encryption') THEN 'security'
                          WHEN category IN ('logging', 'monitoring') THEN 'compliance'
                          ELSE 'configuration' END;
    CREATE INDEX drifts_open ON drifts(dedup_key, status);
    CREATE INDEX drifts_drift_type ON drifts(drift_type, n);
    CREATE INDEX drifts_provider ON drifts(provider, n);
    CREATE INDEX drifts_actor ON drifts(actor, n);
    CREATE INDEX drifts_detected ON drifts(detected_at);
    CREATE INDEX drifts_keys ON drifts(n);
    CREATE TABLE occurrences (
        drift_id TEXT PRIMARY KEY, parent TEXT NOT NULL, event_id TEXT NOT NULL,
        seen_at TEXT NOT NULL
    );
    CREATE INDEX occurrences_parent ON occurrences(parent);
    CREATE TABLE baselines (
        key TEXT PRIMARY KEY, value BLOB NOT NULL, state_value BLOB NOT NULL,
        drift_id TEXT NOT NULL, captured_at TEXT NOT NULL
    );
    CREATE TABLE history (
        drift_id TEXT NOT NULL, at TEXT NOT NULL, from_status TEXT, to_status TEXT NOT NULL,
        note TEXT
    );
    CREATE INDEX history_drift ON history(drift_id);
    CREATE INDEX events_received ON events(received_at)
    """,
    3: """
    CREATE TABLE dead_letters (
        n INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL, topic TEXT NOT NULL,
        partition INTEGER NOT NULL, "offset" INTEGER NOT NULL, key BLOB, value BLOB,
        value_size INTEGER NOT NULL, reason TEXT NOT NULL, at TEXT NOT NULL,
        UNIQUE (source, topic, partition, "offset")
    )
    """,
    4: """
    CREATE TABLE facets (
        id INTEGER PRIMARY KEY, severity TEXT NOT NULL, status TEXT NOT NULL,
        kind TEXT NOT NULL, drift_type TEXT NOT NULL, provider TEXT NOT NULL,
        resource_type TEXT NOT NULL,
        UNIQUE (severity, status, kind, drift_type, provider, resource_type)
    );
    INSERT INTO facets (severity, status, kind, drift_type, provider, resource_type)
        SELECT DISTINCT severity, status, kind, drift_type, IFNULL(provider, ''),
            IFNULL(resource_type, '') FROM drifts;
    ALTER TABLE drifts ADD COLUMN facet INTEGER;
    UPDATE drifts SET facet = (SELECT id FROM facets f WHERE f.severity = drifts.severity
        AND f.status = drifts.status AND f.kind = drifts.kind
        AND f.drift_type = drifts.drift_type AND f.provider = IFNULL(drifts.provider, '')
        AND f.resource_type = IFNULL(drifts.resource_type, ''));
    CREATE TABLE facet_counts (
        facet INTEGER NOT NULL, block INTEGER NOT NULL, day TEXT NOT NULL,
        count INTEGER NOT NULL, PRIMARY KEY (facet, block, day)
    ) WITHOUT ROWID;
    INSERT INTO facet_counts SELECT facet, n >> 14, substr(event_time, 1, 10), COUNT(*)
        FROM drifts GROUP BY 1, 2, 3;
    CREATE TABLE day_counts (
        block INTEGER NOT NULL, day TEXT NOT NULL, count INTEGER NOT NULL,
        PRIMARY KEY (block, day)
    ) WITHOUT ROWID;
    INSERT INTO day_counts SELECT n >> 14, substr(event_time, 1, 10), COUNT(*)
        FROM drifts GROUP BY 1, 2;
    CREATE INDEX drifts_scan ON drifts(n, facet, actor, event_time);
    DROP INDEX drifts_time;
    CREATE INDEX drifts_time ON drifts(event_time, facet, actor);
    DROP INDEX drifts_actor;
    CREATE INDEX drifts_actor ON drifts(actor, n, facet, event_time);
    DELETE FROM counters WHERE name LIKE 'drifts.actor.%';
    INSERT INTO counters SELECT 'drifts.actor.' || actor, COUNT(*) FROM drifts
        WHERE actor IS NOT NULL GROUP BY actor
    """,
}


def drift_type(category: str | None) -> str:
    """configuration | security | compliance, from the rule category."""
    if category in _SECURITY:
        return "security"
    if category in _COMPLIANCE:
        return "compliance"
    return "configuration"


def _canon(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def baseline_key(d: Drift) -> str:
    target = d.field if d.field is not None else f"event:{d.event_name}"
    return f"{d.provider}|{d.resource_type}|{d.resource_id}|{target}"


def dedup_key(d: Drift) -> str:
    digest = hashlib.blake2b(_canon(d.new_value), digest_size=12).hexdigest()
    return f"{d.kind.value}|{baseline_key(d)}|{digest}"


class LifecycleError(Exception):
    """A refused status change; `code` is the API error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """A hub message to store and publish if its key (a drift or alert id) is new."""

    topic: str
    type: str
    payload: dict[str, Any]
    key: str | None = None


@dataclass(frozen=True, slots=True)
class StatusChange:
    drift_id: str
    status: str
    note: str | None = None
    capture_baseline: bool = False


@dataclass(frozen=True, slots=True)
class Retention:
    """Limits for the pruner; None means no limit of that kind."""

    event_max_age: str | None = None  # ISO time: events received before this go
    event_max_rows: int | None = None
    resolved_max_age: str | None = None  # resolved drifts older than this go
    drift_max_rows: int | None = None  # oldest resolved first, then oldest
    message_max_rows: int | None = None
    chunk: int = 5000


@dataclass
class WriteBatch:
    """What one ingest (or one API action) produced; written in one transaction."""

    events: list[tuple[ChangeEvent, str]] = field(default_factory=list)  # (event, severity)
    alerts: list[FalcoAlert] = field(default_factory=list)
    drifts: list[Drift] = field(default_factory=list)
    messages: list[PendingMessage] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    status_changes: list[StatusChange] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    retention: Retention | None = None
    received_at: str = ""


@dataclass
class WriteOutcome:
    new_drifts: set[str] = field(default_factory=set)
    merged_drifts: set[str] = field(default_factory=set)  # flood control: occurrence added
    suppressed_drifts: set[str] = field(default_factory=set)  # matched an accepted baseline
    new_alerts: set[str] = field(default_factory=set)
    messages: list[Message] = field(default_factory=list)
    status_results: list[dict[str, Any] | LifecycleError] = field(default_factory=list)
    pruned: dict[str, int] = field(default_factory=dict)
    dead_lettered: int = 0  # dead letters not kept before


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record a source could not decode, kept with its reason (never blocks its stream)."""

    source: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    at: str


DEAD_LETTER_MAX_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class DriftFilter:
    severity: str | None = None
    resource_type: str | None = None
    kind: str | None = None
    status: str | None = None
    actor: str | None = None
    provider: str | None = None
    resource_id: str | None = None
    drift_type: str | None = None
    since: str | None = None
    until: str | None = None


@dataclass(frozen=True, slots=True)
class EventFilter:
    severity: str | None = None
    provider: str | None = None
    kind: str | None = None
    since: str | None = None
    until: str | None = None


class Store(Protocol):
    """What the daemon needs from storage. Methods block; callers run reads off the loop.

    A write is `stage` (the statements, in a transaction left open) then `commit_staged`
    (which makes it durable and may run on another thread); `write` does both.
    """

    def write(
        self, batches: Sequence[WriteBatch], next_seq: Callable[[], int]
    ) -> list[WriteOutcome]: ...
    def stage(
        self, batches: Sequence[WriteBatch], next_seq: Callable[[], int]
    ) -> list[WriteOutcome]: ...
    def commit_staged(self) -> None: ...
    def drifts(self, f: DriftFilter, page: int, limit: int) -> tuple[list[dict[str, Any]], int]: ...
    def drift(self, drift_id: str) -> dict[str, Any] | None: ...
    def drift_detail(self, drift_id: str) -> dict[str, Any] | None: ...
    def drifts_for_event(self, event_id: str) -> list[dict[str, Any]]: ...
    def summary(self) -> dict[str, Any]: ...
    def events(self, f: EventFilter, page: int, limit: int) -> tuple[list[dict[str, Any]], int]: ...
    def event(self, event_id: str) -> dict[str, Any] | None: ...
    def events_since(self, since: str) -> int: ...
    def related_events(self, drift: dict[str, Any], limit: int) -> list[dict[str, Any]]: ...
    def messages_since(
        self, seq: int, topics: Iterable[str], limit: int
    ) -> list[tuple[int, str, str, str, bytes]]: ...
    def last_seq(self) -> int: ...
    def counters(self) -> dict[str, int]: ...
    def dead_letter(self, letter: DeadLetter) -> bool: ...
    def dead_letters(self, page: int, limit: int) -> tuple[list[dict[str, Any]], int]: ...
    def counts(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


class SqliteStore:
    """The embedded store: one writer connection, a reader connection per thread."""

    def __init__(self, path: str | Path, synchronous: str = "FULL") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.synchronous = synchronous
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._writer = self._connect()
        self._migrate()
        self._facets = _Facets(self._writer)
        self._stop_checkpoints = threading.Event()
        self._checkpointer: threading.Thread | None = None
        # Set by the checkpointer when the WAL has outgrown WAL_SIZE_LIMIT (see commit_staged).
        self._wal_reset_due = False
        if self.path != ":memory:":
            # Commits only append to the WAL; copying it back into the database file (and
            # its fsyncs) happens on a thread of its own instead of inside every 1000th
            # page's COMMIT. Durability is unchanged: COMMIT still syncs per `synchronous`.
            self._writer.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = threading.Thread(
                target=self._checkpoints, name=f"checkpoint {self.path}", daemon=True
            )
            self._checkpointer.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        return conn

    def _checkpoints(self) -> None:
        conn = self._connect()
        try:
            limit = WAL_SIZE_LIMIT // conn.execute("PRAGMA page_size").fetchone()[0]
            while not self._stop_checkpoints.wait(CHECKPOINT_INTERVAL):
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

    def _migrate(self) -> None:
        with self._write_lock:
            db = self._writer
            current = db.execute("PRAGMA user_version").fetchone()[0]
            if current > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path}: store schema {current} is newer than this Driftline "
                    f"({SCHEMA_VERSION}); upgrade Driftline"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                db.execute("BEGIN IMMEDIATE")
                try:
                    for stmt in MIGRATIONS[version].split(";"):
                        if stmt.strip():
                            db.execute(stmt)
                    if version == 2:
                        self._rebuild_counters(db)
                    db.execute(f"PRAGMA user_version={version}")
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise

    @staticmethod
    def _rebuild_counters(db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM counters WHERE name LIKE 'drifts.%' OR name LIKE 'events.%'")
        db.execute("INSERT INTO counters SELECT 'drifts.total', COUNT(*) FROM drifts")
        for col in COUNTED:
            db.execute(
                f"INSERT INTO counters SELECT 'drifts.{col}.' || {col}, COUNT(*) "
                f"FROM drifts WHERE {col} IS NOT NULL GROUP BY {col}"
            )
        db.execute("INSERT INTO counters SELECT 'events.total', COUNT(*) FROM events")
        db.execute(
            "INSERT INTO counters SELECT 'events.kind.' || kind, COUNT(*) FROM events GROUP BY kind"
        )

    # -- writes ---------------------------------------------------------------------------

    def write(
        self, batches: Sequence[WriteBatch], next_seq: Callable[[], int]
    ) -> list[WriteOutcome]:
        """Store batches in one transaction (group commit). Messages get sequence numbers
        from `next_seq` and are stored with them; they are returned, in order, to be
        published once this returns."""
        outcomes = self.stage(batches, next_seq)
        self.commit_staged()
        return outcomes

    def stage(
        self, batches: Sequence[WriteBatch], next_seq: Callable[[], int]
    ) -> list[WriteOutcome]:
        """The statements of `write`, in a transaction left open: `commit_staged` must
        follow (from any thread), and no other write starts until it has."""
        self._write_lock.acquire()
        db = self._writer
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                return [_Writer(db, b, next_seq, self._facets).run() for b in batches]
            except BaseException:
                self._rollback()
                raise
        except BaseException:
            self._write_lock.release()
            raise

    def commit_staged(self) -> None:
        """Make what `stage` wrote durable (COMMIT syncs per `synchronous`); on failure
        nothing of it is kept."""
        try:
            self._writer.execute("COMMIT")
        except BaseException:
            self._rollback()
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
        self._facets = _Facets(db)  # forget facets the rolled-back work added

    # -- reads ----------------------------------------------------------------------------

    def drifts(self, f: DriftFilter, page: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        db = self._reader()
        if self.path == ":memory:":
            with self._write_lock:  # one shared connection: no snapshot of its own
                return self._drifts(db, f, page, limit)
        # One read transaction: the total and the page come from the same snapshot.
        db.execute("BEGIN")
        try:
            return self._drifts(db, f, page, limit)
        finally:
            db.execute("COMMIT")

    def _drifts(
        self, db: sqlite3.Connection, f: DriftFilter, page: int, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        offset = (page - 1) * limit
        eqs = {c: getattr(f, c) for c in FACET_COLS if getattr(f, c) is not None}
        timed = f.since is not None or f.until is not None
        keys: list[int]
        if f.resource_id is not None:  # selective by nature: its own index narrows enough
            where, args = _drift_where(f)
            total = int(db.execute(f"SELECT COUNT(*) FROM drifts{where}", args).fetchone()[0])
            keys = _offset_keys(db, "", where, args, total, offset, limit)
        elif f.actor is not None:
            where, args = _facet_where(db, f, eqs)
            if not eqs and not timed:
                total = _counter(db, f"drifts.actor.{f.actor}")
            else:
                total = int(
                    db.execute(
                        f"SELECT COUNT(*) FROM drifts INDEXED BY drifts_actor{where}", args
                    ).fetchone()[0]
                )
            keys = _offset_keys(db, "INDEXED BY drifts_actor", where, args, total, offset, limit)
        elif not (_dated(f.since) and _dated(f.until)):  # not ISO: the day counts can't help
            where, args = _drift_where(f)
            total = int(db.execute(f"SELECT COUNT(*) FROM drifts{where}", args).fetchone()[0])
            keys = _offset_keys(db, "", where, args, total, offset, limit)
        elif not timed and len(eqs) <= 1:
            where, args = _drift_where(f)
            if eqs:
                col, value = next(iter(eqs.items()))
                total = _counter(db, f"drifts.{col}.{value}")
            else:
                total = _counter(db, "drifts.total")
            if not eqs and min(offset, total - offset) > DEEP_OFFSET:
                # Deep into everything: the (small) per-block day counts say where to start.
                keys = _located_keys(db, "", [], _block_counts(db, f, eqs), offset, limit)
            else:
                keys = _offset_keys(db, "", where, args, total, offset, limit)
        else:
            blocks = _block_counts(db, f, eqs)
            total = sum(c for _, c in blocks)
            where, args = _facet_where(db, f, eqs)
            keys = _located_keys(db, where, args, blocks, offset, limit)
        if not keys:
            return [], total
        marks = ",".join("?" * len(keys))
        rows = db.execute(f"SELECT n, {_DRIFT_COLS} FROM drifts WHERE n IN ({marks})", keys)
        by_n = {r[0]: _drift_row(r[1:]) for r in rows}
        return [by_n[n] for n in keys if n in by_n], total

    def drift(self, drift_id: str) -> dict[str, Any] | None:
        row = (
            self._reader()
            .execute(f"SELECT {_DRIFT_COLS} FROM drifts WHERE id = ?", (drift_id,))
            .fetchone()
        )
        return _drift_row(row) if row else None

    def drift_detail(self, drift_id: str) -> dict[str, Any] | None:
        """A drift with its baseline, a JSON diff baseline -> current, occurrences, history."""
        d = self.drift(drift_id)
        if d is None:
            return None
        db = self._reader()
        target = d["field"] if d["field"] is not None else f"event:{d['event_name']}"
        key = f"{d['provider']}|{d['resource_type']}|{d['resource_id']}|{target}"
        row = db.execute(
            "SELECT value, captured_at, drift_id FROM baselines WHERE key = ?", (key,)
        ).fetchone()
        if row and row[2] != drift_id:
            baseline = orjson.loads(row[0])
            d["baseline"] = {
                "source": "accepted",
                "value": baseline,
                "captured_at": row[1],
                "from_drift": row[2],
            }
        else:
            baseline = d["old_value"]
            d["baseline"] = {"source": "terraform_state", "value": baseline}
        d["baseline_value"] = baseline
        d["current_value"] = d["new_value"]
        d["diff"] = json_diff(baseline, d["new_value"])
        d["history"] = [
            {"at": at, "from": frm, "to": to, "note": note}
            for at, frm, to, note in db.execute(
                "SELECT at, from_status, to_status, note FROM history WHERE drift_id = ? "
                "ORDER BY rowid",
                (drift_id,),
            )
        ]
        d["occurrence_events"] = [d["event_id"]] + [
            r[0]
            for r in db.execute(
                "SELECT event_id FROM occurrences WHERE parent = ? ORDER BY seen_at LIMIT 100",
                (drift_id,),
            )
        ]
        return d

    def drifts_for_event(self, event_id: str) -> list[dict[str, Any]]:
        db = self._reader()
        rows = db.execute(
            f"SELECT {_DRIFT_COLS} FROM drifts WHERE event_id = ? ORDER BY n", (event_id,)
        ).fetchall()
        out = [_drift_row(r) for r in rows]
        merged = db.execute(
            f"SELECT {_DRIFT_COLS} FROM drifts WHERE id IN "
            "(SELECT parent FROM occurrences WHERE event_id = ?)",
            (event_id,),
        ).fetchall()
        out.extend(_drift_row(r) for r in merged)
        return out

    def summary(self) -> dict[str, Any]:
        c = self.counters()
        return {
            "total": c.get("drifts.total", 0),
            "by_severity": {
                s: c.get(f"drifts.severity.{s}", 0) for s in ("critical", "high", "medium", "low")
            },
            "by_status": {s: c.get(f"drifts.status.{s}", 0) for s in STATUSES},
            "by_type": {t: c.get(f"drifts.drift_type.{t}", 0) for t in DRIFT_TYPES},
        }

    def events(self, f: EventFilter, page: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        clauses, args = [], []
        for col, value in (("severity", f.severity), ("provider", f.provider), ("kind", f.kind)):
            if value is not None:
                clauses.append(f"{col} = ?")
                args.append(value)
        if f.since:
            clauses.append("time >= ?")
            args.append(f.since)
        if f.until:
            clauses.append("time <= ?")
            args.append(f.until)
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        db = self._reader()
        if not clauses:
            row = db.execute("SELECT value FROM counters WHERE name = 'events.total'").fetchone()
            total = int(row[0]) if row else 0
        elif clauses == ["kind = ?"]:
            row = db.execute(
                "SELECT value FROM counters WHERE name = ?", (f"events.kind.{f.kind}",)
            ).fetchone()
            total = int(row[0]) if row else 0
        else:
            total = db.execute(f"SELECT COUNT(*) FROM events{where}", args).fetchone()[0]
        rows = db.execute(
            f"SELECT body FROM events{where} ORDER BY time DESC, id LIMIT ? OFFSET ?",
            [*args, limit, (page - 1) * limit],
        ).fetchall()
        return [orjson.loads(r[0]) for r in rows], total

    def event(self, event_id: str) -> dict[str, Any] | None:
        row = self._reader().execute("SELECT body FROM events WHERE id = ?", (event_id,)).fetchone()
        return orjson.loads(row[0]) if row else None

    def events_since(self, since: str) -> int:
        row = (
            self._reader()
            .execute("SELECT COUNT(*) FROM events WHERE time >= ?", (since,))
            .fetchone()
        )
        return int(row[0])

    def related_events(self, drift: dict[str, Any], limit: int = 20) -> list[dict[str, Any]]:
        """The drift's own event and its repeat occurrences, then other events that drifted
        the same resource, newest first."""
        db = self._reader()
        ids = [drift["event_id"]]
        ids.extend(
            r[0]
            for r in db.execute(
                "SELECT event_id FROM occurrences WHERE parent = ? ORDER BY seen_at DESC LIMIT ?",
                (drift["id"], limit),
            )
        )
        ids.extend(
            r[0]
            for r in db.execute(
                "SELECT DISTINCT event_id FROM drifts WHERE resource_id = ? AND id != ?"
                " ORDER BY n DESC LIMIT ?",
                (drift["resource_id"], drift["id"], limit),
            )
        )
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for eid in ids:
            if eid in seen or len(out) >= limit:
                continue
            seen.add(eid)
            ev = self.event(eid)
            if ev is not None:
                out.append(ev)
        return out

    def messages_since(
        self, seq: int, topics: Iterable[str], limit: int = 1000
    ) -> list[tuple[int, str, str, str, bytes]]:
        topic_list = list(topics)
        marks = ",".join("?" * len(topic_list))
        return list(
            self._reader().execute(
                "SELECT seq, topic, type, ts, body FROM messages"
                f" WHERE seq > ? AND topic IN ({marks}) ORDER BY seq LIMIT ?",
                [seq, *topic_list, limit],
            )
        )

    def last_seq(self) -> int:
        db = self._reader()
        row = db.execute("SELECT MAX(seq) FROM messages").fetchone()
        mark = db.execute("SELECT value FROM counters WHERE name = 'hub.seq'").fetchone()
        return max(int(row[0] or 0), int(mark[0]) if mark else 0)

    def dead_letter(self, letter: DeadLetter) -> bool:
        """Keep a poison record (its first MiB) with its reason; False if already kept."""
        [outcome] = self.write([WriteBatch(dead_letters=[letter])], lambda: 0)
        return outcome.dead_lettered > 0

    def dead_letters(self, page: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        db = self._reader()
        total = db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
        rows = db.execute(
            'SELECT source, topic, partition, "offset", key, value, value_size, reason, at '
            "FROM dead_letters ORDER BY n DESC LIMIT ? OFFSET ?",
            (limit, (page - 1) * limit),
        ).fetchall()
        out = []
        for source, topic, partition, offset, key, value, size, reason, at in rows:
            out.append(
                {
                    "source": source,
                    "topic": topic,
                    "partition": partition,
                    "offset": offset,
                    "key": key.decode("utf-8", "replace") if key is not None else None,
                    "value_preview": (value or b"")[:4096].decode("utf-8", "replace"),
                    "value_size": size,
                    "reason": reason,
                    "at": at,
                }
            )
        return out, int(total)

    def counters(self) -> dict[str, int]:
        return {
            name: int(value)
            for name, value in self._reader().execute("SELECT name, value FROM counters")
        }

    def counts(self) -> dict[str, Any]:
        c = self.counters()

        def group(prefix: str) -> dict[str, int]:
            return {k[len(prefix) :]: v for k, v in c.items() if k.startswith(prefix) and v}

        types = sorted(group("drifts.resource_type.").items(), key=lambda kv: (-kv[1], kv[0]))
        return {
            "drifts_total": c.get("drifts.total", 0),
            "drifts_by_severity": group("drifts.severity."),
            "drifts_by_kind": group("drifts.kind."),
            "drifts_by_status": group("drifts.status."),
            "drifts_by_type": group("drifts.drift_type."),
            "top_resource_types": [{"type": t, "count": n} for t, n in types[:10]],
            "events_total": c.get("events.total", 0),
            "events_by_kind": group("events.kind."),
            "ingest": group("ingest."),
        }

    def close(self) -> None:
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


_DRIFT_COLS = "body, status, occurrences, last_seen, updated_at, drift_type"


class _Writer:
    """One batch inside the writer's transaction."""

    def __init__(
        self,
        db: sqlite3.Connection,
        batch: WriteBatch,
        next_seq: Callable[[], int],
        facets: _Facets,
    ) -> None:
        self.db = db
        self.batch = batch
        self.next_seq = next_seq
        self.facets = facets
        self.out = WriteOutcome()
        self.counts: dict[str, int] = dict(batch.counters)
        # (facet, block, day) and (block, day) deltas, written once per batch.
        self.facet_counts: dict[tuple[int, int, str], int] = {}
        self.day_counts: dict[tuple[int, str], int] = {}

    def bump_facet(self, facet: int, n: int, event_time: str, by: int, days: bool) -> None:
        key = (facet, n >> BLOCK_BITS, event_time[:10])
        self.facet_counts[key] = self.facet_counts.get(key, 0) + by
        if days:
            day = key[1:]
            self.day_counts[day] = self.day_counts.get(day, 0) + by

    def bump(self, name: str, by: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + by

    def emit(self, topic: str, type_: str, payload: dict[str, Any]) -> None:
        self.out.messages.append(
            Message(self.next_seq(), topic, type_, self.batch.received_at, payload)
        )

    def run(self) -> WriteOutcome:
        b = self.batch
        self._events()
        for letter in b.dead_letters:
            self._dead_letter(letter)
        for d in b.drifts:
            self._drift(d)
        for change in b.status_changes:
            try:
                self.out.status_results.append(self._status(change))
            except LifecycleError as exc:
                self.out.status_results.append(exc)
        for pm in b.messages:
            if pm.key is None or pm.key in self.out.new_drifts or pm.key in self.out.new_alerts:
                self.emit(pm.topic, pm.type, pm.payload)
        if b.retention is not None:
            self._prune(b.retention)
        if self.out.messages:
            self.db.executemany(
                "INSERT INTO messages VALUES (?,?,?,?,?)", [m.row() for m in self.out.messages]
            )
            self.counts["hub.seq"] = 0  # marker: set below, not added
        self._flush_counters()
        return self.out

    def _dead_letter(self, letter: DeadLetter) -> None:
        value = letter.value or b""
        cur = self.db.execute(
            'INSERT OR IGNORE INTO dead_letters (source, topic, partition, "offset", key,'
            " value, value_size, reason, at) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                letter.source,
                letter.topic,
                letter.partition,
                letter.offset,
                letter.key,
                value[:DEAD_LETTER_MAX_BYTES],
                len(value),
                letter.reason,
                letter.at,
            ),
        )
        if cur.rowcount:
            self.out.dead_lettered += 1
            self.bump("dead_letters.total")

    def _events(self) -> None:
        b, db = self.batch, self.db
        if b.events:
            # One executemany (a C loop) instead of a call per row: this is the hot insert.
            cur = db.executemany(
                "INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        e.event_id,
                        "cloudtrail",
                        e.event_time,
                        b.received_at,
                        e.provider,
                        sev,
                        e.event_name,
                        e.event_source,
                        e.actor.key,
                        orjson.dumps(_event_body(e, sev)),
                    )
                    for e, sev in b.events
                ],
            )
            if cur.rowcount > 0:
                self.bump("events.total", cur.rowcount)
                self.bump("events.kind.cloudtrail", cur.rowcount)
        for a in b.alerts:
            cur = db.execute(
                "INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    a.id,
                    "falco",
                    a.time,
                    b.received_at,
                    _alert_provider(a),
                    a.severity,
                    a.rule,
                    a.source,
                    a.hostname,
                    orjson.dumps(_alert_body(a)),
                ),
            )
            if cur.rowcount:
                self.out.new_alerts.add(a.id)
                self.bump("events.total")
                self.bump("events.kind.falco")

    def _drift(self, d: Drift) -> None:
        db = self.db
        if db.execute(
            "SELECT 1 FROM drifts WHERE id = ? UNION ALL "
            "SELECT 1 FROM occurrences WHERE drift_id = ?",
            (d.id, d.id),
        ).fetchone():
            return  # redelivered input: already stored (or merged, or suppressed)
        base = db.execute(
            "SELECT value, state_value FROM baselines WHERE key = ?", (baseline_key(d),)
        ).fetchone()
        if base is not None and base[0] == _canon(d.new_value) and base[1] == _canon(d.old_value):
            db.execute(
                "INSERT INTO occurrences VALUES (?,?,?,?)",
                (d.id, "baseline:" + baseline_key(d), d.event_id, d.event_time),
            )
            self.out.suppressed_drifts.add(d.id)
            self.bump("drifts.suppressed")
            return
        key = dedup_key(d)
        open_row = db.execute(
            "SELECT id, occurrences, last_seen FROM drifts WHERE dedup_key = ? AND status != "
            "'resolved' ORDER BY n DESC LIMIT 1",
            (key,),
        ).fetchone()
        if open_row is not None:
            parent, count, last = open_row
            last_seen = max(last or "", d.event_time)
            db.execute(
                "UPDATE drifts SET occurrences = occurrences + 1, last_seen = ?, "
                "updated_at = ? WHERE id = ?",
                (last_seen, d.detected_at, parent),
            )
            db.execute(
                "INSERT INTO occurrences VALUES (?,?,?,?)", (d.id, parent, d.event_id, d.event_time)
            )
            self.out.merged_drifts.add(parent)
            self.bump("drifts.merged")
            self.emit(
                "drifts",
                "drift_update",
                {
                    "id": parent,
                    "occurrences": count + 1,
                    "last_seen": last_seen,
                    "event_id": d.event_id,
                },
            )
            return
        dtype = drift_type(d.category)
        facet = self.facets.id(
            db, (d.severity, d.status, d.kind.value, dtype, d.provider or "", d.resource_type or "")
        )
        actor = d.actor.user_name or d.actor.key
        cur = db.execute(
            "INSERT INTO drifts (id, event_id, kind, severity, category, provider,"
            " resource_type, resource_id, resource_address, field, actor, status, event_time,"
            " detected_at, body, occurrences, last_seen, updated_at, dedup_key, drift_type,"
            " facet) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,1,?,?,?,?,?)",
            (
                d.id,
                d.event_id,
                d.kind.value,
                d.severity,
                d.category,
                d.provider,
                d.resource_type,
                d.resource_id,
                d.resource_address,
                d.field,
                actor,
                d.status,
                d.event_time,
                d.detected_at,
                orjson.dumps(d.as_dict()),
                d.event_time,
                d.detected_at,
                key,
                dtype,
                facet,
            ),
        )
        self.bump_facet(facet, cur.lastrowid or 0, d.event_time, 1, days=True)
        self.out.new_drifts.add(d.id)
        self.bump("drifts.total")
        for col, value in (
            ("severity", d.severity),
            ("status", d.status),
            ("kind", d.kind.value),
            ("drift_type", dtype),
            ("provider", d.provider),
            ("resource_type", d.resource_type),
            ("actor", actor),
        ):
            self.bump(f"drifts.{col}.{value}")

    def _status(self, change: StatusChange) -> dict[str, Any]:
        db = self.db
        row = db.execute(
            f"SELECT {_DRIFT_COLS}, n, facet, event_time FROM drifts WHERE id = ?",
            (change.drift_id,),
        ).fetchone()
        if row is None:
            raise LifecycleError("NOT_FOUND", f"Drift with ID '{change.drift_id}' not found")
        n, old_facet, event_time = row[-3:]
        current = _drift_row(row[:-3])
        old = current["status"]
        if change.status not in STATUSES:
            raise LifecycleError("VALIDATION_ERROR", f"status must be one of {', '.join(STATUSES)}")
        if change.status not in TRANSITIONS[old]:
            allowed = ", ".join(sorted(TRANSITIONS[old])) or "none (resolved is final)"
            raise LifecycleError(
                "CONFLICT",
                f"cannot move drift {change.drift_id} from "
                f"{old} to {change.status}; allowed: {allowed}",
            )
        at = self.batch.received_at
        values = list(self.facets.values[old_facet])
        values[FACET_COLS.index("status")] = change.status
        new_facet = self.facets.id(db, tuple(values))
        db.execute(
            "UPDATE drifts SET status = ?, updated_at = ?, facet = ? WHERE id = ?",
            (change.status, at, new_facet, change.drift_id),
        )
        self.bump_facet(old_facet, n, event_time, -1, days=False)
        self.bump_facet(new_facet, n, event_time, 1, days=False)
        db.execute(
            "INSERT INTO history VALUES (?,?,?,?,?)",
            (change.drift_id, at, old, change.status, change.note),
        )
        self.bump(f"drifts.status.{old}", -1)
        self.bump(f"drifts.status.{change.status}")
        current["status"] = change.status
        current["updated_at"] = at
        if change.capture_baseline:
            target = (
                current["field"]
                if current["field"] is not None
                else (f"event:{current['event_name']}")
            )
            key = (
                f"{current['provider']}|{current['resource_type']}|"
                f"{current['resource_id']}|{target}"
            )
            db.execute(
                "INSERT OR REPLACE INTO baselines VALUES (?,?,?,?,?)",
                (
                    key,
                    _canon(current["new_value"]),
                    _canon(current["old_value"]),
                    change.drift_id,
                    at,
                ),
            )
            current["baseline_captured"] = True
        self.emit(
            "drifts",
            "drift_update",
            {
                "id": change.drift_id,
                "status": change.status,
                "previous_status": old,
                "updated_at": at,
                "baseline_captured": change.capture_baseline,
            },
        )
        return current

    def _prune(self, r: Retention) -> None:
        db = self.db
        pruned = self.out.pruned
        if r.event_max_age:
            self._delete_events("received_at < ?", (r.event_max_age,), r.chunk, pruned)
        if r.event_max_rows is not None:
            total = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            extra = total - r.event_max_rows
            if extra > 0:
                self._delete_events(
                    "id IN (SELECT id FROM events ORDER BY received_at, time LIMIT ?)",
                    (min(extra, r.chunk),),
                    r.chunk,
                    pruned,
                )
        if r.resolved_max_age:
            self._delete_drifts(
                "status = 'resolved' AND updated_at < ?", (r.resolved_max_age,), r.chunk, pruned
            )
        if r.drift_max_rows is not None:
            total = db.execute("SELECT COUNT(*) FROM drifts").fetchone()[0]
            extra = min(total - r.drift_max_rows, r.chunk)
            if extra > 0:
                self._delete_drifts(
                    "n IN (SELECT n FROM drifts ORDER BY status = 'resolved' DESC, n LIMIT ?)",
                    (extra,),
                    r.chunk,
                    pruned,
                )
        if r.message_max_rows is not None:
            cur = db.execute(
                "DELETE FROM messages WHERE seq <= (SELECT MAX(seq) FROM messages) - ?",
                (r.message_max_rows,),
            )
            pruned["messages"] = pruned.get("messages", 0) + cur.rowcount

    def _delete_events(
        self, where: str, args: tuple[Any, ...], chunk: int, pruned: dict[str, int]
    ) -> None:
        rows = self.db.execute(
            f"SELECT id, kind FROM events WHERE {where} LIMIT ?", (*args, chunk)
        ).fetchall()
        if not rows:
            return
        self.db.executemany("DELETE FROM events WHERE id = ?", [(r[0],) for r in rows])
        self.bump("events.total", -len(rows))
        for _, kind in rows:
            self.bump(f"events.kind.{kind}", -1)
        pruned["events"] = pruned.get("events", 0) + len(rows)

    def _delete_drifts(
        self, where: str, args: tuple[Any, ...], chunk: int, pruned: dict[str, int]
    ) -> None:
        cols = ", ".join(COUNTED)
        full = self.db.execute(
            f"SELECT id, {cols}, n, facet, event_time FROM drifts WHERE {where} LIMIT ?",
            (*args, chunk),
        ).fetchall()
        if not full:
            return
        for row in full:
            self.bump_facet(row[-2], row[-3], row[-1], -1, days=True)
        rows = [row[:-3] for row in full]
        self.db.executemany("DELETE FROM drifts WHERE id = ?", [(r[0],) for r in rows])
        self.db.executemany("DELETE FROM occurrences WHERE parent = ?", [(r[0],) for r in rows])
        self.db.executemany("DELETE FROM history WHERE drift_id = ?", [(r[0],) for r in rows])
        self.bump("drifts.total", -len(rows))
        for row in rows:
            for col, value in zip(COUNTED, row[1:], strict=True):
                self.bump(f"drifts.{col}.{value}", -1)
        pruned["drifts"] = pruned.get("drifts", 0) + len(rows)

    def _flush_counters(self) -> None:
        seq_mark = self.counts.pop("hub.seq", None)
        rows = [(k, v) for k, v in self.counts.items() if v]
        if rows:
            self.db.executemany(
                "INSERT INTO counters VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                rows,
            )
        facet_rows = [(*k, v) for k, v in self.facet_counts.items() if v]
        if facet_rows:
            self.db.executemany(
                "INSERT INTO facet_counts VALUES (?, ?, ?, ?) ON CONFLICT (facet, block, day)"
                " DO UPDATE SET count = count + excluded.count",
                facet_rows,
            )
        day_rows = [(*k, v) for k, v in self.day_counts.items() if v]
        if day_rows:
            self.db.executemany(
                "INSERT INTO day_counts VALUES (?, ?, ?) ON CONFLICT (block, day)"
                " DO UPDATE SET count = count + excluded.count",
                day_rows,
            )
        # Emptied cells (status moves, pruning) go, so the tables stay as small as the data.
        emptied = [r[:3] for r in facet_rows if r[3] < 0]
        if emptied:
            self.db.executemany(
                "DELETE FROM facet_counts WHERE facet = ? AND block = ? AND day = ? AND count = 0",
                emptied,
            )
        emptied_days = [r[:2] for r in day_rows if r[2] < 0]
        if emptied_days:
            self.db.executemany(
                "DELETE FROM day_counts WHERE block = ? AND day = ? AND count = 0", emptied_days
            )
        if seq_mark is not None and self.out.messages:
            self.db.execute(
                "INSERT INTO counters VALUES ('hub.seq', ?) "
                "ON CONFLICT(name) DO UPDATE SET value = MAX(value, excluded.value)",
                (self.out.messages[-1].seq,),
            )


class _Facets:
    """The writer's copy of the (small) facets table: values -> id and id -> values."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.ids: dict[tuple[str, ...], int] = {}
        self.values: dict[int, tuple[str, ...]] = {}
        for row in db.execute(f"SELECT id, {', '.join(FACET_COLS)} FROM facets"):
            self.ids[tuple(row[1:])] = row[0]
            self.values[row[0]] = tuple(row[1:])

    def id(self, db: sqlite3.Connection, values: tuple[str, ...]) -> int:
        """The facet id of these values, added (inside the caller's transaction) if new."""
        found = self.ids.get(values)
        if found is not None:
            return found
        cur = db.execute(
            f"INSERT INTO facets ({', '.join(FACET_COLS)}) VALUES (?,?,?,?,?,?)", values
        )
        new = int(cur.lastrowid or 0)
        self.ids[values] = new
        self.values[new] = values
        return new


def _counter(db: sqlite3.Connection, name: str) -> int:
    row = db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row else 0


def _offset_keys(
    db: sqlite3.Connection,
    hint: str,
    where: str,
    args: list[Any],
    total: int,
    offset: int,
    limit: int,
) -> list[int]:
    """OFFSET paging that walks from whichever end of the set is nearer."""
    if offset >= total:
        return []
    if offset + limit / 2 <= total / 2:
        return [
            r[0]
            for r in db.execute(
                f"SELECT n FROM drifts {hint}{where} ORDER BY n DESC LIMIT ? OFFSET ?",
                [*args, limit, offset],
            )
        ]
    count = min(limit, total - offset)
    rev = [
        r[0]
        for r in db.execute(
            f"SELECT n FROM drifts {hint}{where} ORDER BY n ASC LIMIT ? OFFSET ?",
            [*args, count, total - offset - count],
        )
    ]
    rev.reverse()
    return rev


def _facet_ids(db: sqlite3.Connection, eqs: dict[str, Any]) -> list[int] | None:
    """Facet ids matching the equality filters; None when there are none (no restriction)."""
    if not eqs:
        return None
    cond = " AND ".join(f"{c} = ?" for c in eqs)
    return [r[0] for r in db.execute(f"SELECT id FROM facets WHERE {cond}", list(eqs.values()))]


def _in_facets(ids: list[int]) -> str:
    return f"facet IN ({','.join(map(str, ids)) or 'NULL'})"


def _facet_where(
    db: sqlite3.Connection, f: DriftFilter, eqs: dict[str, Any]
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    ids = _facet_ids(db, eqs)
    if ids is not None:
        clauses.append(_in_facets(ids))
    if f.actor is not None:
        clauses.append("actor = ?")
        args.append(f.actor)
    if f.since:
        clauses.append("event_time >= ?")
        args.append(f.since)
    if f.until:
        clauses.append("event_time <= ?")
        args.append(f.until)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def _dated(t: str | None) -> bool:
    """True when `t` is unset or starts with an ISO date (the day counters' key)."""
    if not t:
        return True
    try:
        date.fromisoformat(t[:10])
    except ValueError:
        return False
    return True


def _next_day(day: str) -> str:
    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()


def _block_counts(
    db: sqlite3.Connection, f: DriftFilter, eqs: dict[str, Any]
) -> list[tuple[int, int]]:
    """Matches per block of drift numbers, newest block first: whole days from the
    counters, the partial days at the window's edges counted in the time index."""
    ids = _facet_ids(db, eqs)
    facet_sql = "" if ids is None else " AND " + _in_facets(ids)
    lo_day = f.since[:10] if f.since else None
    hi_day = f.until[:10] if f.until else None
    day_sql, day_args = "", []
    if lo_day is not None:
        day_sql += " AND day > ?"
        day_args.append(lo_day)
    if hi_day is not None:
        day_sql += " AND day < ?"
        day_args.append(hi_day)
    per: dict[int, int] = {}
    table = "day_counts" if ids is None else "facet_counts"
    for block, count in db.execute(
        f"SELECT block, SUM(count) FROM {table} WHERE 1{facet_sql}{day_sql} GROUP BY block",
        day_args,
    ):
        per[block] = per.get(block, 0) + count
    edges = []  # the partial days, counted exactly: [day, next day) within the window
    if lo_day is not None:
        edges.append(lo_day)
    if hi_day is not None and hi_day != lo_day:
        edges.append(hi_day)
    for day in edges:
        for block, count in db.execute(
            f"SELECT n >> {BLOCK_BITS}, COUNT(*) FROM drifts INDEXED BY drifts_time"
            " WHERE event_time >= ? AND event_time < ? AND event_time >= ? AND event_time <= ?"
            f"{facet_sql} GROUP BY 1",
            (day, _next_day(day), f.since or "", f.until or "\uffff"),
        ):
            per[block] = per.get(block, 0) + count
    return sorted(((b, c) for b, c in per.items() if c), reverse=True)


def _located_keys(
    db: sqlite3.Connection,
    where: str,
    args: list[Any],
    blocks: list[tuple[int, int]],
    offset: int,
    limit: int,
) -> list[int]:
    """The page's keys, scanning only the blocks that hold them (the counts say which)."""
    seen = 0
    first: int | None = None
    last: int | None = None
    skip = 0
    for block, count in blocks:
        if first is None and seen + count > offset:
            first, skip = block, offset - seen
        if first is not None and seen + count >= offset + limit:
            last = block
            break
        seen += count
    if first is None:
        return []
    if last is None:
        last = blocks[-1][0]
    cond = where.replace(" WHERE ", " AND ", 1) if where else ""
    return [
        r[0]
        for r in db.execute(
            f"SELECT n FROM drifts INDEXED BY drifts_scan WHERE n BETWEEN ? AND ?{cond}"
            " ORDER BY n DESC LIMIT ? OFFSET ?",
            [last << BLOCK_BITS, ((first + 1) << BLOCK_BITS) - 1, *args, limit, skip],
        )
    ]


def _drift_where(f: DriftFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    for col, value in (
        ("severity", f.severity),
        ("resource_type", f.resource_type),
        ("kind", f.kind),
        ("status", f.status),
        ("actor", f.actor),
        ("provider", f.provider),
        ("resource_id", f.resource_id),
        ("drift_type", f.drift_type),
    ):
        if value is not None:
            clauses.append(f"{col} = ?")
            args.append(value)
    if f.since:
        clauses.append("event_time >= ?")
        args.append(f.since)
    if f.until:
        clauses.append("event_time <= ?")
        args.append(f.until)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def _drift_row(row: Sequence[Any]) -> dict[str, Any]:
    body, status, occurrences, last_seen, updated_at, dtype = row
    d: dict[str, Any] = orjson.loads(body)
    d["status"] = status
    d["occurrences"] = occurrences
    d["last_seen"] = last_seen
    d["updated_at"] = updated_at
    d["type"] = dtype
    return d


def _event_body(e: ChangeEvent, severity: str) -> dict[str, Any]:
    body = e.as_dict()
    body["type"] = "cloudtrail"
    body["timestamp"] = e.event_time
    body["severity"] = severity
    return body


def _alert_provider(a: FalcoAlert) -> str:
    src = (a.source or "").lower()
    if src.startswith("k8s") or "k8s.pod.name" in a.output_fields:
        return "kubernetes"
    if src.startswith("gcp"):
        return "gcp"
    if src.startswith("azure"):
        return "azure"
    if src.startswith("aws"):
        return "aws"
    return "host"


def _alert_body(a: FalcoAlert) -> dict[str, Any]:
    body = a.as_dict()
    body["type"] = "falco"
    body["provider"] = _alert_provider(a)
    return body
