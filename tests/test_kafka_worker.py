"""The Kafka fetch worker against a real broker: its triage codes match the detector on every
real record, it hands the records left to decode over byte for byte, it honours seeks by
epoch, and a consumer using it (even when it is killed mid-stream) stores exactly what one
decoding everything on the loop stores."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.hub import Hub
from monitor.pipeline import Decoded, IngestResult, Pipeline
from monitor.store import SqliteStore
from streams.cloudtrail import decode_record
from streams.files import read_documents
from streams.kafka import KafkaSource
from streams.kafka_options import KafkaOptions
from streams.kafka_wire import Part
from streams.kafka_worker import FetchWorker, WorkerGone
from streams.triage import DECODE, FAILED, READ_ONLY, SKIPPED
from tests.support.kafka_broker import GROUP_OPTIONS, Broker, create_topic, produce, unique
from tests.support.kafka_source import (
    CLOCK,
    broker,
    build_detector,
    ct_values,
    drift_ids,
    invictus,
    kafka_source,
    until,
)
from tests.support.realdata import K8S

__all__ = ["broker"]  # the fixture, shared with test_kafka
pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


async def _sink(items: list[Decoded]) -> IngestResult:
    return IngestResult()


def worker_for(broker: Broker, topic: str, fmt: str) -> FetchWorker:
    """A worker configured as a KafkaSource for `topic` would configure it."""
    options = KafkaOptions(
        broker.bootstrap, {topic: fmt}, unique("g"), max_batch=200, poll_interval=0.1
    )
    return FetchWorker(options.worker_config())


async def read_parts(worker: FetchWorker, total: int, timeout: float = 30) -> list[Part]:
    """Parts until `total` records came (of the latest epoch seen)."""
    parts: list[Part] = []
    deadline = time.monotonic() + timeout
    while sum(p.count for p in parts) < total:
        assert time.monotonic() < deadline, f"{sum(p.count for p in parts)} of {total} records"
        got = await worker.next(1.0)
        for part in got or ():
            if parts and part.epoch > parts[-1].epoch:
                parts.clear()  # fetched after a seek: what came before it no longer counts
            parts.append(part)
    return parts


def records_of(parts: list[Part]) -> tuple[bytes, list[Any]]:
    codes = b"".join(p.codes or b"" for p in parts)
    return codes, [m for p in parts for m in p.msgs]


async def test_codes_match_the_detector_on_every_real_record(broker: Broker) -> None:
    recs = invictus()
    detector = build_detector()
    odd = [
        b"not json",
        b"",
        gzip.compress(orjson.dumps(recs[0])),
        orjson.dumps(recs[0]) + b"\n" + orjson.dumps(recs[1]),  # two records: decode on the loop
        orjson.dumps({"Records": [recs[0]]}),
    ]
    values = [*ct_values(recs), *odd]
    keys = [f"key-{n}".encode() for n in range(len(values))]
    topic = unique("ct")
    await create_topic(broker.bootstrap, topic, 1)
    await produce(broker.bootstrap, topic, values, 0, keys=keys)
    worker = worker_for(broker, topic, "cloudtrail")
    await worker.start()
    try:
        worker.assign([(topic, 0, 0, 1)])
        parts = await read_parts(worker, len(values))
    finally:
        await worker.stop()
    codes, msgs = records_of(parts)
    assert len(codes) == len(values)
    assert [(p.first, p.last) for p in parts] == sorted((p.first, p.last) for p in parts)
    seen = {DECODE: 0, READ_ONLY: 0, FAILED: 0}
    for rec, code in zip(recs, codes, strict=False):
        event = decode_record(rec)
        seen[code] += 1
        if code == DECODE:
            assert not event.read_only
        else:
            # Exactly what the detector would have said, without it being asked.
            assert SKIPPED[code].reason == detector.detect(event).skipped
    assert all(seen.values()), seen  # the real data has all three kinds
    first_read_only = READ_ONLY if decode_record(recs[0]).read_only else DECODE
    gz_code = first_read_only if not decode_record(recs[0]).error_code else FAILED
    assert list(codes[len(recs) :]) == [DECODE, DECODE, gz_code, DECODE, gz_code]
    # The records to decode come whole: offset, key and value as produced.
    wanted = [n for n, code in enumerate(codes) if code == DECODE]
    assert [m.offset for m in msgs] == wanted
    assert [(m.key, m.value) for m in msgs] == [(keys[n], values[n]) for n in wanted]
    assert {(m.topic, m.partition) for m in msgs} == {(topic, 0)}
    assert worker.highwater[(topic, 0)] == len(values)


def k8s_audit_events() -> list[Any]:
    """Every real Kubernetes audit event, one per value (EventLists split)."""
    events: list[Any] = []
    for folder in sorted(K8S.iterdir()):
        for path in sorted(folder.iterdir()):
            for raw in read_documents(path):
                doc = raw.doc
                events.extend(doc["items"] if isinstance(doc, dict) and "items" in doc else [doc])
    return events


async def test_audit_formats_are_judged_by_their_own_decoder(broker: Broker) -> None:
    events = k8s_audit_events()
    topic = unique("k8s")
    await create_topic(broker.bootstrap, topic, 1)
    await produce(broker.bootstrap, topic, [orjson.dumps(e) for e in events], 0)
    worker = worker_for(broker, topic, "k8s_audit")
    await worker.start()
    try:
        worker.assign([(topic, 0, 0, 1)])
        codes, _ = records_of(await read_parts(worker, len(events)))
    finally:
        await worker.stop()
    verbs = [(e.get("verb") if isinstance(e, dict) else None) for e in events]
    # The real data's one `get` is a read; every write (and every bad event) is decoded.
    assert [v for v, c in zip(verbs, codes, strict=True) if c != DECODE] == ["get"]
    assert codes.count(DECODE) == len(events) - 1


async def test_a_seek_starts_a_new_epoch_at_its_offset(broker: Broker) -> None:
    values = ct_values(invictus()[:300])
    topic = unique("ct")
    await create_topic(broker.bootstrap, topic, 1)
    await produce(broker.bootstrap, topic, values, 0)
    worker = worker_for(broker, topic, "cloudtrail")
    await worker.start()
    try:
        worker.assign([(topic, 0, 0, 1)])
        before = await read_parts(worker, 50)
        assert before[0].first == 0 and {p.epoch for p in before} == {1}
        worker.seek(topic, 0, 120, 2)
        after = await read_parts(worker, len(values) - 120)
    finally:
        await worker.stop()
    assert {p.epoch for p in after} == {2}
    assert after[0].first == 120 and after[-1].last == len(values) - 1
    assert all(a.last + 1 == b.first for a, b in itertools.pairwise(after))


async def test_a_worker_that_goes_away_is_reported(broker: Broker) -> None:
    topic = unique("ct")
    await create_topic(broker.bootstrap, topic, 1)
    worker = worker_for(broker, topic, "cloudtrail")
    await worker.start()
    assert worker.alive
    proc = worker._proc
    assert proc is not None
    proc.kill()
    await proc.wait()
    with pytest.raises(WorkerGone):
        for _ in range(50):
            await worker.next(0.1)
    assert not worker.alive
    await worker.stop()


async def _consume(
    broker: Broker, topic: str, db: Path, total: int, worker: bool, kill_worker_at: int = 0
) -> tuple[dict[str, Any], dict[str, int], list[str]]:
    """Consume the topic into a fresh store; returns the source status, store counters and
    drift ids."""
    store = SqliteStore(db)
    store.start()
    pipeline = Pipeline(build_detector(), store, Hub(clock=lambda: CLOCK), lambda: CLOCK)
    seen = 0
    done = asyncio.Event()
    killed: FetchWorker | None = None
    source: KafkaSource | None = None

    async def ingest(items: list[Decoded]) -> IngestResult:
        nonlocal seen, killed
        result = await pipeline.ingest(items)  # first: stores in the order of the calls
        seen += len(items)
        if kill_worker_at and killed is None:
            await asyncio.sleep(0.1)  # slow at first: the worker fills the pipe and waits
        if kill_worker_at and killed is None and seen >= kill_worker_at:
            assert source is not None and source._feed.worker is not None
            killed = source._feed.worker
            assert killed._proc is not None
            killed._proc.kill()  # mid-stream: what it fetched and had not sent is lost
        if seen >= total:
            done.set()
        return result

    await pipeline.start()
    try:
        source = kafka_source(
            broker.bootstrap, {topic: "cloudtrail"}, unique("g"), ingest, max_batch=100,
            consumer_options=dict(GROUP_OPTIONS), source_for=pipeline.detector.catalogue.source_for,
            worker=worker, backoff_initial=0.05,
        )  # fmt: skip
        await source.start()
        try:
            await asyncio.wait_for(done.wait(), 60)
            if kill_worker_at:  # a new worker took over after the pause
                await until(
                    lambda: source is not None and source._feed.worker not in (None, killed), 30
                )
        finally:
            await source.stop()
        status = source.status()
    finally:
        await pipeline.stop()
    try:
        return status, store.counters(), drift_ids(store)
    finally:
        store.close()


async def test_consumer_with_the_worker_stores_what_decoding_everything_stores(
    broker: Broker, tmp_path: Path
) -> None:
    recs = invictus()
    topic = unique("ct")
    # One partition: flood control merges repeats into the first drift, so the order
    # records are stored in decides which drift ids exist.
    await create_topic(broker.bootstrap, topic, 1)
    await produce(broker.bootstrap, topic, ct_values(recs), 0)
    plain, plain_counters, plain_drifts = await _consume(
        broker, topic, tmp_path / "plain.db", len(recs), worker=False
    )
    fast, fast_counters, fast_drifts = await _consume(
        broker, topic, tmp_path / "worker.db", len(recs), worker=True, kill_worker_at=500
    )
    assert len(plain_drifts) >= 10
    assert fast_drifts == plain_drifts
    assert fast_counters == plain_counters  # events, ingest.* and not_drift.* counts alike
    assert plain["triaged"] == 0
    # Most records never reached the loop's decoder; the killed worker was replaced.
    assert fast["triaged"] > len(recs) // 2
    assert fast["records"] == plain["records"] == len(recs)
    assert "fetch worker" in (fast["last_error"] or "")
