"""What storage offers the rest of Driftline: the Store protocol and its value types.

A backend implements `Store`; nothing outside `monitor/store/` knows which one runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from monitor.lifecycle import LifecycleError, Merge
from monitor.types import ChangeEvent, Drift, FalcoAlert


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """A store's tunables (one object, passed in; nothing reads module globals)."""

    synchronous: str = "FULL"
    # The WAL is checkpointed off the writer's commit path, by a background thread, this
    # often (seconds); a checkpointed WAL is truncated back to `wal_size_limit` bytes.
    checkpoint_interval: float = 1.0
    wal_size_limit: int = 64 * 1024 * 1024
    # facet_counts blocks hold 2**block_bits consecutive drift numbers. Part of the data:
    # migration 4 counted with 14, so an existing store keeps the value it was built with.
    block_bits: int = 14
    # Rows an OFFSET walk may skip before the block counts are cheaper.
    deep_offset: int = 20_000
    dead_letter_max_bytes: int = 1024 * 1024


class StorageFault(Exception):
    """The store cannot make writes durable (disk full, a read-only or removed data dir);
    the message names the cause and the path. Nothing of the refused write was kept."""

    def __init__(self, message: str, full: bool = False) -> None:
        super().__init__(message)
        self.full = full


@dataclass(frozen=True, slots=True)
class StatusChange:
    drift_id: str
    status: str
    note: str | None = None
    capture_baseline: bool = False
    actor: str | None = None  # who asked: "name (key id)"


