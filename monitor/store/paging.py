"""Paging plans for GET /drifts: counters, per-block facet counts and OFFSET walks.

Each plan returns exactly what a plain scan would; they differ only in what they read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

from monitor.store.protocol import DriftFilter, StoreSettings
from monitor.store.rows import DRIFT_COLS, drift_row
from monitor.store.schema import FACET_COLS


def page_of_drifts(
    db: sqlite3.Connection, f: DriftFilter, page: int, limit: int, settings: StoreSettings
) -> tuple[list[dict[str, Any]], int]:
    """One page of drifts (newest first) and the total, by the cheapest plan for the filter."""
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
            total = counter(db, f"drifts.actor.{f.actor}")
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
            total = counter(db, f"drifts.{col}.{value}")
        else:
            total = counter(db, "drifts.total")
        if not eqs and min(offset, total - offset) > settings.deep_offset:
            # Deep into everything: the (small) per-block day counts say where to start.
            keys = _located_keys(
                db,
                settings.block_bits,
                "",
                [],
                _block_counts(db, f, eqs, settings.block_bits),
                offset,
                limit,
            )
        else:
            keys = _offset_keys(db, "", where, args, total, offset, limit)
    else:
        blocks = _block_counts(db, f, eqs, settings.block_bits)
        total = sum(c for _, c in blocks)
        where, args = _facet_where(db, f, eqs)
        keys = _located_keys(db, settings.block_bits, where, args, blocks, offset, limit)
    if not keys:
        return [], total
    marks = ",".join("?" * len(keys))
    rows = db.execute(f"SELECT n, {DRIFT_COLS} FROM drifts WHERE n IN ({marks})", keys)
    by_n = {r[0]: drift_row(r[1:]) for r in rows}
    return [by_n[n] for n in keys if n in by_n], total


def counter(db: sqlite3.Connection, name: str) -> int:
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
    ids = _facet_ids(db, eqs)
    first = _in_facets(ids) if ids is not None else None
    return where_sql((("actor", f.actor),), f.since, f.until, "event_time", first)


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
    db: sqlite3.Connection, f: DriftFilter, eqs: dict[str, Any], block_bits: int
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
            f"SELECT n >> {block_bits}, COUNT(*) FROM drifts INDEXED BY drifts_time"
            " WHERE event_time >= ? AND event_time < ? AND event_time >= ? AND event_time <= ?"
            f"{facet_sql} GROUP BY 1",
            (day, _next_day(day), f.since or "", f.until or "\uffff"),
        ):
            per[block] = per.get(block, 0) + count
    return sorted(((b, c) for b, c in per.items() if c), reverse=True)


def _located_keys(
    db: sqlite3.Connection,
    block_bits: int,
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
            [last << block_bits, ((first + 1) << block_bits) - 1, *args, limit, skip],
        )
    ]


def _drift_where(f: DriftFilter) -> tuple[str, list[Any]]:
    eqs = (
        ("severity", f.severity),
        ("resource_type", f.resource_type),
        ("kind", f.kind),
        ("status", f.status),
        ("actor", f.actor),
        ("provider", f.provider),
        ("resource_id", f.resource_id),
        ("drift_type", f.drift_type),
    )
    return where_sql(eqs, f.since, f.until, "event_time")


def where_sql(
    eqs: Iterable[tuple[str, Any]],
    since: str | None,
    until: str | None,
    time_col: str,
    first: str | None = None,
) -> tuple[str, list[Any]]:
    """A WHERE clause (or ""): `first`, equality on each set value, then the time window."""
    clauses = [first] if first else []
    args: list[Any] = []
    for col, value in eqs:
        if value is not None:
            clauses.append(f"{col} = ?")
            args.append(value)
    if since:
        clauses.append(f"{time_col} >= ?")
        args.append(since)
    if until:
        clauses.append(f"{time_col} <= ?")
        args.append(until)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args
