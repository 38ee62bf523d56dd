"""Per-record isolation in the write path: when a group commit fails because of what one
record holds, every batch is written again on its own, and a batch that still fails is
written record by record; only the records that fail alone are dead-lettered.

A fault of the store itself (disk full, I/O, a read-only file) is not a record's: it fails
the whole group as before, so nothing is acknowledged that is not durable.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import orjson

from monitor.pipeline.publish import PendingMessage
from monitor.store import DeadLetter, WriteBatch, WriteOutcome

# What a record's content can make a write raise (a value SQLite cannot bind, JSON that does
# not serialise, a constraint); OperationalError and the other DatabaseErrors are the store's.
RECORD_FAULTS: tuple[type[BaseException], ...] = (
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,  # "Error binding parameter": a list or object where text goes
    sqlite3.IntegrityError,
    sqlite3.DataError,
    TypeError,
    ValueError,
    OverflowError,
    RecursionError,
)

WriteOne = Callable[
    [Sequence[WriteBatch], Sequence[Sequence[PendingMessage]]], Awaitable[list[WriteOutcome]]
]


def is_record_fault(exc: BaseException) -> bool:
    """True when `exc` can come from a record's content rather than from the store."""
    return isinstance(exc, RECORD_FAULTS)


def splittable(batch: WriteBatch) -> bool:
    """Only ingest batches hold records that can be told apart."""
    return bool(batch.events or batch.alerts)


@dataclass
class Part:
    """One record of a batch (an event with its drifts, or an alert), or the rest (counters)."""

    batch: WriteBatch
    messages: list[PendingMessage]
    position: str = ""
    value: bytes | None = None


def _json(value: object) -> bytes | None:
    try:
        return orjson.dumps(value, default=repr)
    except (TypeError, ValueError):
        return None


def split(batch: WriteBatch, messages: Sequence[PendingMessage]) -> list[Part]:
    """The batch as one part per record plus one for its counters and dead letters."""
    at = batch.received_at
    by_key = {m.key: m for m in messages if m.key is not None}
    parts: list[Part] = []
    for event, severity in batch.events:
        drifts = [d for d in batch.drifts if d.event_id == event.event_id]
        part = WriteBatch(events=[(event, severity)], drifts=drifts, received_at=at)
        pending = [by_key[d.id] for d in drifts if d.id in by_key]
        parts.append(Part(part, pending, f"event {event.event_id}", _json(event.record)))
    for alert in batch.alerts:
        part = WriteBatch(alerts=[alert], received_at=at)
        pending = [by_key[alert.id]] if alert.id in by_key else []
        parts.append(Part(part, pending, f"alert {alert.id}", _json(alert.as_dict())))
    rest = WriteBatch(counters=batch.counters, dead_letters=batch.dead_letters, received_at=at)
    parts.append(Part(rest, [m for m in messages if m.key is None]))
    return parts


def merge(outcomes: Sequence[WriteOutcome]) -> WriteOutcome:
    """One outcome for the parts of a batch, as if it had been written at once."""
    out = WriteOutcome()
    messages: list[object] = []
    for o in outcomes:
        out.new_drifts |= o.new_drifts
        out.merges.extend(o.merges)
        out.suppressed_drifts |= o.suppressed_drifts
        out.new_alerts |= o.new_alerts
        out.dead_lettered += o.dead_lettered
        out.failed.extend(o.failed)
        messages.extend(o.messages)
    out.messages = messages
    return out


async def write_alone(
    write: WriteOne, batch: WriteBatch, messages: Sequence[PendingMessage], origin: str
) -> WriteOutcome:
    """Write `batch` on its own; if a record in it is at fault, the others still are written
    and that record is dead-lettered (kept as a `failed` position in the outcome)."""
    try:
        return (await write([batch], [messages]))[0]
    except Exception as exc:
        if not (is_record_fault(exc) and splittable(batch)):
            raise
    outcomes: list[WriteOutcome] = []
    for part in split(batch, messages):
        try:
            outcomes.extend(await write([part.batch], [part.messages]))
        except Exception as exc:
            if not (is_record_fault(exc) and part.position):
                raise
            detail = f"{type(exc).__name__}: {exc}"
            at = batch.received_at
            letter = DeadLetter(
                origin, part.position, 0, -1, None, part.value, f"store write failed: {detail}", at
            )
            [kept] = await write([WriteBatch(dead_letters=[letter], received_at=at)], [[]])
            kept.failed.append((part.position, detail))
            outcomes.append(kept)
    return merge(outcomes)
