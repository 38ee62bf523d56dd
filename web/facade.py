"""What the web layer needs from a running Driftline: small protocols the app implements.

The handlers see these and nothing else of the daemon, so web/ never imports the
composition root and the daemon's internals can change without touching a route.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import HTTPConnection

from graph.builder import GraphBuilder
from monitor.auth.service import Access
from monitor.hub import Message, Subscriber
from monitor.outputs import Outputs
from monitor.pipeline import IngestResult
from monitor.store import DeadLetter, DriftFilter, EventFilter, StatusChange
from monitor.tfstate import ResourceInstance, TfState
from monitor.types import Decoded

Row = dict[str, Any]
MessageRow = tuple[int, str, str, str, bytes]


@dataclass(frozen=True)
class WebSettings:
    """The configuration the handlers read."""

    max_body_bytes: int
    max_decompressed_bytes: int  # a gzip body after gunzip
    max_records: int  # records in one ingest request
    max_depth: int  # JSON nesting in one ingest request
    body_read_seconds: float  # a request body must arrive within this
    max_ws_message_bytes: int
    sse_keepalive_seconds: float
    cors_origins: tuple[str, ...]
    k8s_cluster: str | None
    store_backend: str
    demo: bool
    auth_enabled: bool = True
    allowed_hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
    auth_failures_per_minute: int = 10
    session_hours: float = 12.0
    metrics_port: int | None = None  # serves /metrics alone, without a key (loopback)


@dataclass(frozen=True)
class StateView:
    """The loaded Terraform state as /health and /api/v1/state describe it."""

    states: tuple[TfState, ...]
    resource_count: int
    loaded_at: str | None
    reloads: int
    error: str | None
    sources: tuple[Row, ...] = ()


@dataclass(frozen=True)
class HealthCounters:
    """Live counters for /health, read without I/O."""

    started_at: str | None
    store_commits: int
    subscribers: int
    seq: int
    published: int
    lagged_disconnects: int
    http_records: int  # records that came in over the HTTP ingest endpoints (only)
    http_rejected: int


class Ingest(Protocol):
    """Decoded records in, drifts stored and published; lifecycle changes."""

    def source_for(self, event_name: str) -> str | None: ...
    async def ingest(
        self,
        items: Iterable[Decoded],
        origin: str = "http",
        dead_letters: Sequence[DeadLetter] = (),
        offload: bool = False,
    ) -> IngestResult: ...
    async def set_status(self, change: StatusChange) -> Row: ...


class Queries(Protocol):
    """Reads: the state index, the store and the graph."""

    @property
    def graph(self) -> GraphBuilder: ...
    def state(self) -> StateView: ...
    def resources(self) -> Sequence[ResourceInstance]: ...
    def resource(self, address: str) -> ResourceInstance | None: ...
    def source_statuses(self) -> dict[str, Row]: ...
    async def events(self, f: EventFilter, page: int, limit: int) -> tuple[list[Row], int]: ...
    async def event(self, event_id: str) -> Row | None: ...
    async def drifts_for_event(self, event_id: str) -> list[Row]: ...
    async def drifts(self, f: DriftFilter, page: int, limit: int) -> tuple[list[Row], int]: ...
    async def drift(self, drift_id: str) -> Row | None: ...
    async def drift_summary(self) -> Row: ...
    async def related_events(self, drift: Row, limit: int) -> list[Row]: ...
    async def dead_letters(self, page: int, limit: int) -> tuple[list[Row], int]: ...
    async def counts(self) -> Row: ...
    async def events_since(self, since: str) -> int: ...


class Health(Protocol):
    """What /health reports."""

    def counters(self) -> HealthCounters: ...
    async def last_seq(self) -> int: ...
    async def store_fault(self) -> str | None: ...


class Live(Protocol):
    """The hub for SSE and WebSocket clients, and the store behind its resume buffer."""

    def now(self) -> str: ...
    def head_seq(self) -> int: ...
    def subscribe(self, topics: Iterable[str]) -> Subscriber: ...
    def unsubscribe(self, sub: Subscriber) -> None: ...
    def buffered_since(self, seq: int, topics: frozenset[str]) -> list[Message] | None: ...
    async def oldest_seq(self) -> int | None: ...
    async def messages_since(
        self, seq: int, topics: frozenset[str], limit: int
    ) -> list[MessageRow]: ...


class StateAdmin(Protocol):
    """State sources managed by admins; views never carry a token or password."""

    def state_sources(self) -> list[Row]: ...
    async def add_state_source(self, body: Row) -> Row: ...
    async def remove_state_source(self, source_id: str) -> Row | None: ...


class NoiseAdmin(Protocol):
    """Suppressions, custom and disabled rules, apply principals, the rule catalogue.

    `kind` is one of suppression, custom_rule, disabled_rule, apply_principal. Writes raise
    ValueError for a body that cannot work (a `Conflict` subclass for a duplicate)."""

    def noise_items(self, kind: str) -> list[Row]: ...
    async def add_noise(self, kind: str, body: Row, actor: str) -> Row: ...
    async def patch_noise(self, kind: str, item_id: str, body: Row) -> Row | None: ...
    async def remove_noise(self, kind: str, item_id: str) -> Row | None: ...
    def rule_catalogue(self) -> list[Row]: ...
    async def suppressed_drifts(self, page: int, limit: int) -> tuple[list[Row], int]: ...


class Metrics(Protocol):
    """What /metrics serves."""

    async def metrics(self) -> tuple[bytes, str]: ...


class Api(Ingest, Queries, Health, Live, StateAdmin, NoiseAdmin, Metrics, Protocol):
    """Everything the app serves; it starts and stops with the ASGI lifespan."""

    @property
    def settings(self) -> WebSettings: ...
    @property
    def access(self) -> Access: ...
    @property
    def outputs(self) -> Outputs: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


def api_of(conn: HTTPConnection) -> Api:
    """The facade the app was created with (requests and WebSockets alike)."""
    api: Api = conn.app.state.api
    return api
