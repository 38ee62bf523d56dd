"""Routing: which outputs want a message, decided inside the write's transaction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from monitor.hub import Message
from monitor.outputs.spec import OutputSpec
from monitor.store import DeliveryRow
from rules.severity import RANK

# The message types outputs receive; the rest (events, alerts, stats, graph) stay inside.
ROUTED = frozenset({"drift", "drift_update", "state_change"})


def event_of(m: Message) -> str:
    """What a message is to an output: new, update, resolved or state."""
    if m.type == "drift":
        return "new"
    if m.type == "state_change":
        return "state"
    update = m.payload.get("update") or {}
    if update.get("reason") == "status" and update.get("status") == "resolved":
        return "resolved"
    return "update"


def wants(spec: OutputSpec, event: str, m: Message) -> bool:
    """Does `spec` route `m` (as `event`)?"""
    if not spec.enabled or event not in spec.events:
        return False
    if spec.min_severity is not None and event != "state":
        severity = m.payload.get("severity")
        if severity not in RANK or RANK[severity] < RANK[spec.min_severity]:
            return False
    return not spec.filter or spec.filter.matches(m.facets())


class Router:
    """Queues a delivery per (message, output that wants it); remembers which outputs got
    some so their senders are woken once the write commits."""

    def __init__(self) -> None:
        self.specs: tuple[OutputSpec, ...] = ()
        self.touched: set[str] = set()
        self.wake: Callable[[set[str]], None] = lambda ids: None

    def route(self, messages: Sequence[Any]) -> list[DeliveryRow]:
        specs = self.specs
        if not specs:
            return []
        rows: list[DeliveryRow] = []
        for m in messages:
            if m.type not in ROUTED:
                continue
            event = event_of(m)
            for spec in specs:
                if wants(spec, event, m):
                    rows.append((spec.id, m.seq, m.type, event, m.timestamp, m.body()))
                    self.touched.add(spec.id)
        return rows

    def committed(self) -> None:
        """After COMMIT: wake the senders with new rows."""
        if self.touched:
            touched, self.touched = self.touched, set()
            self.wake(touched)
