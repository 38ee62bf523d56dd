"""From decoded items to stored, published drifts: detect -> store (group commit) -> hub.

A drift is committed before the caller is acknowledged and before it is published; the
store's idempotence on ids makes redelivered input produce nothing new.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from monitor.clock import Clock, utc_now
from monitor.detect import Detector
from monitor.hub import Hub, Message
from monitor.model import ChangeEvent, Drift, FalcoAlert
from monitor.store import (
    LifecycleError,
    PendingMessage,
    Retention,
    StatusChange,
    Store,
    WriteBatch,
    WriteOutcome,
)
from rules.severity import RANK
from streams.errors import DecodeError

Decoded = ChangeEvent | FalcoAlert | DecodeError
Observer = Callable[[list[ChangeEvent], list[Drift], list[FalcoAlert]], None]
_STOP = object()


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
    """One thread that writes batches with group commit and hands results back in order."""

    def __init__(self, store: Store, hub: Hub, max_group: int = 512) -> None:
        self.store = store
        self.hub = hub
        self.max_group = max_group
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.commits = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="driftline-store", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    async def submit(self, batch: WriteBatch) -> WriteOutcome:
        if self._thread is None or self._loop is None:
            raise RuntimeError("store writer is not running")
        fut: asyncio.Future[WriteOutcome] = self._loop.create_future()
        self._queue.put((batch, fut))
        return await fut

    def _run(self) -> None:
        assert self._loop is not None
        loop = self._loop
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            group = [first]
            stop = False
            while len(group) < self.max_group:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                group.append(item)
            try:
                outcomes = self.store.write([b for b, _ in group], self.hub.next_seq)
                self.commits += 1
                loop.call_soon_threadsafe(self._done, [f for _, f in group], outcomes, None)
            except Exception as exc:  # surfaced to every waiting caller
                loop.call_soon_threadsafe(self._done, [f for _, f in group], None, exc)
            if stop:
                return

    def _done(
        self,
        futures: list[asyncio.Future[WriteOutcome]],
        outcomes: list[WriteOutcome] | None,
        exc: Exception | None,
    ) -> None:
        if outcomes is not None:
            # Commit order is delivery order: this runs on the loop, in commit order.
            self.hub.deliver(m for o in outcomes for m in o.messages)
        for n, fut in enumerate(futures):
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

    async def publish(self, topic: str, type_: str, payload: dict[str, Any]) -> Message | None:
        """Store and deliver a message that is not tied to a drift (state_change, stats)."""
        outcome = await self.writer.submit(
            WriteBatch(messages=[PendingMessage(topic, type_, payload)], received_at=self.clock())
        )
        return outcome.messages[0] if outcome.messages else None
