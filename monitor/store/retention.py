"""Retention: bounded rounds of deleting old events, drifts and messages, counts kept exact."""

from __future__ import annotations

import sqlite3
from typing import Any, Protocol

from monitor.store.protocol import Retention, WriteOutcome
from monitor.store.schema import COUNTED


class Writer(Protocol):
    """The part of the batch writer retention uses: its transaction and its count deltas."""

    db: sqlite3.Connection
    out: WriteOutcome

    def bump(self, name: str, by: int = 1) -> None: ...
    def bump_facet(self, facet: int, n: int, event_time: str, by: int, days: bool) -> None: ...


def prune(w: Writer, r: Retention) -> None:
    """One bounded round of retention inside the writer's transaction."""
    db = w.db
    pruned = w.out.pruned
    if r.event_max_age:
        _delete_events(w, "received_at < ?", (r.event_max_age,), r.chunk, pruned)
    if r.event_max_rows is not None:
        total = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        extra = total - r.event_max_rows
        if extra > 0:
            _delete_events(
                w,
                "id IN (SELECT id FROM events ORDER BY received_at, time LIMIT ?)",
                (min(extra, r.chunk),),
                r.chunk,
                pruned,
            )
    if r.resolved_max_age:
        _delete_drifts(
            w, "status = 'resolved' AND updated_at < ?", (r.resolved_max_age,), r.chunk, pruned
        )
    if r.resolved_max_age:
        # Held-back drifts age out like resolved ones: they are kept for review, not forever.
        cur = db.execute(
            "DELETE FROM suppressed_drifts WHERE n IN (SELECT n FROM suppressed_drifts"
            " WHERE detected_at < ? ORDER BY n LIMIT ?)",
            (r.resolved_max_age, r.chunk),
        )
        if cur.rowcount > 0:
            w.bump("drifts.suppressed_by_rule", -cur.rowcount)
            pruned["suppressed_drifts"] = pruned.get("suppressed_drifts", 0) + cur.rowcount
    if r.drift_max_rows is not None:
        total = db.execute("SELECT COUNT(*) FROM drifts").fetchone()[0]
        extra = min(total - r.drift_max_rows, r.chunk)
        if extra > 0:
            _delete_drifts(
                w,
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
    w: Writer, where: str, args: tuple[Any, ...], chunk: int, pruned: dict[str, int]
) -> None:
    rows = w.db.execute(
        f"SELECT id, kind FROM events WHERE {where} LIMIT ?", (*args, chunk)
    ).fetchall()
    if not rows:
        return
    w.db.executemany("DELETE FROM events WHERE id = ?", [(r[0],) for r in rows])
    w.bump("events.total", -len(rows))
    for _, kind in rows:
        w.bump(f"events.kind.{kind}", -1)
    pruned["events"] = pruned.get("events", 0) + len(rows)


def _delete_drifts(
    w: Writer, where: str, args: tuple[Any, ...], chunk: int, pruned: dict[str, int]
) -> None:
    cols = ", ".join(COUNTED)
    full = w.db.execute(
        f"SELECT id, {cols}, n, facet, event_time FROM drifts WHERE {where} LIMIT ?",
        (*args, chunk),
    ).fetchall()
    if not full:
        return
    for row in full:
        w.bump_facet(row[-2], row[-3], row[-1], -1, days=True)
    rows = [row[:-3] for row in full]
    w.db.executemany("DELETE FROM drifts WHERE id = ?", [(r[0],) for r in rows])
    w.db.executemany("DELETE FROM occurrences WHERE parent = ?", [(r[0],) for r in rows])
    w.db.executemany("DELETE FROM history WHERE drift_id = ?", [(r[0],) for r in rows])
    w.bump("drifts.total", -len(rows))
    for row in rows:
        for col, value in zip(COUNTED, row[1:], strict=True):
            w.bump(f"drifts.{col}.{value}", -1)
    pruned["drifts"] = pruned.get("drifts", 0) + len(rows)
