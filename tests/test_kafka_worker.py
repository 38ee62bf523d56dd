"""The read-only triage worker: its answers match the detector on every real record, it
fails cleanly when it goes away, and a Kafka consumer using it stores exactly what one
decoding everything on the loop stores, even when the worker is killed mid-stream."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.hub import Hub
from monitor.pipeline import Decoded, IngestResult, Pipeline
from monitor.store import SqliteStore
from streams.cloudtrail import decode_record
from streams.files import read_documents
from streams.kafka import FORMATS, KafkaSource
from streams.triage import DECODE, FAILED, READ_ONLY, SKIPPED, TriageUnavailable, TriageWorker
from tests.support.kafka_broker import GROUP_OPTIONS, Broker, create_topic, produce, unique
from tests.support.realdata import K8S
from tests.test_kafka import (
    CLOCK,
    broker,
    build_detector,
    ct_values,
    drift_ids,
    invictus,
    until,
)

__all__ = ["broker"]  # the fixture, shared with test_kafka
pytestmark = pytest.mark.timeout(90)
CT = bytes([FORMATS.index("cloudtrail")])
MAX = 64 * 1024 * 1024


async def test_codes_match_the_detector_on_every_real_record() -> None:
    recs = invictus()
    detector = build_detector()
    worker = TriageWorker(FORMATS, MAX)
    await worker.start()
    try:
        codes = await worker.submit(CT * len(recs), ct_values(recs))
        odd: list[bytes | None] = [
            b"not json",
            None,
            b"",
            gzip.compress(orjson.dumps(recs[0])),
            orjson.dumps(recs[0]) + b"\n" + orjson.dumps(recs[1]),  # two records: decode here
            orjson.dumps({"Records": [recs[0]]}),
        ]
        odd_codes = await worker.submit(CT * len(odd), odd)
    finally:
        await worker.stop()
    assert len(codes) == len(recs)
    seen = {DECODE: 0, READ_ONLY: 0, FAILED: 0}
    for rec, code in zip(recs, codes, strict=True):
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
    assert list(odd_codes) == [DECODE, DECODE, DECODE, gz_code, DECODE, gz_code]


def k8s_audit_events() -> list[Any]:
    """Every real Kubernetes audit event, one per value (EventLists split)."""
    events: list[Any] = []
    for folder in sorted(K8S.iterdir()):
        for path in sorted(folder.iterdir()):
            for raw in read_documents(path):
                doc = raw.doc
                events.extend(doc["items"] if isinstance(doc, dict) and "items" in doc else [doc])
    return events


async def test_audit_formats_are_judged_by_their_own_decoder() -> None:
    events = k8s_audit_events()
    worker = TriageWorker(FORMATS, MAX)
    await worker.start()
    try:
        fmt = bytes([FORMATS.index("k8s_audit")])
        codes = await worker.submit(fmt * len(events), [orjson.dumps(e) for e in events])
    finally:
        await worker.stop()
    verbs = [(e.get("verb") if isinstance(e, dict) else None) for e in events]
    # The real data's one `get` is a read; every write (and every bad event) is decoded here.
    assert [v for v, c in zip(verbs, codes, strict=True) if c != DECODE] == ["get"]
    assert codes.count(DECODE) == len(events) - 1


async def test_a_worker_that_goes_away_fails_what_waits_and_what_comes() -> None:
    worker = TriageWorker(FORMATS, MAX)
    await worker.start()
    assert worker.alive
    proc = worker._proc
    assert proc is not None
    proc.kill()
    await proc.wait()
    with pytest.raises(TriageUnavailable):
        await worker.submit(CT, [orjson.dumps(invictus()[0])])
    assert not worker.alive
    await worker.stop()


async def _consume(
    broker: Broker, topic: str, db: Path, total: int, triage: bool, kill_worker_at: int = 0
) -> tuple[dict[str, Any], dict[str, int], list[str]]:
    """Consume the topic into a fresh store; returns the source status, store counters and
    drift ids."""
    store = SqliteStore(db)
    pipeline = Pipeline(build_detector(), store, Hub(clock=lambda: CLOCK), lambda: CLOCK)
    seen = 0
    done = asyncio.Event()
    killed = False
    source: KafkaSource | None = None

    async def ingest(items: list[Decoded]) -> IngestResult:
        nonlocal seen, killed
        result = await pipeline.ingest(items)
        seen += len(items)
        if kill_worker_at and not killed and seen >= kill_worker_at:
            assert source is not None and source._triage is not None
            assert source._triage._proc is not None
            source._triage._proc.kill()  # mid-stream: batches in flight lose their answers
            killed = True
        if seen >= total:
            done.set()
        return result

    await pipeline.start()
    try:
        source = KafkaSource(
            broker.bootstrap, {topic: "cloudtrail"}, unique("g"), ingest, max_batch=100,
            consumer_options=dict(GROUP_OPTIONS), source_for=pipeline.detector.catalogue.source_for,
            triage=triage, backoff_initial=0.05,
        )  # fmt: skip
        await source.start()
        try:
            await asyncio.wait_for(done.wait(), 60)
            if kill_worker_at:  # a new worker takes over after the pause
                await until(lambda: source is not None and source.status()["triage"], 30)
        finally:
            await source.stop()
        status = source.status()
    finally:
        await pipeline.stop()
    try:
        return status, store.counters(), drift_ids(store)
    finally:
        store.close()


async def test_consumer_with_triage_stores_what_full_decoding_stores(
    broker: Broker, tmp_path: Path
) -> None:
    recs = invictus()
    topic = unique("ct")
    # One partition: flood control merges repeats into the first drift, so the order
    # records are stored in decides which drift ids exist.
    await create_topic(broker.bootstrap, topic, 1)
    await produce(broker.bootstrap, topic, ct_values(recs), 0)
    plain, plain_counters, plain_drifts = await _consume(
        broker, topic, tmp_path / "plain.db", len(recs), triage=False
    )
    fast, fast_counters, fast_drifts = await _consume(
        broker, topic, tmp_path / "triage.db", len(recs), triage=True, kill_worker_at=500
    )
    assert len(plain_drifts) >= 10
    assert fast_drifts == plain_drifts
    assert fast_counters == plain_counters  # events, ingest.* and not_drift.* counts alike
    assert plain["triaged"] == 0
    # Most records never reached the loop's decoder; the killed worker was replaced.
    assert fast["triaged"] > len(recs) // 2
    assert fast["records"] == plain["records"] == len(recs)
    assert "triage worker" in (fast["last_error"] or "")