@dataclass(frozen=True, slots=True)
class DriftUpdated:
    """A stored drift a repeat or a status move changed: its row after, and what changed."""

    drift: dict[str, Any]
    change: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Retention:
    """Limits for the pruner; None means no limit of that kind."""

    event_max_age: str | None = None  # ISO time: events received before this go
    event_max_rows: int | None = None
    resolved_max_age: str | None = None  # resolved drifts older than this go
    drift_max_rows: int | None = None  # oldest resolved first, then oldest
    message_max_rows: int | None = None
    chunk: int = 5000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record a source could not decode, kept with its reason (never blocks its stream)."""

    source: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    at: str


@dataclass
class WriteBatch:
    """What one ingest (or one API action) produced; written in one transaction."""

    events: list[tuple[ChangeEvent, str]] = field(default_factory=list)  # (event, severity)
    alerts: list[FalcoAlert] = field(default_factory=list)
    drifts: list[Drift] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    status_changes: list[StatusChange] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    retention: Retention | None = None
    received_at: str = ""
    origin: str = "ingest"  # the dead letters' source for records the store refuses


class MessageRow(Protocol):
    """A hub message as the store keeps it (the store never builds one)."""

    @property
    def seq(self) -> int: ...
    def row(self) -> tuple[int, str, str, str, bytes]: ...


@dataclass
class WriteOutcome:
    """What a batch changed, in the order it happened; `messages` are what was published."""

    new_drifts: set[str] = field(default_factory=set)
    merges: list[Merge] = field(default_factory=list)  # flood control: occurrence added
    suppressed_drifts: set[str] = field(default_factory=set)  # a baseline or a suppression
    new_alerts: set[str] = field(default_factory=set)
    new_events: set[str] = field(default_factory=set)
    updates: list[DriftUpdated] = field(default_factory=list)  # in the order they happened
    status_results: list[dict[str, Any] | LifecycleError] = field(default_factory=list)
    pruned: dict[str, int] = field(default_factory=dict)
    dead_lettered: int = 0  # dead letters not kept before
    messages: Sequence[Any] = ()
    failed: list[tuple[str, str]] = field(default_factory=list)  # (record, reason) refused

    @property
    def merged_drifts(self) -> set[str]:
        return {m.parent for m in self.merges}


# A queued delivery: (output id, message seq, message type, routed event, timestamp, body).
DeliveryRow = tuple[str, int, str, str, str, bytes]


class Router(Protocol):
    """Which outputs want a group's messages: run inside the write's transaction."""

    def route(self, messages: Sequence[Any]) -> Sequence[DeliveryRow]: ...


@dataclass(frozen=True, slots=True)
class OutputRow:
    """A stored output: its spec (JSON, secrets included) and where it came from."""

    id: str
    name: str
    origin: str  # api | config
    spec: bytes
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message queued for one output (`id` is its Delivery-Id)."""

    id: int
    output_id: str
    seq: int
    type: str
    event: str
    ts: str
    body: bytes
    status: str  # pending | delivered | dead
    attempts: int
    next_at: float  # epoch seconds
    last_error: str | None
    created_at: float
    done_at: float | None


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What a sender did with a delivery."""

    id: int
    status: str
    attempts: int
    next_at: float
    error: str | None
    done_at: float | None


# Turns a group's outcomes into the messages to keep with them, one list per batch, inside
# the write's transaction (so a restart replays exactly what was delivered).
Publisher = Callable[[Sequence[WriteBatch], Sequence[WriteOutcome]], Sequence[Sequence[MessageRow]]]


@dataclass(frozen=True, slots=True)
class DriftFilter:
    severity: str | None = None
    resource_type: str | None = None
    kind: str | None = None
    status: str | None = None
    actor: str | None = None
    provider: str | None = None
    resource_id: str | None = None
    drift_type: str | None = None
    since: str | None = None
    until: str | None = None


@dataclass(frozen=True, slots=True)
class EventFilter:
    severity: str | None = None
    provider: str | None = None
    kind: str | None = None
    since: str | None = None
    until: str | None = None


class Outbox(Protocol):
    """Outputs and their queues (methods block; callers run them off the loop)."""

    def outputs(self) -> list[OutputRow]: ...
    def put_output(self, row: OutputRow) -> None: ...
    def delete_output(self, output_id: str) -> bool: ...
    def due_deliveries(self, output_id: str, limit: int) -> list[Delivery]: ...
    def record_deliveries(self, output_id: str, results: Sequence[DeliveryResult]) -> None: ...
    def deliveries(
        self, output_id: str, status: str | None, page: int, limit: int
    ) -> tuple[list[Delivery], int]: ...
    def retry_delivery(self, output_id: str, delivery_id: int) -> Delivery | None: ...
    def delivery_counts(self, output_id: str) -> dict[str, int]: ...


class Store(Outbox, Protocol):
    """What the daemon needs from storage. Methods block; callers run reads off the loop.

    `start()` starts background work and must precede writes; `close()` ends it. A write is
    `stage` (the statements, in a transaction left open; `publish` supplies the messages to
    keep with it, `router` the deliveries to queue for them) then `commit_staged` (durable;
    may run on another thread); `write` does both.
    """

    def start(self) -> None: ...
    def write(
        self, batches: Sequence[WriteBatch], publish: Publisher | None = None
    ) -> list[WriteOutcome]: ...
    def stage(
        self,
        batches: Sequence[WriteBatch],
        publish: Publisher | None = None,
        router: Router | None = None,
    ) -> list[WriteOutcome]: ...
    def commit_staged(self) -> None: ...
    def check(self) -> str | None: ...
    def probe(self) -> None: ...
    def drifts(self, f: DriftFilter, page: int, limit: int) -> tuple[list[dict[str, Any]], int]: ...
    def drift(self, drift_id: str) -> dict[str, Any] | None: ...
    def drift_detail(self, drift_id: str) -> dict[str, Any] | None: ...
    def drifts_for_event(self, event_id: str) -> list[dict[str, Any]]: ...
    def summary(self) -> dict[str, Any]: ...
    def events(self, f: EventFilter, page: int, limit: int) -> tuple[list[dict[str, Any]], int]: ...
    def event(self, event_id: str) -> dict[str, Any] | None: ...
    def events_since(self, since: str) -> int: ...
    def related_events(self, drift: dict[str, Any], limit: int) -> list[dict[str, Any]]: ...
    def messages_since(
        self, seq: int, topics: Iterable[str], limit: int
    ) -> list[tuple[int, str, str, str, bytes]]: ...
    def first_seq(self) -> int | None: ...
    def last_seq(self) -> int: ...
    def counters(self) -> dict[str, int]: ...
    def dead_letter(self, letter: DeadLetter) -> bool: ...
    def dead_letters(self, page: int, limit: int) -> tuple[list[dict[str, Any]], int]: ...
    def suppressed_drifts(self, page: int, limit: int) -> tuple[list[dict[str, Any]], int]: ...
    def noise_items(self) -> list[tuple[str, dict[str, Any]]]: ...
    def put_noise(self, kind: str, item_id: str, body: dict[str, Any]) -> None: ...
    def delete_noise(self, kind: str, item_id: str) -> bool: ...
    def counts(self) -> dict[str, Any]: ...
    def close(self) -> None: ...
