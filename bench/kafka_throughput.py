"""Kafka ingest throughput: KafkaSource feeding a real Pipeline vs a bare aiokafka consumer.

Preloads a topic (3 partitions) with amplified real CloudTrail records, then, in the same
run, measures (a) a bare consumer that only reads and orjson-parses every value, and
(b) KafkaSource -> Pipeline (detect, SQLite store, hub) with offsets committed as in
production. Two more figures say where (b)'s time goes: KafkaSource with an on_items that
does nothing (the Kafka side), and the same Pipeline fed the same records from memory (no
Kafka at all). Produce time is not measured; each rate runs from the first records in hand
to the last record done. KafkaSource runs with its production defaults (fetching and read-only
triage in a worker process, 16 batches in flight); `--no-worker` fetches with the group
consumer and decodes every record on the loop.

python -m bench.kafka_throughput [--records 1000000] [--resources 10000] [--bootstrap H:P]
    [--max-inflight 16] [--no-worker] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.detect_throughput import amplified
from monitor.detect import Detector
from monitor.hub import Hub
from monitor.pipeline import Decoded, IngestResult, Pipeline
from monitor.store import SqliteStore
from streams.documents import decode_bytes
from streams.formats import decoder_for
from streams.kafka import KafkaSource
from streams.kafka_options import KafkaOptions
from tests.support.kafka_broker import Broker, create_topic, kafka_broker, unique, wait_ready
from tests.support.realdata import cloudtrail_records
from tests.support.replay_state import bench_detector

CLOCK = "2026-01-01T00:00:00Z"
# Both readers fetch alike, so the ratio measures what Driftline adds, not fetch tuning.
FETCH = {
    "fetch_max_bytes": 64 * 1024 * 1024,
    "max_partition_fetch_bytes": 16 * 1024 * 1024,
    "fetch_max_wait_ms": 100,
}


@contextlib.asynccontextmanager
async def broker_at(bootstrap: str | None) -> AsyncIterator[Broker]:
    if bootstrap:
        await wait_ready(bootstrap)
        yield Broker(bootstrap)
        return
    async with kafka_broker() as broker:
        yield broker


async def preload(bootstrap: str, topic: str, data: list[bytes], partitions: int, codec: str):
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=False,
        acks=1,
        linger_ms=50,
        max_batch_size=1024 * 1024,
        max_request_size=16 * 1024 * 1024,
        compression_type=None if codec == "none" else codec,
    )
    await producer.start()
    try:
        pending: list[asyncio.Future[Any]] = []
        for n, value in enumerate(data):
            pending.append(await producer.send(topic, value, partition=n % partitions))
            if len(pending) >= 20_000:  # bound what waits in memory
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def bare(bootstrap: str, topic: str, partitions: int, total: int) -> float:
    """Seconds for a plain consumer to read and orjson-parse every record."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **FETCH)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        loads = orjson.loads
        seen = 0
        start: float | None = None
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if batch and start is None:
                start = time.perf_counter()
            for msgs in batch.values():
                for msg in msgs:
                    loads(msg.value)
                seen += len(msgs)
        assert start is not None
        return time.perf_counter() - start
    finally:
        await consumer.stop()


def detector_for(resources: int) -> tuple[Detector, int]:
    detector, _ = bench_detector(resources, clock=CLOCK)
    return detector, len(detector.index)


async def consume(
    bootstrap: str,
    topic: str,
    total: int,
    detector: Detector,
    args: argparse.Namespace,
    pipeline: Pipeline | None,
) -> tuple[float, dict[str, Any], int]:
    """Seconds for KafkaSource to hand every record to the pipeline (or to a no-op)."""
    done = asyncio.Event()
    seen = drifts = 0
    start: float | None = None

    async def ingest(items: list[Decoded]) -> IngestResult:
        nonlocal seen, drifts, start
        if start is None:
            start = time.perf_counter()
        result = await pipeline.ingest(items) if pipeline is not None else IngestResult()
        seen += len(items)
        drifts += result.drifts
        if seen >= total:
            done.set()
        return result

    options = KafkaOptions(
        bootstrap,
        {topic: "cloudtrail"},
        unique("bench"),
        max_batch=args.max_batch,
        max_inflight=args.max_inflight,
        worker=not args.no_worker,
        consumer_options={**FETCH, "session_timeout_ms": 2000, "heartbeat_interval_ms": 300},
    )
    source = KafkaSource(options, ingest, source_for=detector.catalogue.source_for)
    try:
        await source.start()
        await done.wait()
        elapsed = time.perf_counter() - (start or 0.0)
        await source.stop()  # the final commit is part of the work, but not of the rate
        return elapsed, source.status(), drifts
    finally:
        await source.stop()


