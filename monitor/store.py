"""Durable storage of events, alerts, drifts and hub messages (SQLite, WAL).

`Store` is the interface; `SqliteStore` the embedded default. Writes are idempotent on ids
(at-least-once in, exactly-once out). Reads never block writes (WAL, separate connections).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from monitor.hub import Message
from monitor.model import ChangeEvent, Drift, FalcoAlert

SCHEMA_VERSION = 1
MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE events (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        time TEXT NOT NULL,
        received_at TEXT NOT NULL,
        provider TEXT,
        severity TEXT,
        name TEXT,
        source TEXT,
        actor TEXT,
        body BLOB NOT NULL
    );
    CREATE INDEX events_time ON events(time);
    CREATE INDEX events_kind_sev ON events(severity, provider);
    CREATE TABLE drifts (
        n INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        event_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        severity TEXT NOT NULL,
        category TEXT,
        provider TEXT,
        resource_type TEXT,
        resource_id TEXT,
        resource_address TEXT,
        field TEXT,
        actor TEXT,
        status TEXT NOT NULL,
        event_time TEXT NOT NULL,
        detected_at TEXT NOT NULL,
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
        seq INTEGER PRIMARY KEY,
        topic TEXT NOT NULL,
        type TEXT NOT NULL,
        ts TEXT NOT NULL,
        body BLOB NOT NULL
    );
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    """,
}


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """A hub message to store and publish if its key (a drift or alert id) is new."""

    topic: str
    type: str
    payload: dict[str, Any]
    key: str | None = None


@dataclass
class WriteBatch:
    """What one ingest produced; written in one transaction."""

    events: list[tuple[ChangeEvent, str]] = field(default_factory=list)  # (event, severity)
    alerts: list[FalcoAlert] = field(default_factory=list)
    drifts: list[Drift] = field(default_factory=list)
    messages: list[PendingMessage] = field(default_factory=list)
    received_at: str = ""


