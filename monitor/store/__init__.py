"""Durable storage of events, alerts, drifts, their lifecycle and hub messages.

`Store` (protocol.py) is what the rest of Driftline uses; `SqliteStore` is the embedded
backend. A second backend is a sibling module implementing the same protocol.
"""

from monitor.lifecycle import DRIFT_TYPES, LifecycleError
from monitor.store.faults import as_fault as storage_fault
from monitor.store.protocol import (
    DeadLetter,
    Delivery,
    DeliveryResult,
    DeliveryRow,
    DriftFilter,
    DriftUpdated,
    EventFilter,
    MessageRow,
    Outbox,
    OutputRow,
    Publisher,
    Retention,
    Router,
    StatusChange,
    StorageFault,
    Store,
    StoreSettings,
    WriteBatch,
    WriteOutcome,
)
from monitor.store.rows import alert_body, drift_payload, event_body
from monitor.store.sqlite import SqliteStore

__all__ = [
    "DRIFT_TYPES",
    "DeadLetter",
    "Delivery",
    "DeliveryResult",
    "DeliveryRow",
    "DriftFilter",
    "DriftUpdated",
    "EventFilter",
    "LifecycleError",
    "MessageRow",
    "Outbox",
    "OutputRow",
    "Publisher",
    "Retention",
    "Router",
    "SqliteStore",
    "StatusChange",
    "StorageFault",
    "Store",
    "StoreSettings",
    "WriteBatch",
    "WriteOutcome",
    "alert_body",
    "drift_payload",
    "event_body",
    "storage_fault",
]