@contextlib.asynccontextmanager
async def pipeline_in(folder: Path, detector: Detector) -> AsyncIterator[Pipeline]:
    store = SqliteStore(folder / "driftline.db")
    store.start()
    pipeline = Pipeline(detector, store, Hub(clock=lambda: CLOCK), lambda: CLOCK)
    await pipeline.start()
    try:
        yield pipeline
    finally:
        await pipeline.stop()
        store.close()


async def from_memory(data: list[bytes], pipeline: Pipeline, max_batch: int) -> float:
    """Seconds for the pipeline to decode and ingest the same records with no Kafka at all."""
    decoder = decoder_for("cloudtrail", pipeline.detector.catalogue.source_for)
    start = time.perf_counter()
    for n in range(0, len(data), max_batch):
        await pipeline.ingest(
            [i for v in data[n : n + max_batch] for i in decode_bytes(v, decoder)]
        )
    return time.perf_counter() - start


async def run(args: argparse.Namespace) -> None:
    detector, resources = detector_for(args.resources)
    records = cloudtrail_records("invictus_aws_dataset")
    data = amplified(records, args.records)
    mb = sum(map(len, data)) / 1e6
    print(f"state: {resources:,} resources; records: {len(data):,} ({mb:,.0f} MB)")
    async with broker_at(args.bootstrap) as broker:
        topic = unique("bench-cloudtrail")
        await create_topic(broker.bootstrap, topic, args.partitions)
        t = time.perf_counter()
        await preload(broker.bootstrap, topic, data, args.partitions, args.compression)
        print(
            f"preloaded {len(data):,} records over {args.partitions} partitions "
            f"in {time.perf_counter() - t:,.1f}s (not measured)"
        )
        gc.collect()
        gc.freeze()  # as bench.detect_throughput: long-lived setup objects leave GC scans
        best = dict.fromkeys(("bare", "driftline", "source", "memory"), float("inf"))
        status: dict[str, Any] = {}
        drifts = 0
        n = args.records
        for r in range(args.rounds):
            t_bare = await bare(broker.bootstrap, topic, args.partitions, n)
            with tempfile.TemporaryDirectory(prefix="driftline-bench-") as tmp:
                async with pipeline_in(Path(tmp), detector) as pipeline:
                    t_dl, status, drifts = await consume(
                        broker.bootstrap, topic, n, detector, args, pipeline
                    )
            t_src, _, _ = await consume(broker.bootstrap, topic, n, detector, args, None)
            with tempfile.TemporaryDirectory(prefix="driftline-bench-") as tmp:
                async with pipeline_in(Path(tmp), detector) as pipeline:
                    t_mem = await from_memory(data, pipeline, args.max_batch)
            times = {"bare": t_bare, "driftline": t_dl, "source": t_src, "memory": t_mem}
            best = {k: min(best[k], times[k]) for k in best}
            print(
                f"round {r + 1}: " + ", ".join(f"{k} {n / t:,.0f} rec/s" for k, t in times.items())
            )
    rate = {k: n / t for k, t in best.items()}
    print(f"(a) bare aiokafka + orjson       : {rate['bare']:10,.0f} records/s")
    print(
        f"(b) KafkaSource -> Pipeline      : {rate['driftline']:10,.0f} records/s  "
        f"({drifts:,} drifts, {status.get('commits', 0)} commits, "
        f"{status.get('triaged', 0):,} triaged, "
        f"rejected {sum(status.get('rejected', {}).values())})"
    )
    print(f"    KafkaSource, no-op on_items  : {rate['source']:10,.0f} records/s")
    print(f"    Pipeline from memory         : {rate['memory']:10,.0f} records/s")
    print(
        f"ratio (b)/(a)                    : {rate['driftline'] / rate['bare']:.3f}  (target 0.5)"
    )
    print(f"ratio (b)/(Pipeline from memory) : {rate['driftline'] / rate['memory']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--resources", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--max-batch", type=int, default=2000)
    ap.add_argument("--max-inflight", type=int, default=16)
    ap.add_argument(
        "--no-worker",
        action="store_true",
        help="fetch with the group consumer and decode every record on the loop",
    )
    ap.add_argument("--compression", choices=("none", "lz4", "gzip"), default="none")
    ap.add_argument("--bootstrap", help="an existing broker (default: start Tansu)")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
