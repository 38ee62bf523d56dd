"""From decoded items to stored, published drifts, and the lifecycle actions on them.

A drift is committed before the caller is acknowledged and before it is published; the
store's idempotence on ids makes redelivered input produce nothing new.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from monitor.clock import utc_now
from monitor.detect import Detector
from monitor.hub import Hub, Message
from monitor.lifecycle import LifecycleError
from monitor.metrics import IngestMetrics
from monitor.pipeline.publish import PendingMessage
from monitor.pipeline.stages import Detect, IngestResult, Observe, Persist, Stage, Work
from monitor.pipeline.writer import StoreWriter
from monitor.store import DeadLetter, Retention, StatusChange, Store, WriteBatch
from monitor.types import Clock, Decoded, Drift, Observer


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
        self.store = store
        self.hub = hub
        self.clock = clock
        self.metrics = IngestMetrics()
        self.writer = StoreWriter(store, hub, metrics=self.metrics)
        self.observers: list[Observer] = []
        self._detect = Detect(detector, store_readonly_events)
        self._persist = Persist(self.writer)
        self.stages: tuple[Stage, ...] = (self._detect, self._persist, Observe(self.observers))
        self.records = 0
        self.rejected: Counter[str] = Counter()

    @property
    def detector(self) -> Detector:
        return self._detect.detector

    @detector.setter
    def detector(self, detector: Detector) -> None:
        self._detect.detector = detector

    async def start(self) -> None:
        self.writer.start()

    async def stop(self) -> None:
        await self.writer.stop()

    async def ingest(
        self,
        items: Iterable[Decoded],
        origin: str = "ingest",
        dead_letters: Sequence[DeadLetter] = (),
        offload: bool = False,
    ) -> IngestResult:
        """Detect, store and publish `items`, with the source's own `dead_letters` for what
        did not decode; `origin` names the source in dead letters. `offload` runs detection
        on a thread (large HTTP bodies); sources that rely on their writes being queued in
        call order (Kafka) leave it off."""
        batch = WriteBatch(received_at=self.clock(), origin=origin, dead_letters=[*dead_letters])
        work = Work(items, batch, offload=offload)
        started = time.perf_counter()
        for stage in self.stages:
            await stage.run(work)
            if stage is self._persist:
                self.metrics.ingest_to_stored.observe(time.perf_counter() - started)
        result = work.result
        self.records += result.accepted + result.rejected
        self.rejected.update(result.reasons)
        self._count(origin, result, work.new_drifts)
        return result

    def _count(self, origin: str, result: IngestResult, new_drifts: Sequence[Drift]) -> None:
        m = self.metrics
        m.received[origin] += result.accepted + result.rejected
        m.decoded[origin] += result.accepted
        for reason, n in result.reasons.items():
            m.rejected[origin, reason] += n
        for drift in new_drifts:
            m.drifts[drift.kind, drift.severity] += 1

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
            WriteBatch(received_at=self.clock()), [PendingMessage(topic, type_, payload)]
        )
        return outcome.messages[0] if outcome.messages else None
