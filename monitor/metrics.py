"""What the ingest path measures as it runs: latency histograms and per-source record counts.

Everything else Driftline exports (hub, state, graph, Kafka, the store's totals) is read
when scraped; only what exists for an instant (a latency) or per call (a source's records)
is recorded here, with a few additions per ingest call and per group commit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from prometheus_client import Histogram
from prometheus_client.metrics_core import Metric

# Seconds: a group commit is ~0.1 ms in memory, 1-20 ms with fsync, worse on a slow disk.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class IngestMetrics:
    """Histograms and counters the pipeline and the store writer update as they run."""

    def __init__(self) -> None:
        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            # registry=None: each daemon owns its metrics (tests run many in one process).
            return Histogram(name, doc, buckets=buckets, registry=None)

        self.ingest_to_stored = histogram(
            "driftline_ingest_to_stored_seconds",
            "From an ingest call to its records being committed",
            LATENCY_BUCKETS,
        )
        self.stored_to_published = histogram(
            "driftline_stored_to_published_seconds",
            "From a commit to its messages being queued to every subscriber",
            LATENCY_BUCKETS,
        )
        self.commit = histogram(
            "driftline_store_commit_seconds", "One group commit (COMMIT and fsync)", LATENCY_BUCKETS
        )
        self.commit_batches = histogram(
            "driftline_store_commit_batches", "Write batches in one group commit", BATCH_BUCKETS
        )
        self.received: Counter[str] = Counter()  # source -> records
        self.decoded: Counter[str] = Counter()  # source -> records
        self.rejected: Counter[tuple[str, str]] = Counter()  # (source, reason) -> records
        self.drifts: Counter[tuple[str, str]] = Counter()  # (kind, severity) -> drifts

    def histograms(self) -> Iterable[Metric]:
        """The histograms' families, for a scrape."""
        for h in (self.ingest_to_stored, self.stored_to_published, self.commit):
            yield from h.collect()
        yield from self.commit_batches.collect()
