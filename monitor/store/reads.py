"""The SQLite store's reads: pages, single drifts and events, the replay log, counters.

Readers use a connection per thread (the writer's only for `:memory:`) and never block it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from typing import Any

import orjson

from monitor.jsondiff import json_diff
from monitor.lifecycle import target_key
from monitor.store import rows
from monitor.store.paging import page_of_drifts, where_sql
from monitor.store.protocol import DriftFilter, EventFilter, StoreSettings
from monitor.store.rows import DRIFT_COLS, drift_row


class SqliteReads:
    """Read methods of SqliteStore; `_reader()` gives this thread's connection."""

    path: str
    settings: StoreSettings
    _write_lock: threading.Lock

    def _reader(self) -> sqlite3.Connection:
        raise NotImplementedError

    def drifts(self, f: DriftFilter, page: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        db = self._reader()
        if self.path == ":memory:":
            with self._write_lock:  # one shared connection: no snapshot of its own
                return page_of_drifts(db, f, page, limit, self.settings)
        # One read transaction: the total and the page come from the same snapshot.
        db.execute("BEGIN")
        try:
            return page_of_drifts(db, f, page, limit, self.settings)
        finally:
            db.execute("COMMIT")

    def drift(self, drift_id: str) -> dict[str, Any] | None:
        row = (
            self._reader()
            .execute(f"SELECT {DRIFT_COLS} FROM drifts WHERE id = ?", (drift_id,))
            .fetchone()
        )
        return drift_row(row) if row else None

    def drift_detail(self, drift_id: str) -> dict[str, Any] | None:
        """A drift with its baseline, a JSON diff baseline -> current, occurrences, history."""
        d = self.drift(drift_id)
        if d is None:
            return None
        db = self._reader()
        key = target_key(
            d["provider"], d["resource_type"], d["resource_id"], d["field"], d["event_name"]
        )
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
            {"at": at, "from": frm, "to": to, "note": note, "actor": actor}
            for at, frm, to, note, actor in db.execute(
                "SELECT at, from_status, to_status, note, actor FROM history WHERE drift_id = ? "
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
            f"SELECT {DRIFT_COLS} FROM drifts WHERE event_id = ? ORDER BY n", (event_id,)
        ).fetchall()
        out = [drift_row(r) for r in rows]
        merged = db.execute(
            f"SELECT {DRIFT_COLS} FROM drifts WHERE id IN "
            "(SELECT parent FROM occurrences WHERE event_id = ?)",
            (event_id,),
        ).fetchall()
        out.extend(drift_row(r) for r in merged)
        return out

    def summary(self) -> dict[str, Any]:
        return rows.summary(self.counters())

    def events(self, f: EventFilter, page: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        eqs = (("severity", f.severity), ("provider", f.provider), ("kind", f.kind))
        where, args = where_sql(eqs, f.since, f.until, "time")
        db = self._reader()
        if not where:
            row = db.execute("SELECT value FROM counters WHERE name = 'events.total'").fetchone()
            total = int(row[0]) if row else 0
        elif where == " WHERE kind = ?":
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

    def first_seq(self) -> int | None:
        """The oldest message still kept (retention drops the oldest first); None if none."""
        row = self._reader().execute("SELECT MIN(seq) FROM messages").fetchone()
        return int(row[0]) if row[0] is not None else None

    def last_seq(self) -> int:
        db = self._reader()
        row = db.execute("SELECT MAX(seq) FROM messages").fetchone()
        mark = db.execute("SELECT value FROM counters WHERE name = 'hub.seq'").fetchone()
        return max(int(row[0] or 0), int(mark[0]) if mark else 0)

    def dead_letters(self, page: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        db = self._reader()
        total = db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
        found = db.execute(
            'SELECT source, topic, partition, "offset", key, value, value_size, reason, at '
            "FROM dead_letters ORDER BY n DESC LIMIT ? OFFSET ?",
            (limit, (page - 1) * limit),
        ).fetchall()
        out = [rows.dead_letter_row(r) for r in found]
        return out, int(total)

    def counters(self) -> dict[str, int]:
        return {
            name: int(value)
            for name, value in self._reader().execute("SELECT name, value FROM counters")
        }

    def counts(self) -> dict[str, Any]:
        return rows.counts(self.counters())
