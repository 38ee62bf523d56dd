"""`/metrics`: a running daemon's counters in the Prometheus text format.

Nothing is counted twice: the families are built at scrape time from the counters the
daemon keeps anyway (hub, state, graph, sources, output senders, the store's counter table)
plus the few the ingest path records (monitor/metrics.py), so a scrape costs a few small SQL
reads (the counters, and each output's backlog on its queue index) and ingest pays nothing
for a family nobody scrapes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

if TYPE_CHECKING:
    from monitor.app.daemon import Daemon

STORED = "drifts.severity.", "drifts.status.", "events.kind."


class _Scrape:
    """One scrape's families (generate_latest takes anything with `collect`)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def _counter(name: str, doc: str, labels: list[str], values: Iterable[Any]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels)
    for *label_values, value in values:
        family.add_metric([str(v) for v in label_values], value)
    return family


def _gauge(name: str, doc: str, labels: list[str], values: Iterable[Any]) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for *label_values, value in values:
        family.add_metric([str(v) for v in label_values], value)
    return family


def _ingest(d: Daemon) -> Iterator[Metric]:
    m = d.pipeline.metrics
    yield _counter(
        "driftline_records_received",
        "Records received, per source",
        ["source"],
        sorted(m.received.items()),
    )
    yield _counter(
        "driftline_records_decoded",
        "Records decoded, per source",
        ["source"],
        sorted(m.decoded.items()),
    )
    yield _counter(
        "driftline_records_rejected",
        "Records rejected, per source and reason",
        ["source", "reason"],
        sorted((s, r, n) for (s, r), n in m.rejected.items()),
    )
    yield _counter(
        "driftline_drifts",
        "New drifts stored, per kind and severity",
        ["kind", "severity"],
        sorted((str(k), s, n) for (k, s), n in m.drifts.items()),
    )
    yield _counter("driftline_store_commits", "Group commits", [], [(d.pipeline.writer.commits,)])
    yield from m.histograms()


def _stored(counters: dict[str, int]) -> Iterator[Metric]:
    def group(prefix: str) -> list[tuple[str, int]]:
        return sorted((k[len(prefix) :], v) for k, v in counters.items() if k.startswith(prefix))

    severity, status, kind = STORED
    yield _gauge(
        "driftline_stored_drifts", "Drifts in the store", [], [(counters.get("drifts.total", 0),)]
    )
    yield _gauge(
        "driftline_stored_drifts_by_severity",
        "Drifts in the store, per severity",
        ["severity"],
        group(severity),
    )
    yield _gauge(
        "driftline_stored_drifts_by_status",
        "Drifts in the store, per status",
        ["status"],
        group(status),
    )
    yield _gauge("driftline_stored_events", "Events in the store, per kind", ["kind"], group(kind))


def _live(d: Daemon) -> Iterator[Metric]:
    hub = d.hub
    subscribers = list(hub.subscribers.values())
    yield _gauge(
        "driftline_hub_subscribers", "Live clients (SSE and WebSocket)", [], [(len(subscribers),)]
    )
    yield _gauge(
        "driftline_hub_queued_messages",
        "Messages waiting in subscriber queues",
        [],
        [(sum(len(s.queue) for s in subscribers),)],
    )
    yield _counter("driftline_hub_published", "Messages published", [], [(hub.published,)])
    yield _counter(
        "driftline_hub_lagged_disconnects",
        "Clients dropped because their queue overflowed",
        [],
        [(hub.lagged_total,)],
    )


def _state_graph(d: Daemon) -> Iterator[Metric]:
    s = d.state
    yield _gauge(
        "driftline_state_resources",
        "Managed resources in the state index",
        [],
        [(len(d.detector.index),)],
    )
    yield _gauge("driftline_state_files", "Terraform states loaded", [], [(len(s.states),)])
    yield _counter(
        "driftline_state_reloads", "State reloads that changed the index", [], [(s.reloads,)]
    )
    yield _counter(
        "driftline_state_reload_errors",
        "State polls that ended with a new error",
        [],
        [(s.reload_errors,)],
    )
    yield _gauge(
        "driftline_graph_nodes", "Nodes in the live graph", [], [(d.graph.g.number_of_nodes(),)]
    )


def _kafka(d: Daemon) -> Iterator[Metric]:
    source = d.sources.get("kafka")
    if source is None:
        return
    status = source.status()
    lag = [
        (p["topic"], p["partition"], p["lag"])
        for p in status.get("partitions", [])
        if p.get("lag") is not None
    ]
    yield _gauge(
        "driftline_kafka_consumer_lag",
        "Records behind the partition's end",
        ["topic", "partition"],
        lag,
    )
    yield _counter("driftline_kafka_commits", "Offset commits", [], [(status["commits"],)])
    yield _counter(
        "driftline_kafka_commit_failures",
        "Offset commits that failed",
        [],
        [(status["commit_failures"],)],
    )
    yield _counter(
        "driftline_kafka_rebalances", "Consumer group rebalances", [], [(status["rebalances"],)]
    )


def _outputs(d: Daemon, backlog: dict[str, int]) -> Iterator[Metric]:
    outputs = d.outputs
    senders = [(outputs.specs[i].name, s) for i, s in outputs.senders.items() if i in outputs.specs]
    senders.sort(key=lambda pair: pair[0])
    yield _counter(
        "driftline_output_deliveries_sent",
        "Deliveries a receiver accepted, per output (since start)",
        ["output"],
        [(name, s.stats.delivered) for name, s in senders],
    )
    yield _counter(
        "driftline_output_delivery_failures",
        "Delivery attempts that failed (each retried or dead), per output (since start)",
        ["output"],
        [(name, s.stats.failed_attempts) for name, s in senders],
    )
    yield _counter(
        "driftline_output_deliveries_dead",
        "Deliveries given up on (attempts or age), per output (since start)",
        ["output"],
        [(name, s.stats.dead) for name, s in senders],
    )
    yield _gauge(
        "driftline_output_backlog",
        "Deliveries waiting to be sent, per output",
        ["output"],
        [(name, backlog.get(name, 0)) for name, _ in senders],
    )
    yield _gauge(
        "driftline_output_degraded",
        "1 while the output's receiver keeps failing",
        ["output"],
        [(name, int(s.degraded())) for name, s in senders],
    )


def _backlog(d: Daemon) -> dict[str, int]:
    """Pending deliveries per output name (a blocking store read)."""
    specs = dict(d.outputs.specs)
    return {s.name: d.store.delivery_counts(i)["pending"] for i, s in specs.items()}


def _reads(d: Daemon) -> tuple[dict[str, Any], dict[str, int]]:
    """The store's counters and the outputs' backlog: one trip to a thread for both."""
    return d.store.counters(), _backlog(d)


async def render(daemon: Daemon) -> tuple[bytes, str]:
    """The exposition text and its content type."""
    counters, backlog = await asyncio.to_thread(_reads, daemon)
    families = [
        *_ingest(daemon),
        *_stored(counters),
        *_live(daemon),
        *_state_graph(daemon),
        *_kafka(daemon),
        *_outputs(daemon, backlog),
    ]
    return generate_latest(_Scrape(families)), CONTENT_TYPE_LATEST
