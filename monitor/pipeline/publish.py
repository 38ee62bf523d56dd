"""The publish stage: what a write changed, as hub messages with their sequence numbers.

It runs inside the write's transaction (the store keeps the messages before COMMIT), so the
numbers it draws are commit order, which is delivery order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from monitor.hub import Hub, Message
from monitor.store import WriteBatch, WriteOutcome


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """A message to publish if its key (a drift, alert or event id) turns out new (None:
    always)."""

    topic: str
    type: str
    payload: dict[str, Any]
    key: str | None = None


def outcome_messages(
    hub: Hub, batch: WriteBatch, outcome: WriteOutcome, pending: Sequence[PendingMessage]
) -> list[Message]:
    """Drift updates (repeats, status moves) in order, then the pending messages whose key is
    new, each key once."""
    at = batch.received_at
    out = [
        Message(hub.next_seq(), "drifts", "drift_update", at, {**u.drift, "update": u.change})
        for u in outcome.updates
    ]
    fresh = outcome.new_drifts | outcome.new_alerts | outcome.new_events
    for pm in pending:
        if pm.key is None:
            out.append(Message(hub.next_seq(), pm.topic, pm.type, at, pm.payload))
        elif pm.key in fresh:
            fresh.discard(pm.key)
            out.append(Message(hub.next_seq(), pm.topic, pm.type, at, pm.payload))
    return out


class Publisher:
    """Builds a group's messages (one list per batch) for the store to keep with it."""

    def __init__(self, hub: Hub, pending: Sequence[Sequence[PendingMessage]]) -> None:
        self.hub = hub
        self.pending = pending

    def __call__(
        self, batches: Sequence[WriteBatch], outcomes: Sequence[WriteOutcome]
    ) -> list[list[Message]]:
        return [
            outcome_messages(self.hub, b, o, p)
            for b, o, p in zip(batches, outcomes, self.pending, strict=True)
        ]
