"""One write batch inside the writer's transaction: the SQL, with counts kept as deltas.

What to do with a drift (keep, merge into an open one, suppress) and whether a status move
is allowed is the lifecycle policy's call; this module only runs the statements.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from monitor import lifecycle
from monitor.lifecycle import LifecycleError
from monitor.store.facets import Facets
from monitor.store.protocol import (
    DeadLetter,
    DriftUpdated,
    StatusChange,
    StoreSettings,
    WriteBatch,
    WriteOutcome,
)
from monitor.store.retention import prune
from monitor.store.rows import DRIFT_COLS, alert_body, alert_provider, drift_row, event_body
from monitor.store.schema import FACET_COLS
from monitor.types import Drift

_STATUS_COL = FACET_COLS.index("status")


class Writer:
    """Runs one batch's statements and reports what changed."""

    def __init__(
        self, db: sqlite3.Connection, batch: WriteBatch, facets: Facets, settings: StoreSettings
    ) -> None:
        self.db = db
        self.batch = batch
        self.facets = facets
        self.block_bits = settings.block_bits
        self.dead_letter_max_bytes = settings.dead_letter_max_bytes
        self.out = WriteOutcome()
        self.counts: dict[str, int] = dict(batch.counters)
        # (facet, block, day) and (block, day) deltas, written once per batch.
        self.facet_counts: dict[tuple[int, int, str], int] = {}
        self.day_counts: dict[tuple[int, str], int] = {}

    def bump_facet(self, facet: int, n: int, event_time: str, by: int, days: bool) -> None:
        key = (facet, n >> self.block_bits, event_time[:10])
        self.facet_counts[key] = self.facet_counts.get(key, 0) + by
        if days:
            day = key[1:]
            self.day_counts[day] = self.day_counts.get(day, 0) + by

    def bump(self, name: str, by: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + by

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
        if b.retention is not None:
            prune(self, b.retention)
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
                value[: self.dead_letter_max_bytes],
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
            # Which are new decides which `event` messages go out (redelivery says nothing).
            ids = [e.event_id for e, _ in b.events]
            known: set[str] = set()
            for i in range(0, len(ids), 500):
                part = ids[i : i + 500]
                marks = ",".join("?" * len(part))
                known.update(
                    r[0] for r in db.execute(f"SELECT id FROM events WHERE id IN ({marks})", part)
                )
            self.out.new_events.update(i for i in ids if i not in known)
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
                        orjson.dumps(event_body(e, sev)),
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
                    alert_provider(a),
                    a.severity,
                    a.rule,
                    a.source,
                    a.hostname,
                    orjson.dumps(alert_body(a)),
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
        bkey = lifecycle.baseline_key(d)
        base = db.execute(
            "SELECT value, state_value FROM baselines WHERE key = ?", (bkey,)
        ).fetchone()
        if lifecycle.suppressed(d, base):
            self._occurrence(d, "baseline:" + bkey)
            self.out.suppressed_drifts.add(d.id)
            self.bump("drifts.suppressed")
            return
        key = lifecycle.dedup_key(d)
        open_row = db.execute(
            "SELECT id, occurrences, last_seen, actors, actor_count FROM drifts"
            " WHERE dedup_key = ? AND status != 'resolved' ORDER BY n DESC LIMIT 1",
            (key,),
        ).fetchone()
        if open_row is not None:
            self._merge(d, *open_row)
            return
        self._insert_drift(d, key)

    def _occurrence(self, d: Drift, parent: str) -> None:
        a = d.actor
        self.db.execute(
            "INSERT INTO occurrences (drift_id, parent, event_id, seen_at, actor_key, user_name,"
            " arn, source_ip) VALUES (?,?,?,?,?,?,?,?)",
            (d.id, parent, d.event_id, d.event_time, a.key, a.user_name, a.arn, d.source_ip),
        )

    def _merge(
        self,
        d: Drift,
        parent: str,
        occurrences: int,
        last_seen: str | None,
        actors: str | None,
        actor_count: int,
    ) -> None:
        db = self.db
        kept = orjson.loads(actors) if actors else []
        # The list is bounded: an actor missing from a full one may still have been seen.
        seen = len(kept) >= lifecycle.MAX_ACTORS and (
            db.execute(
                "SELECT 1 FROM occurrences WHERE parent = ? AND actor_key = ? LIMIT 1",
                (parent, d.actor.key),
            ).fetchone()
            is not None
        )
        m = lifecycle.merge(d, parent, occurrences, last_seen, kept, actor_count, seen)
        db.execute(
            "UPDATE drifts SET occurrences = occurrences + 1, last_seen = ?, updated_at = ?,"
            " actors = ?, actor_count = ? WHERE id = ?",
            (m.last_seen, d.detected_at, orjson.dumps(m.actors).decode(), m.actor_count, parent),
        )
        self._occurrence(d, parent)
        self.out.merges.append(m)
        change: dict[str, Any] = {
            "reason": "occurrence",
            "event_id": m.event_id,
            "occurrences": m.occurrences,
            "last_seen": m.last_seen,
        }
        if m.new_actor is not None:
            change["new_actor"] = m.new_actor
        self.out.updates.append(DriftUpdated(self._row(parent), change))
        self.bump("drifts.merged")

    def _row(self, drift_id: str) -> dict[str, Any]:
        row = self.db.execute(f"SELECT {DRIFT_COLS} FROM drifts WHERE id = ?", (drift_id,))
        return drift_row(row.fetchone())

    def _insert_drift(self, d: Drift, key: str) -> None:
        db = self.db
        dtype = lifecycle.drift_type(d.category)
        facet = self.facets.id(
            db, (d.severity, d.status, d.kind.value, dtype, d.provider or "", d.resource_type or "")
        )
        actor = d.actor.user_name or d.actor.key
        cur = db.execute(
            "INSERT INTO drifts (id, event_id, kind, severity, category, provider,"
            " resource_type, resource_id, resource_address, field, actor, status, event_time,"
            " detected_at, body, occurrences, last_seen, updated_at, dedup_key, drift_type,"
            " facet, actors) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,1,?,?,?,?,?,?)",
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
                orjson.dumps([lifecycle.actor_entry(d)]).decode(),
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
            f"SELECT {DRIFT_COLS}, n, facet, event_time FROM drifts WHERE id = ?",
            (change.drift_id,),
        ).fetchone()
        if row is None:
            raise lifecycle.not_found(change.drift_id)
        old = row[1]
        lifecycle.check_move(change.drift_id, old, change.status)
        n, old_facet, event_time = row[-3:]
        current = drift_row(row[:-3])
        at = self.batch.received_at
        values = list(self.facets.values[old_facet])
        values[_STATUS_COL] = change.status
        new_facet = self.facets.id(db, tuple(values))
        db.execute(
            "UPDATE drifts SET status = ?, updated_at = ?, facet = ? WHERE id = ?",
            (change.status, at, new_facet, change.drift_id),
        )
        self.bump_facet(old_facet, n, event_time, -1, days=False)
        self.bump_facet(new_facet, n, event_time, 1, days=False)
        db.execute(
            "INSERT INTO history VALUES (?,?,?,?,?,?)",
            (change.drift_id, at, old, change.status, change.note, change.actor),
        )
        self.bump(f"drifts.status.{old}", -1)
        self.bump(f"drifts.status.{change.status}")
        current["status"] = change.status
        current["updated_at"] = at
        moved = {
            "reason": "status",
            "status": change.status,
            "previous_status": old,
            "updated_at": at,
            "baseline_captured": change.capture_baseline,
        }
        self.out.updates.append(DriftUpdated(dict(current), moved))
        if change.capture_baseline:
            key = lifecycle.target_key(
                current["provider"],
                current["resource_type"],
                current["resource_id"],
                current["field"],
                current["event_name"],
            )
            db.execute(
                "INSERT OR REPLACE INTO baselines VALUES (?,?,?,?,?)",
                (
                    key,
                    lifecycle.canon(current["new_value"]),
                    lifecycle.canon(current["old_value"]),
                    change.drift_id,
                    at,
                ),
            )
            current["baseline_captured"] = True
        return current

    def _flush_counters(self) -> None:
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
