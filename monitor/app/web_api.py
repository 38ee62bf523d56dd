"""The web facade (web.facade.Api) over a running Daemon: the one place web meets internals."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from starlette.applications import Starlette

from graph.builder import GraphBuilder
from monitor.app import metrics
from monitor.app.daemon import Daemon
from monitor.auth.service import Access
from monitor.hub import Message, Subscriber
from monitor.noise.catalogue import catalogue_view
from monitor.outputs import Outputs
from monitor.pipeline import IngestResult
from monitor.statesrc import Credentials, SourceError, parse_source
from monitor.store import DeadLetter, DriftFilter, EventFilter, StatusChange
from monitor.tfstate import ResourceInstance
from monitor.types import Decoded
from web.app import create_app
from web.facade import HealthCounters, MessageRow, Row, StateView, WebSettings


class DaemonApi:
    """Implements web.facade.Api by delegating to the daemon's components."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        c = daemon.config
        self._settings = WebSettings(
            max_body_bytes=c.max_body_bytes,
            max_decompressed_bytes=c.max_decompressed_bytes,
            max_records=c.max_records_per_request,
            max_depth=c.max_json_depth,
            body_read_seconds=c.body_read_seconds,
            max_ws_message_bytes=c.max_ws_message_bytes,
            sse_keepalive_seconds=c.sse_keepalive_seconds,
            cors_origins=tuple(c.cors_origins),
            k8s_cluster=c.k8s_cluster,
            store_backend=c.store,
            demo=c.demo,
            auth_enabled=c.auth,
            allowed_hosts=tuple(c.allowed_hosts),
            auth_failures_per_minute=c.auth_failures_per_minute,
            session_hours=c.session_hours,
            metrics_port=c.metrics_port,
        )
        self._http_records = 0
        self._http_rejected = 0

    @property
    def settings(self) -> WebSettings:
        return self._settings

    @property
    def access(self) -> Access:
        return self.daemon.access

    @property
    def outputs(self) -> Outputs:
        return self.daemon.outputs

    async def start(self) -> None:
        await self.daemon.start()

    async def stop(self) -> None:
        await self.daemon.stop()

    # -- ingest

    def source_for(self, event_name: str) -> str | None:
        return self.daemon.catalogue.source_for(event_name)

    async def ingest(
        self,
        items: Iterable[Decoded],
        origin: str = "http",
        dead_letters: Sequence[DeadLetter] = (),
        offload: bool = False,
    ) -> IngestResult:
        # Only the HTTP endpoints come this way: these counters are HTTP's own.
        result = await self.daemon.pipeline.ingest(items, origin, dead_letters, offload)
        self._http_records += result.accepted + result.rejected
        self._http_rejected += result.rejected
        return result

    async def set_status(self, change: StatusChange) -> Row:
        return await self.daemon.pipeline.set_status(change)

    # -- queries

    @property
    def graph(self) -> GraphBuilder:
        return self.daemon.graph

    def state(self) -> StateView:
        s = self.daemon.state
        return StateView(
            states=tuple(s.states),
            resource_count=len(self.daemon.detector.index),
            loaded_at=s.loaded_at,
            reloads=s.reloads,
            error=s.error,
            sources=tuple(self.state_sources()),
        )

    def resources(self) -> Sequence[ResourceInstance]:
        return self.daemon.detector.index.resources

    def resource(self, address: str) -> ResourceInstance | None:
        return self.daemon.detector.index.by_address.get(address)

    def source_statuses(self) -> dict[str, Row]:
        return {name: src.status() for name, src in self.daemon.sources.items()}

    async def events(self, f: EventFilter, page: int, limit: int) -> tuple[list[Row], int]:
        return await asyncio.to_thread(self.daemon.store.events, f, page, limit)

    async def event(self, event_id: str) -> Row | None:
        return await asyncio.to_thread(self.daemon.store.event, event_id)

    async def drifts_for_event(self, event_id: str) -> list[Row]:
        return await asyncio.to_thread(self.daemon.store.drifts_for_event, event_id)

    async def drifts(self, f: DriftFilter, page: int, limit: int) -> tuple[list[Row], int]:
        return await asyncio.to_thread(self.daemon.store.drifts, f, page, limit)

    async def drift(self, drift_id: str) -> Row | None:
        return await asyncio.to_thread(self.daemon.store.drift_detail, drift_id)

    async def drift_summary(self) -> Row:
        return await asyncio.to_thread(self.daemon.store.summary)

    async def related_events(self, drift: Row, limit: int) -> list[Row]:
        return await asyncio.to_thread(self.daemon.store.related_events, drift, limit)

    async def dead_letters(self, page: int, limit: int) -> tuple[list[Row], int]:
        return await asyncio.to_thread(self.daemon.store.dead_letters, page, limit)

    async def counts(self) -> Row:
        return await asyncio.to_thread(self.daemon.store.counts)

    async def events_since(self, since: str) -> int:
        return await asyncio.to_thread(self.daemon.store.events_since, since)

    # -- state sources

    def state_sources(self) -> list[Row]:
        return self.daemon.state_sources.views()

    async def add_state_source(self, body: Row) -> Row:
        """Raises SourceError (a ValueError) for a URL or option that cannot work."""
        strings = {k: body.get(k) for k in ("url", "token", "username", "password", "endpoint")}
        for name, value in strings.items():
            if value is not None and not isinstance(value, str):
                raise SourceError(f"{name} must be a string")
        poll = body.get("poll_seconds")
        if poll is not None and (isinstance(poll, bool) or not isinstance(poll, (int, float))):
            raise SourceError("poll_seconds must be a number of seconds")
        creds = Credentials(strings["token"], strings["username"], strings["password"])
        c = self.daemon.config
        url = str(strings["url"] or "")
        default = c.state_s3_endpoint_url if url.startswith("s3://") else c.state_tfc_address
        spec = parse_source(url, creds, strings["endpoint"] or default, poll)
        return await self.daemon.add_state_source(spec)

    async def remove_state_source(self, source_id: str) -> Row | None:
        return await self.daemon.remove_state_source(source_id)

    # -- noise control

    def noise_items(self, kind: str) -> list[Row]:
        return self.daemon.noise_control.views(kind)

    async def add_noise(self, kind: str, body: Row, actor: str) -> Row:
        return await self.daemon.noise_control.add(kind, body, actor)

    async def patch_noise(self, kind: str, item_id: str, body: Row) -> Row | None:
        return await self.daemon.noise_control.patch(kind, item_id, body)

    async def remove_noise(self, kind: str, item_id: str) -> Row | None:
        return await self.daemon.noise_control.remove(kind, item_id)

    def rule_catalogue(self) -> list[Row]:
        d = self.daemon
        return catalogue_view(d.catalogue, d.severity, d.noise.current)

    async def suppressed_drifts(self, page: int, limit: int) -> tuple[list[Row], int]:
        return await asyncio.to_thread(self.daemon.store.suppressed_drifts, page, limit)

    # -- health

    def counters(self) -> HealthCounters:
        d = self.daemon
        return HealthCounters(
            started_at=d.started_at,
            store_commits=d.pipeline.writer.commits,
            subscribers=len(d.hub.subscribers),
            seq=d.hub.seq,
            published=d.hub.published,
            lagged_disconnects=d.hub.lagged_total,
            http_records=self._http_records,
            http_rejected=self._http_rejected,
        )

    async def last_seq(self) -> int:
        return await asyncio.to_thread(self.daemon.store.last_seq)

    async def store_fault(self) -> str | None:
        return await self.daemon.store_fault()

    async def metrics(self) -> tuple[bytes, str]:
        return await metrics.render(self.daemon)

    # -- live

    def now(self) -> str:
        return self.daemon.clock()

    def head_seq(self) -> int:
        return self.daemon.hub.seq

    def subscribe(self, topics: Iterable[str]) -> Subscriber:
        return self.daemon.hub.subscribe(topics)

    def unsubscribe(self, sub: Subscriber) -> None:
        self.daemon.hub.unsubscribe(sub)

    def buffered_since(self, seq: int, topics: frozenset[str]) -> list[Message] | None:
        return self.daemon.hub.buffered_since(seq, topics)

    async def oldest_seq(self) -> int | None:
        return await asyncio.to_thread(self.daemon.store.first_seq)

    async def messages_since(
        self, seq: int, topics: frozenset[str], limit: int
    ) -> list[MessageRow]:
        return await asyncio.to_thread(self.daemon.store.messages_since, seq, topics, limit)


def web_app(daemon: Daemon) -> Starlette:
    """The Starlette app serving `daemon` (it starts and stops with the app's lifespan)."""
    return create_app(DaemonApi(daemon))
