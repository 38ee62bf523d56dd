"""The running daemon: state, detector, store, hub and pipeline, with explicit start/stop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from graph.builder import GraphBuilder
from graph.delta import GraphDelta
from graph.model import GraphLimits
from monitor.app.config import Config
from monitor.app.demo_replay import replay_forever
from monitor.app.sources import build_sources
from monitor.auth.service import Access
from monitor.clock import utc_now
from monitor.detect import Detector
from monitor.engine import build_index, load_rules
from monitor.hub import Hub
from monitor.noise import (
    DriftIgnore,
    IgnoreFileError,
    IgnoreFileWatch,
    Noise,
    NoiseRules,
    UnmanagedScope,
)
from monitor.noise.service import NoiseControl
from monitor.outputs import Outputs
from monitor.pipeline import Pipeline
from monitor.statesrc import PollResult, SourceSpec, StateSources, Timing, parse_source
from monitor.store import (
    DeadLetter,
    Retention,
    SqliteStore,
    StorageFault,
    Store,
    StoreSettings,
)
from monitor.tfstate import TfState
from monitor.types import Clock, OnItems
from rules.catalogue import Catalogue
from rules.severity import SeverityRules

log = logging.getLogger("driftline")
DEMO_DIR = Path(__file__).parent / "demo"


@dataclass
class StateStatus:
    """The loaded Terraform state and the last reload error."""

    states: list[TfState] = field(default_factory=list)
    loaded_at: str | None = None
    error: str | None = None
    reloads: int = 0
    reload_errors: int = 0  # polls that ended with an error other than the one before


class Daemon:
    """Everything `driftline serve` runs. Background tasks start in `start()`, never before."""

    def __init__(
        self,
        config: Config,
        clock: Clock = utc_now,
        rules: tuple[Catalogue, SeverityRules] | None = None,
    ) -> None:
        """`rules` are the already loaded catalogue and severity rules (else loaded here)."""
        self.config = config
        self.clock = clock
        self.catalogue, self.severity = rules or load_rules(config.severity_rules)
        specs = config.state_specs() or [parse_source(str(DEMO_DIR / "demo.tfstate"))]
        timing = Timing(
            config.state_poll_seconds,
            config.state_remote_poll_seconds,
            config.state_max_backoff_seconds,
        )
        self.state_sources = StateSources(specs, timing, clock)
        self.state = StateStatus(self.state_sources.load(), clock())
        index = build_index(self.state.states, self.catalogue)
        self.ignore_file = IgnoreFileWatch(config.ignore_file) if config.ignore_file else None
        self.noise = Noise(
            NoiseRules(
                ignore=self.ignore_file.load() if self.ignore_file else DriftIgnore(),
                unmanaged=UnmanagedScope.of(config.unmanaged_scope),
            )
        )
        self.detector = Detector(self.catalogue, self.severity, index, (), clock, self.noise)
        self.store: Store = self._open_store()
        self.noise_control = NoiseControl(self.noise, self.store, clock, config.apply_principals)
        self.noise_control.load()
        data_dir = None if config.store == "memory" else config.data_dir
        self.access = Access.open(data_dir, clock, enabled=config.auth)
        self.hub = Hub(
            config.resume_buffer, config.subscriber_queue, clock, start_seq=self.store.last_seq()
        )
        self.pipeline = Pipeline(self.detector, self.store, self.hub, clock)
        link_base = config.public_url or f"http://{config.host}:{config.port}"
        self.outputs = Outputs(self.store, config.outputs, link_base)
        self.pipeline.writer.router = self.outputs.router
        self.pipeline.writer.on_commit.append(self.outputs.router.committed)
        self.graph = GraphBuilder(
            index,
            GraphLimits(
                retention_seconds=config.graph_retention_hours * 3600,
                max_events=config.graph_max_events,
                max_drifts=config.graph_max_drifts,
                max_alerts=config.graph_max_alerts,
                window_seconds=config.graph_window_seconds,
                max_elements=config.graph_max_elements,
            ),
            clock,
        )
        self.pipeline.observers.append(self.graph.observer(self._publish_graph))
        self.sources = build_sources(config, self.ingest_as, self.catalogue, self.dead_letter)
        self.started_at: str | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    def _open_store(self) -> Store:
        if self.config.store == "memory":
            return SqliteStore(":memory:")
        settings = StoreSettings(synchronous=self.config.synchronous)
        return SqliteStore(Path(self.config.data_dir) / "driftline.db", settings)

    async def start(self) -> None:
        self.started_at = self.clock()
        self.store.start()
        await self.access.start()
        await self.pipeline.start()
        await self.outputs.start()
        for source in self.sources.values():
            await source.start()
        self._tasks.append(asyncio.create_task(self._watch_state(), name="state-watch"))
        self._tasks.append(asyncio.create_task(self._prune_forever(), name="pruner"))
        self._tasks.append(asyncio.create_task(self._stats_forever(), name="stats"))
        if self.ignore_file is not None:
            self._tasks.append(asyncio.create_task(self._watch_ignore_file(), name="driftignore"))
        if self.config.demo:
            demo = replay_forever(
                self.ingest_as("demo"), self.catalogue.source_for, self.config.demo_interval_seconds
            )
            self._tasks.append(asyncio.create_task(demo, name="demo"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for source in self.sources.values():
            with contextlib.suppress(Exception):
                await source.stop()
        self.hub.close_all()
        await self.pipeline.stop()
        await self.outputs.stop()
        self.store.close()
        await self.access.stop()

    def ingest_as(self, source: str) -> OnItems:
        """The pipeline's ingest for one source: its records are counted under its name."""
        return functools.partial(self.pipeline.ingest, origin=source)

    def _publish_graph(self, delta: GraphDelta) -> None:
        # Deltas are not stored: a client that reconnects refetches /api/v1/graph.
        self.hub.publish_ephemeral("graph", "graph", delta.as_dict())

    async def reload_state(self, force: bool = True, only: str | None = None) -> bool:
        """Poll every source (only the due ones unless `force`); a bad or unreachable one
        keeps its last good state. True when the index was rebuilt."""
        result = await asyncio.to_thread(self.state_sources.poll, force, only)
        error = self.state_sources.error()
        if error is not None and error != self.state.error:
            self.state.reload_errors += 1
        self.state.error = error
        if result.missing:
            await self.pipeline.publish("state", "state_missing", {"missing": list(result.missing)})
        if not result.changed:
            return False
        await self._apply_states(result)
        return True

    async def _apply_states(self, result: PollResult) -> None:
        states = self.state_sources.states()
        index = build_index(states, self.catalogue)
        self.pipeline.detector = self.detector = self.detector.with_index(index)
        delta = self.graph.reload_state(index)
        if delta is not None:
            self._publish_graph(delta)
        self.state.states = states
        self.state.loaded_at = self.clock()
        self.state.reloads += 1
        await self.pipeline.publish(
            "state",
            "state_change",
            {
                "resource_count": len(index),
                "changed": [s.summary() for s in result.changed],
                "files": [s.path for s in states],
                "loaded_at": self.state.loaded_at,
            },
        )
        log.info("state reloaded: %d resources", len(index))

    async def add_state_source(self, spec: SourceSpec) -> dict[str, Any]:
        """Watch one more source (SourceError if already watched); polled at once."""
        source = self.state_sources.add(spec)
        await self.reload_state(only=spec.id)
        return source.view()

    async def remove_state_source(self, source_id: str) -> dict[str, Any] | None:
        """Stop watching a source; its resources leave the index."""
        gone = self.state_sources.remove(source_id)
        if gone is None:
            return None
        self.state.error = self.state_sources.error()
        await self._apply_states(PollResult())
        return gone.view()

    async def store_fault(self) -> str | None:
        """Why the store does not take writes now, or None. After a refused write this tries
        a small one, so health recovers (and says so) once space returns."""
        fault = await asyncio.to_thread(self.store.check)
        if fault is not None or self.pipeline.writer.fault is None:
            return fault
        probed = await self.pipeline.writer.probe()
        return str(probed) if probed is not None else None

    async def dead_letter(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        reason: str,
    ) -> None:
        """Keep a record a source could not decode (Kafka's poison records)."""
        letter = DeadLetter("kafka", topic, partition, offset, key, value, reason, self.clock())
        await self.pipeline.dead_letter(letter)

    def retention(self) -> Retention:
        now = datetime.now(UTC)

        def ago(days: float) -> str:
            return (now - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")

        c = self.config
        return Retention(
            event_max_age=ago(c.event_retention_days),
            event_max_rows=c.max_events,
            resolved_max_age=ago(c.resolved_retention_days),
            drift_max_rows=c.max_drifts,
            message_max_rows=c.max_messages,
        )

    async def prune(self) -> dict[str, int]:
        """Apply retention until nothing is left to delete (in bounded rounds)."""
        total: dict[str, int] = {}
        for _ in range(1000):
            pruned = await self.pipeline.prune(self.retention())
            for k, v in pruned.items():
                total[k] = total.get(k, 0) + v
            if not any(v for k, v in pruned.items() if k != "messages"):
                break
        if any(total.values()):
            log.info("retention pruned %s", total)
        return total

    async def _prune_forever(self) -> None:
        while True:
            try:
                await self.prune()
            except StorageFault:
                pass  # the store writer logs a fault when it starts and when it ends
            except Exception:  # the pruner must outlive any one failure
                log.exception("pruner")
            await asyncio.sleep(self.config.prune_interval_seconds)

    async def publish_stats(self, last: dict[str, Any] | None = None) -> dict[str, Any]:
        """Publish a `stats` message when the totals moved since `last`."""
        summary = await asyncio.to_thread(self.store.summary)
        payload = {
            **summary,
            "resources": len(self.detector.index),
            "subscribers": len(self.hub.subscribers),
        }
        if payload != last:
            self.hub.publish_ephemeral("stats", "stats", payload)
        return payload

    async def _stats_forever(self) -> None:
        last: dict[str, Any] | None = None
        while True:
            await asyncio.sleep(self.config.stats_interval_seconds)
            if not any("stats" in s.topics for s in self.hub.subscribers.values()):
                continue
            try:
                last = await self.publish_stats(last)
            except Exception:  # a failed round must not end the publisher
                log.exception("stats publisher")

    def reload_ignore_file(self) -> bool:
        """Re-read the ignore file if it changed (a bad one keeps the last good); True when
        the new rules are in force."""
        if self.ignore_file is None:
            return False
        try:
            found = self.ignore_file.changed()
        except IgnoreFileError as exc:
            log.error("%s; keeping the last good version", exc)
            return False
        if found is None:
            return False
        for problem in found.problems:
            log.warning("ignore file: %s", problem)
        self.noise.update(ignore=found)
        log.info("ignore file reloaded: %d rules", len(found.lines))
        return True

    async def _watch_ignore_file(self) -> None:
        while True:
            await asyncio.sleep(self.config.state_poll_seconds)
            try:
                # On the loop: a stat every round, a read only when it changed, and the
                # swap cannot interleave with an API change to the same rules.
                self.reload_ignore_file()
            except Exception:  # the watcher must outlive any one bad read
                log.exception("ignore file watcher")

    async def _watch_state(self) -> None:
        while True:
            await asyncio.sleep(self.config.state_poll_seconds)
            try:
                await self.reload_state(force=False)
            except Exception:  # the watcher must outlive any one bad reload
                log.exception("state watcher")
