"""The writer's copy of the (small) facets table: values -> id and id -> values."""

from __future__ import annotations

import sqlite3

from monitor.store.schema import FACET_COLS


class Facets:
    """Facet ids by value and values by id, as the writer's transaction sees them."""

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
