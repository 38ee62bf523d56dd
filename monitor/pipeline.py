"""From decoded items to stored, published drifts: detect -> store (group commit) -> hub.

A drift is committed before the caller is acknowledged and before it is published; the
store's idempotence on ids makes redelivered input produce nothing new.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from monitor.clock import utc_now
from monitor.detect import Detector
from monitor.hub import Hub, Message
from monitor.store import (
    DeadLetter,
    LifecycleError,
    PendingMessage,
    Retention,
    StatusChange,
    Store,
    WriteBatch,
    WriteOutcome,
)
from monitor.types import ChangeEvent, Clock, Decoded, DecodeError, Drift, FalcoAlert, SkippedChange
from rules.severity import RANK

Observer = Callable[[list[ChangeEvent], list[Drift], list[FalcoAlert]], None]


@dataclass
class IngestResult:
    accepted: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    changes: int = 0
    alerts: int = 0
    drifts: int = 0
    drift_ids: list[str] = field(default_factory=list)
    repeats: int = 0  # drifts merged into an open drift (flood control)
    suppressed: int = 0  # drifts matching an accepted baseline

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "reasons": dict(self.reasons),
            "changes": self.changes,
            "falco_alerts": self.alerts,
            "drifts": self.drifts,
            "drift_ids": self.drift_ids,
            "repeats": self.repeats,
            "suppressed": self.suppressed,
        }


class StoreWriter:
    """Writes batches with group commit and hands results back in submission order.

    The statements of a group run on the event loop; only the COMMIT (the fsync) runs on a
    thread of its own, while the loop goes on and the next group gathers. A writer thread
    doing the statements would have to win the GIL back from a busy loop after every
    SQLite call (the sqlite3 module releases it around each step), which made a write
    hundreds of times slower under load.
    """

    def __init__(self, store: Store, hub: Hub, max_group: int = 512) -> None:
        self.store = store
        self.hub = hub
        self.max_group = max_group
        self._pending: list[tuple[WriteBatch, asyncio.Future[WriteOutcome]]] = []
        self._executor: ThreadPoolExecutor | None = None
        self._drain: asyncio.Task[None] | None = None
        self.commits = 0

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="driftline-store")

    async def stop(self) -> None:
        while self._drain is not None:  # everything submitted is written first
            await asyncio.shield(self._drain)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def submit(self, batch: WriteBatch) -> WriteOutcome:
        if self._executor is None:
            raise RuntimeError("store writer is not running")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[WriteOutcome] = loop.create_future()
        self._pending.append((batch, fut))
        if self._drain is None:
            # Started on the next loop turn: batches submitted meanwhile join the group.
            self._drain = loop.create_task(self._run(), name="driftline-store")
        return await fut

    async def _run(self) -> None:
        try:
            loop = asyncio.get_running_loop()
            while self._pending:
                group = self._pending[: self.max_group]
                del self._pending[: self.max_group]
                try:
                    outcomes = self.store.stage([b for b, _ in group], self.hub.next_seq)
                    await loop.run_in_executor(self._executor, self.store.commit_staged)
                except Exception as exc:  # surfaced to every waiting caller
                    self._settle(group, None, exc)
                    continue
                self.commits += 1
                # Commit order is delivery order.
                self.hub.deliver(m for o in outcomes for m in o.messages)
                self._settle(group, outcomes, None)
        finally:
            self._drain = None

    @staticmethod
    def _settle(
        group: list[tuple[WriteBatch, asyncio.Future[WriteOutcome]]],
        outcomes: list[WriteOutcome] | None,
        exc: Exception | None,
    ) -> None:
        for n, (_, fut) in enumerate(group):
            if fut.done():
                continue
            if exc is not None:
                fut.set_exception(exc)
            else:
                assert outcomes is not None
                fut.set_result(outcomes[n])


def event_severity(drifts: Iterable[Drift]) -> str:
    best = "info"
    for d in drifts:
        if best == "info" or RANK[d.severity] > RANK[best]:
            best = d.severity
    return best


class Pipeline:
    """Detects, stores and publishes. `detector` may be swapped (state reload) at any time."""

    def __init__(
        self,
        detector: Detector,
        store: Store,
        hub: Hub,
        clock: Clock = utc_now,
        store_readonly_events: bool = False,
    ) -> None:
        self.detector = detector
        self.store = store
        self.hub = hub
        self.clock = clock
        self.store_readonly_events = store_readonly_events
        self.writer = StoreWriter(store, hub)
        self.observers: list[Observer] = []
        self.records = 0
        self.rejected: Counter[str] = Counter()

    async def start(self) -> None:
        self.writer.start()

    async def stop(self) -> None:
        await self.writer.stop()

    async def ingest(self, items: Iterable[Decoded]) -> IngestResult:
        result = IngestResult()
        batch = WriteBatch(received_at=self.clock())
        changes: list[ChangeEvent] = []
        skipped: Counter[str] = Counter()
        detector = self.detector
        for item in items:
            if isinstance(item, SkippedChange):  # judged by the fetch worker: counted only
                result.accepted += 1
                result.changes += 1
                skipped[item.reason] += 1
                continue
            if isinstance(item, DecodeError):
                result.rejected += 1
                result.reasons[item.reason] += 1
                continue
            result.accepted += 1
            if isinstance(item, FalcoAlert):
                result.alerts += 1
                batch.alerts.append(item)
                batch.messages.append(PendingMessage("events", "falco", item.as_dict(), item.id))
                continue
            result.changes += 1
            detection = detector.detect(item)
            if detection.skipped:
                skipped[detection.skipped] += 1
            if item.read_only and not self.store_readonly_events:
                continue
            changes.append(item)
            batch.events.append((item, event_severity(detection.drifts)))
            for drift in detection.drifts:
                batch.drifts.append(drift)
                batch.messages.append(PendingMessage("drifts", "drift", drift.as_dict(), drift.id))
        self.records += result.accepted + result.rejected
        self.rejected.update(result.reasons)
        counters = batch.counters
        counters["ingest.records"] = result.accepted + result.rejected
        for reason, n in result.reasons.items():
            counters[f"ingest.rejected.{reason}"] = n
        for reason, n in skipped.items():
            counters[f"ingest.not_drift.{reason}"] = n
        if batch.events or batch.alerts or counters:
            outcome = await self.writer.submit(batch)
            new = [d for d in batch.drifts if d.id in outcome.new_drifts]
            result.drifts = len(new)
            result.drift_ids = [d.id for d in new]
            result.repeats = len(outcome.merged_drifts)
            result.suppressed = len(outcome.suppressed_drifts)
            alerts = [a for a in batch.alerts if a.id in outcome.new_alerts]
            for observer in self.observers:
                observer(changes, new, alerts)
        return result

    async def set_status(self, change: StatusChange) -> dict[str, Any]:
        """Move a drift through its lifecycle; LifecycleError when refused."""
        outcome = await self.writer.submit(
            WriteBatch(status_changes=[change], received_at=self.clock())
        )
        result = outcome.status_results[0]
        if isinstance(result, LifecycleError):
            raise result
        return result

    async def prune(self, retention: Retention) -> dict[str, int]:
        """One bounded round of retention; call again while it returns deletions."""
        outcome = await self.writer.submit(
            WriteBatch(retention=retention, received_at=self.clock())
        )
        return outcome.pruned

    async def dead_letter(self, letter: DeadLetter) -> bool:
        """Keep a record a source could not decode; False if it was kept before."""
        outcome = await self.writer.submit(
            WriteBatch(dead_letters=[letter], received_at=self.clock())
        )
        return outcome.dead_lettered > 0

    async def publish(self, topic: str, type_: str, payload: dict[str, Any]) -> Message | None:
        """Store and deliver a message that is not tied to a drift (state_change, stats)."""
        outcome = await self.writer.submit(
            WriteBatch(messages=[PendingMessage(topic, type_, payload)], received_at=self.clock())
        )
        return outcome.messages[0] if outcome.messages else None
