"""The audit log: every write appended as a row chained to the previous one by SHA-256.

hash = SHA-256(prev_hash || canonical JSON of [seq, at, actor_id, actor_name, action,
target, details]). Changing any stored row breaks its own hash; deleting rows from the
middle breaks the next row's prev_hash; deleting the newest rows is caught by comparing the
head with a sequence number (or head hash) kept elsewhere (`expected_min_seq`).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from monitor.auth.db import AuthDb
from monitor.auth.keys import Principal
from monitor.types import Clock

GENESIS = "0" * 64
_COLS = "seq, at, actor_id, actor_name, action, target, details, prev_hash, hash"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One write to record: what was done to what, by whom, with what outcome."""

    action: str
    target: str | None
    details: dict[str, Any] = field(default_factory=dict)
    actor_id: str | None = None
    actor_name: str | None = None

    @classmethod
    def by(
        cls, principal: Principal | None, action: str, target: str | None, **details: Any
    ) -> AuditEntry:
        if principal is None:
            return cls(action, target, details)
        return cls(action, target, details, principal.key_id, principal.name)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    actor: str | None = None  # a key id or name
    action: str | None = None
    since: str | None = None
    until: str | None = None


@dataclass(frozen=True, slots=True)
class Verification:
    checked: int
    head_seq: int
    head_hash: str
    status: str  # ok | broken
    first_bad_seq: int | None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "status": self.status,
            "first_bad_seq": self.first_bad_seq,
            "reason": self.reason,
        }


def canonical_details(details: dict[str, Any]) -> str:
    return orjson.dumps(details, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()


def row_hash(
    prev_hash: str,
    seq: int,
    at: str,
    actor_id: str | None,
    actor_name: str | None,
    action: str,
    target: str | None,
    details: str,
) -> str:
    body = orjson.dumps([seq, at, actor_id, actor_name, action, target, details])
    return hashlib.sha256(prev_hash.encode() + body).hexdigest()


def _row_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    seq, at, actor_id, actor_name, action, target, details, prev_hash, digest = row
    return {
        "seq": seq,
        "at": at,
        "actor": {"key_id": actor_id, "name": actor_name},
        "action": action,
        "target": target,
        "details": orjson.loads(details),
        "prev_hash": prev_hash,
        "hash": digest,
    }


class AuditLog:
    """Appends (grouped into one transaction when they arrive together), pages, verifies."""

    def __init__(self, db: AuthDb, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self._pending: list[tuple[AuditEntry, asyncio.Future[int]]] = []
        self._flushing: asyncio.Task[None] | None = None

    def append_now(self, entries: Iterable[AuditEntry]) -> list[int]:
        """Write entries in one transaction, chained to the head; their sequence numbers."""
        seqs: list[int] = []
        with self.db.transaction() as db:
            head = db.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            seq, prev = head.fetchone() or (0, GENESIS)
            at = self.clock()
            rows = []
            for e in entries:
                seq += 1
                details = canonical_details(e.details)
                digest = row_hash(
                    prev, seq, at, e.actor_id, e.actor_name, e.action, e.target, details
                )
                rows.append(
                    (seq, at, e.actor_id, e.actor_name, e.action, e.target, details, prev, digest)
                )
                prev = digest
                seqs.append(seq)
            db.executemany(f"INSERT INTO audit_log ({_COLS}) VALUES (?,?,?,?,?,?,?,?,?)", rows)
        return seqs

    async def append(self, entry: AuditEntry) -> int:
        """Durably append one entry; concurrent callers share a transaction."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((entry, future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                seqs = await asyncio.to_thread(self.append_now, [e for e, _ in batch])
            except Exception as exc:  # every waiter learns the write failed
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), seq in zip(batch, seqs, strict=True):
                if not fut.done():
                    fut.set_result(seq)

    def page(self, f: AuditFilter, page: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Newest first."""
        where, args = [], []
        if f.actor:
            where.append("(actor_id = ? OR actor_name = ?)")
            args += [f.actor, f.actor]
        if f.action:
            where.append("action = ?")
            args.append(f.action)
        if f.since:
            where.append("at >= ?")
            args.append(f.since)
        if f.until:
            where.append("at < ?")
            args.append(f.until)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        with self.db.reading() as db:
            total = db.execute(f"SELECT COUNT(*) FROM audit_log{clause}", args).fetchone()[0]
            rows = db.execute(
                f"SELECT {_COLS} FROM audit_log{clause} ORDER BY seq DESC LIMIT ? OFFSET ?",
                [*args, limit, (page - 1) * limit],
            ).fetchall()
        return [_row_dict(r) for r in rows], total

    def _rows(self) -> Iterator[tuple[Any, ...]]:
        last = 0
        while True:
            with self.db.reading() as db:
                chunk = db.execute(
                    f"SELECT {_COLS} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT 5000",
                    (last,),
                ).fetchall()
            if not chunk:
                return
            yield from chunk
            last = chunk[-1][0]

    def verify(self, expected_min_seq: int = 0) -> Verification:
        """Walk the chain from the start; the first row that does not fit is reported."""
        prev, expected_seq, checked = GENESIS, 1, 0
        for row in self._rows():
            seq, at, actor_id, actor_name, action, target, details, prev_hash, digest = row
            reason = None
            if seq != expected_seq:
                reason = f"row {expected_seq} is missing"
                seq = expected_seq
            elif prev_hash != prev:
                reason = "prev_hash does not match the previous row's hash"
            elif row_hash(prev, seq, at, actor_id, actor_name, action, target, details) != digest:
                reason = "the row does not match its hash"
            if reason:
                return Verification(checked, checked, prev, "broken", seq, reason)
            prev, expected_seq, checked = digest, seq + 1, checked + 1
        if checked < expected_min_seq:
            return Verification(
                checked,
                checked,
                prev,
                "broken",
                checked + 1,
                f"the log ends at {checked}, before the expected {expected_min_seq}",
            )
        return Verification(checked, checked, prev, "ok", None)