@dataclass
class WriteOutcome:
    new_drifts: set[str] = field(default_factory=set)
    new_alerts: set[str] = field(default_factory=set)
    messages: list[Message] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DriftFilter:
    severity: str | None = None
    resource_type: str | None = None
    kind: str | None = None
    status: str | None = None
    actor: str | None = None
    provider: str | None = None
    resource_id: str | None = None
    category: str | None = None
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
    """What the daemon needs from storage. Methods block; callers run them off the loop."""

    def write(
        self, batches: Sequence[WriteBatch], next_seq: Callable[[], int]
    ) -> list[WriteOutcome]: ...
    def known_events(self, ids: Sequence[str]) -> set[str]: ...
    def drifts(self, f: DriftFilter, page: int, limit: int) -> tuple[list[dict[str, Any]], int]: ...
    def drift(self, drift_id: str) -> dict[str, Any] | None: ...
    def drifts_for_event(self, event_id: str) -> list[dict[str, Any]]: ...
    def events(self, f: EventFilter, page: int, limit: int) -> tuple[list[dict[str, Any]], int]: ...
    def event(self, event_id: str) -> dict[str, Any] | None: ...
    def related_events(self, drift: dict[str, Any], limit: int) -> list[dict[str, Any]]: ...
    def messages_since(
        self, seq: int, topics: Iterable[str], limit: int
    ) -> list[tuple[int, str, str, str, bytes]]: ...
    def last_seq(self) -> int: ...
    def counts(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


class SqliteStore:
    """The embedded store. One writer connection (used from one thread at a time) and
    a reader connection per thread."""

    def __init__(self, path: str | Path, synchronous: str = "FULL") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.synchronous = synchronous
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._writer = self._connect()
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _reader(self) -> sqlite3.Connection:
        if self.path == ":memory:":
            # One in-memory database: readers share the writer's connection.
            return self._writer
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
        return conn

    def _migrate(self) -> None:
        with self._write_lock:
            current = self._writer.execute("PRAGMA user_version").fetchone()[0]
            if current > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path}: store schema {current} is newer than this Driftline "
                    f"({SCHEMA_VERSION}); upgrade Driftline"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                self._writer.execute("BEGIN IMMEDIATE")
                try:
                    for stmt in MIGRATIONS[version].split(";"):
                        if stmt.strip():
                            self._writer.execute(stmt)
                    self._writer.execute(f"PRAGMA user_version={version}")
                    self._writer.execute("COMMIT")
                except BaseException:
                    self._writer.execute("ROLLBACK")
                    raise

    # -- writes ---------------------------------------------------------------------------

    def write(
        self, batches: Sequence[WriteBatch], next_seq: Callable[[], int]
    ) -> list[WriteOutcome]:
        """Store batches in one transaction (group commit). Messages whose key is new get a
        sequence number from `next_seq` and are stored with them; they are returned, in
        order, to be published once this returns."""
        outcomes: list[WriteOutcome] = []
        with self._write_lock:
            db = self._writer
            db.execute("BEGIN IMMEDIATE")
            try:
                for batch in batches:
                    outcomes.append(self._write_one(db, batch, next_seq))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return outcomes

    def _write_one(
        self, db: sqlite3.Connection, batch: WriteBatch, next_seq: Callable[[], int]
    ) -> WriteOutcome:
        out = WriteOutcome()
        if batch.events:
            db.executemany(
                "INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        e.event_id,
                        "cloudtrail",
                        e.event_time,
                        batch.received_at,
                        e.provider,
                        sev,
                        e.event_name,
                        e.event_source,
                        e.actor.key,
                        orjson.dumps(_event_body(e, sev)),
                    )
                    for e, sev in batch.events
                ],
            )
        for a in batch.alerts:
            cur = db.execute(
                "INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    a.id,
                    "falco",
                    a.time,
                    batch.received_at,
                    _alert_provider(a),
                    a.severity,
                    a.rule,
                    a.source,
                    a.hostname,
                    orjson.dumps(_alert_body(a)),
                ),
            )
            if cur.rowcount:
                out.new_alerts.add(a.id)
        for d in batch.drifts:
            cur = db.execute(
                "INSERT OR IGNORE INTO drifts (id, event_id, kind, severity, category,"
                " provider, resource_type, resource_id, resource_address, field, actor,"
                " status, event_time, detected_at, body)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
                    d.actor.user_name or d.actor.key,
                    d.status,
                    d.event_time,
                    d.detected_at,
                    orjson.dumps(d.as_dict()),
                ),
            )
            if cur.rowcount:
                out.new_drifts.add(d.id)
        rows = []
        for pm in batch.messages:
            if pm.key is not None and pm.key not in out.new_drifts and pm.key not in out.new_alerts:
                continue
            msg = Message(next_seq(), pm.topic, pm.type, batch.received_at, pm.payload)
            out.messages.append(msg)
            rows.append(msg.row())
        if rows:
            db.executemany("INSERT INTO messages VALUES (?,?,?,?,?)", rows)
        return out

    # -- reads ----------------------------------------------------------------------------

    def known_events(self, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        db = self._reader()
        found: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = list(ids[i : i + 500])
            marks = ",".join("?" * len(chunk))
            found.update(
                r[0] for r in db.execute(f"SELECT id FROM events WHERE id IN ({marks})", chunk)
            )
        return found

    def drifts(self, f: DriftFilter, page: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        where, args = _drift_where(f)
        db = self._reader()
        total = db.execute(f"SELECT COUNT(*) FROM drifts{where}", args).fetchone()[0]
        rows = db.execute(
            f"SELECT body, status FROM drifts{where} ORDER BY n DESC LIMIT ? OFFSET ?",
            [*args, limit, (page - 1) * limit],
        ).fetchall()
        return [_drift_row(body, status) for body, status in rows], total

    def drift(self, drift_id: str) -> dict[str, Any] | None:
        row = (
            self._reader()
            .execute("SELECT body, status FROM drifts WHERE id = ?", (drift_id,))
            .fetchone()
        )
        return _drift_row(*row) if row else None

    def drifts_for_event(self, event_id: str) -> list[dict[str, Any]]:
        rows = self._reader().execute(
            "SELECT body, status FROM drifts WHERE event_id = ? ORDER BY n", (event_id,)
        )
        return [_drift_row(body, status) for body, status in rows]

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
        total = db.execute(f"SELECT COUNT(*) FROM events{where}", args).fetchone()[0]
        rows = db.execute(
            f"SELECT body FROM events{where} ORDER BY time DESC, id LIMIT ? OFFSET ?",
            [*args, limit, (page - 1) * limit],
        ).fetchall()
        return [orjson.loads(r[0]) for r in rows], total

    def event(self, event_id: str) -> dict[str, Any] | None:
        row = self._reader().execute("SELECT body FROM events WHERE id = ?", (event_id,)).fetchone()
        return orjson.loads(row[0]) if row else None

    def related_events(self, drift: dict[str, Any], limit: int = 20) -> list[dict[str, Any]]:
        """The drift's own event, then other events that drifted the same resource."""
        db = self._reader()
        ids = [drift["event_id"]]
        ids.extend(
            r[0]
            for r in db.execute(
                "SELECT DISTINCT event_id FROM drifts WHERE resource_id = ? AND event_id != ?"
                " ORDER BY n DESC LIMIT ?",
                (drift["resource_id"], drift["event_id"], limit - 1),
            )
        )
        out = []
        for eid in ids:
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
        row = self._reader().execute("SELECT MAX(seq) FROM messages").fetchone()
        return int(row[0] or 0)

    def counts(self) -> dict[str, Any]:
        db = self._reader()
        by_sev = dict(db.execute("SELECT severity, COUNT(*) FROM drifts GROUP BY severity"))
        by_kind = dict(db.execute("SELECT kind, COUNT(*) FROM drifts GROUP BY kind"))
        by_status = dict(db.execute("SELECT status, COUNT(*) FROM drifts GROUP BY status"))
        top_types = db.execute(
            "SELECT resource_type, COUNT(*) c FROM drifts GROUP BY resource_type"
            " ORDER BY c DESC, resource_type LIMIT 10"
        ).fetchall()
        events_by_kind = dict(db.execute("SELECT kind, COUNT(*) FROM events GROUP BY kind"))
        return {
            "drifts_by_severity": by_sev,
            "drifts_by_kind": by_kind,
            "drifts_by_status": by_status,
            "top_resource_types": [{"type": t, "count": c} for t, c in top_types],
            "events_by_kind": events_by_kind,
        }

    def events_since(self, since: str) -> int:
        row = (
            self._reader()
            .execute("SELECT COUNT(*) FROM events WHERE time >= ?", (since,))
            .fetchone()
        )
        return int(row[0])

    def close(self) -> None:
        with self._write_lock:
            self._writer.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


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
        ("category", f.category),
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


def _drift_row(body: bytes, status: str) -> dict[str, Any]:
    d: dict[str, Any] = orjson.loads(body)
    d["status"] = status
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
