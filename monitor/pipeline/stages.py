"""The ingest stages: decode -> detect -> suppress -> persist -> publish -> observe.

Every stage has one interface, `run(work)`, and reads and extends the one `Work` of an
ingest call. Sources hand over records already decoded (streams' `decode_bytes`); the detect
stage sorts out what did not decode. Suppression (flood control, accepted baselines) is the
lifecycle policy, which the store consults inside the persist stage's transaction, and the
publish stage (`publish.py`) runs in that same transaction so the store keeps what is sent.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from monitor.detect import Detector
from monitor.pipeline.publish import PendingMessage
from monitor.pipeline.writer import StoreWriter
from monitor.store import (
    DeadLetter,
    WriteBatch,
    WriteOutcome,
    alert_body,
    drift_payload,
    event_body,
)
from monitor.types import (
    ChangeEvent,
    Decoded,
    DecodeError,
    Drift,
    FalcoAlert,
    Observer,
    SkippedChange,
)
from rules.severity import RANK

DETECTION_FAILED = "detection failed"
STORE_REFUSED = "store write failed"


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
    failures: list[tuple[str, str]] = field(default_factory=list)  # decoded, then refused

    def refuse(self, position: str, reason: str, detail: str) -> None:
        """A record that decoded but failed a later stage: rejected, kept as a dead letter."""
        self.accepted -= 1
        self.rejected += 1
        self.reasons[reason] += 1
        self.failures.append((position, f"{reason}: {detail}"))

    def add(self, other: IngestResult) -> None:
        """Count `other` (another slice of the same request) in with this one."""
        self.accepted += other.accepted
        self.rejected += other.rejected
        self.reasons.update(other.reasons)
        self.changes += other.changes
        self.alerts += other.alerts
        self.drifts += other.drifts
        self.drift_ids.extend(other.drift_ids)
        self.repeats += other.repeats
        self.suppressed += other.suppressed
        self.failures.extend(other.failures)

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


@dataclass
class Work:
    """One ingest call as it moves through the stages."""

    items: Iterable[Decoded]
    batch: WriteBatch
    result: IngestResult = field(default_factory=IngestResult)
    changes: list[ChangeEvent] = field(default_factory=list)
    messages: list[PendingMessage] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    outcome: WriteOutcome | None = None
    new_drifts: list[Drift] = field(default_factory=list)  # stored by this call
    offload: bool = False  # detection on a thread: the loop keeps serving meanwhile


class Stage(Protocol):
    async def run(self, work: Work) -> None: ...


def event_severity(drifts: Iterable[Drift]) -> str:
    best = "info"
    for d in drifts:
        if best == "info" or RANK[d.severity] > RANK[best]:
            best = d.severity
    return best


class Detect:
    """Counts what did not decode, runs detection on each change, fills the write batch."""

    def __init__(self, detector: Detector, store_readonly_events: bool) -> None:
        self.detector = detector
        self.store_readonly_events = store_readonly_events

    async def run(self, work: Work) -> None:
        if work.offload:
            await asyncio.to_thread(self.fill, work)
        else:
            self.fill(work)

    def fill(self, work: Work) -> None:
        """Judge every item (pure: safe on a thread, as the work is this call's alone)."""
        result, batch, messages, skipped = work.result, work.batch, work.messages, work.skipped
        detector = self.detector
        for item in work.items:
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
                messages.append(PendingMessage("events", "falco", alert_body(item), item.id))
                continue
            result.changes += 1
            try:
                detection = detector.detect(item)
            except Exception as exc:  # a detection bug must cost one record, not the request
                self._refuse(work, item, exc)
                continue
            if detection.skipped:
                skipped[detection.skipped] += 1
            if item.read_only and not self.store_readonly_events:
                continue
            work.changes.append(item)
            severity = event_severity(detection.drifts)
            batch.events.append((item, severity))
            # Event ids and drift ids never collide: a drift id is derived, not an event's.
            body = event_body(item, severity)
            messages.append(PendingMessage("events", "event", body, item.event_id))
            for drift in detection.drifts:
                batch.drifts.append(drift)
                messages.append(PendingMessage("drifts", "drift", drift_payload(drift), drift.id))
        counters = batch.counters
        counters["ingest.records"] = result.accepted + result.rejected
        for reason, n in result.reasons.items():
            counters[f"ingest.rejected.{reason}"] = n
        for reason, n in skipped.items():
            counters[f"ingest.not_drift.{reason}"] = n

    @staticmethod
    def _refuse(work: Work, event: ChangeEvent, exc: Exception) -> None:
        position, detail = f"event {event.event_id}", f"{type(exc).__name__}: {exc}"
        work.result.changes -= 1
        work.result.refuse(position, DETECTION_FAILED, detail)
        try:
            value: bytes | None = orjson.dumps(event.record, default=repr)
        except (TypeError, ValueError):
            value = None
        batch = work.batch
        reason = f"{DETECTION_FAILED}: {detail}"
        batch.dead_letters.append(
            DeadLetter(batch.origin, position, 0, -1, None, value, reason, batch.received_at)
        )


class Persist:
    """Writes the batch (group commit); the writer publishes once it is durable."""

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer

    async def run(self, work: Work) -> None:
        batch = work.batch
        if not (batch.events or batch.alerts or batch.counters or batch.dead_letters):
            return
        outcome = work.outcome = await self.writer.submit(batch, work.messages)
        result = work.result
        for position, reason in outcome.failed:
            result.refuse(position, STORE_REFUSED, reason)
        new = work.new_drifts = [d for d in batch.drifts if d.id in outcome.new_drifts]
        result.drifts = len(new)
        result.drift_ids = [d.id for d in new]
        result.repeats = len(outcome.merged_drifts)
        result.suppressed = len(outcome.suppressed_drifts)


class Observe:
    """Hands what was stored (changes, new drifts, new alerts) to the observers (the graph)."""

    def __init__(self, observers: list[Observer]) -> None:
        self.observers = observers

    async def run(self, work: Work) -> None:
        outcome = work.outcome
        if outcome is None or not self.observers:
            return
        alerts = [a for a in work.batch.alerts if a.id in outcome.new_alerts]
        for observer in self.observers:
            observer(work.changes, work.new_drifts, alerts)
