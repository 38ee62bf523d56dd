"""KafkaSource against a real Kafka-protocol broker (Tansu, or Apache Kafka via
DRIFTLINE_TEST_KAFKA): decoding, at-least-once commits, poison records, a crashed consumer,
a stalled and an unreachable broker, and scale-out across one consumer group.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from monitor.hub import Hub
from monitor.pipeline import Decoded, IngestResult, Pipeline
from monitor.store import SqliteStore
from monitor.types import ChangeEvent, DecodeError
from rules import load_catalogue
from streams.decode import decode_document
from streams.documents import Limits, decode_bytes
from streams.formats import FORMATS, decoder_for
from streams.kafka import KafkaSource
from streams.kafka_options import parse_topics
from tests.support.kafka_broker import (
    GROUP_OPTIONS,
    Broker,
    committed_offsets,
    create_topic,
    end_offsets_of,
    produce,
    unique,
)
from tests.support.kafka_source import (
    CLOCK,
    ROOT,
    Sink,
    broker,
    build_detector,
    ct_values,
    drift_ids,
    identity,
    invictus,
    kafka_source,
    make_source,
    owned_broker,
    running,
    until,
    until_committed,
    writes,
)
from tests.support.realdata import falco_alerts

__all__ = ["broker", "owned_broker"]  # the fixtures, shared with test_kafka_worker
pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


# -- pure parts -------------------------------------------------------------------------


def test_parse_topics() -> None:
    assert parse_topics(["cloudtrail:ct", "falco:alerts", "raw"]) == {
        "ct": "cloudtrail",
        "alerts": "falco",
        "raw": "auto",
    }
    assert parse_topics(["k8s_audit:audit.v1"]) == {"audit.v1": "k8s_audit"}
    for bad in (["nope:t"], ["cloudtrail:"], ["cloudtrail:t", "falco:t"]):
        with pytest.raises(ValueError):
            parse_topics(bad)


def test_source_rejects_bad_configuration() -> None:
    async def sink(items: list[Decoded]) -> None:
        return None

    with pytest.raises(ValueError, match="no topics"):
        kafka_source("127.0.0.1:9", {}, "g", sink)
    with pytest.raises(ValueError, match="unknown format"):
        kafka_source("127.0.0.1:9", {"t": "xml"}, "g", sink)
    with pytest.raises(ValueError, match="DLQ"):
        kafka_source("127.0.0.1:9", {"t": "auto"}, "g", sink, dlq_topic="t")


def test_decode_value_shapes() -> None:
    decode = decoder_for("cloudtrail")
    recs = invictus()[:6]
    ids = [r["eventID"] for r in recs]

    def got(value: bytes | None) -> list[str]:
        return [identity(i) for i in decode_bytes(value, decode)]

    assert got(orjson.dumps(recs[0])) == [f"event:{ids[0]}"]
    assert got(orjson.dumps({"Records": recs[:3]})) == [f"event:{i}" for i in ids[:3]]
    bridge = {"detail-type": "AWS API Call via CloudTrail", "detail": recs[3]}
    assert got(orjson.dumps(bridge)) == [f"event:{ids[3]}"]
    ndjson = b"\n".join(orjson.dumps(r) for r in recs[:2]) + b"\n{broken\n" + orjson.dumps(recs[2])
    assert got(ndjson) == [
        f"event:{ids[0]}",
        f"event:{ids[1]}",
        "error:bad JSON",
        f"event:{ids[2]}",
    ]
    two_members = gzip.compress(orjson.dumps(recs[4])) + gzip.compress(
        b"\n" + orjson.dumps(recs[5])
    )
    assert got(two_members) == [f"event:{ids[4]}", f"event:{ids[5]}"]
    assert got(None) == ["error:empty record"]
    assert got(b"  ") == ["error:empty record"]
    assert got(b"\x1f\x8bnot gzip") == ["error:bad gzip"]
    assert got(b"\xff\xfe\x00") == ["error:bad JSON"]
    assert got(b'{"hello": 1}') == ["error:unknown record shape"]
    bomb = gzip.compress(b"[" + b" " * 5000 + b"]")
    assert [identity(i) for i in decode_bytes(bomb, decode, Limits(1000, empty_is_error=True))] == [
        "error:record too large"
    ]


def test_decoder_for_formats(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(FORMATS) == {
        "cloudtrail",
        "falco",
        "k8s_audit",
        "gcp_audit",
        "azure_activity",
        "auto",
    }
    # A decoder module that is not installed: every document is rejected, naming it.
    monkeypatch.setitem(sys.modules, "streams.gcp_audit", None)
    items = decode_bytes(b'{"protoPayload": {}}', decoder_for("gcp_audit"))
    assert len(items) == 1 and isinstance(items[0], DecodeError)
    assert items[0].reason == "decoder missing"
    assert "streams.gcp_audit.decode_gcp_audit" in str(items[0])
    # An installed one is used as it is.
    fake = type(sys)("streams.azure_activity")
    seen: list[Any] = []

    def decode_azure_activity(doc: Any) -> list[Decoded]:
        seen.append(doc)
        return [DecodeError("azure test", "called")]

    fake.decode_azure_activity = decode_azure_activity  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "streams.azure_activity", fake)
    out = decode_bytes(b'{"records": []}', decoder_for("azure_activity"))
    assert seen == [{"records": []}] and [identity(i) for i in out] == ["error:azure test"]
    with pytest.raises(ValueError):
        decoder_for("xml")


# -- against the broker -------------------------------------------------------------------


async def test_records_of_every_shape_reach_on_items_decoded(broker: Broker) -> None:
    ct, falco, auto, group = unique("ct"), unique("falco"), unique("auto"), unique("g")
    await create_topic(broker.bootstrap, ct, 3)
    await create_topic(broker.bootstrap, falco, 1)
    await create_topic(broker.bootstrap, auto, 1)
    recs = invictus()
    catalogue = load_catalogue()
    ct_docs: list[Any] = [*recs[:200], {"Records": recs[200:250]}]
    ct_docs.append({"detail-type": "AWS API Call via CloudTrail", "detail": recs[250]})
    ct_raw = [orjson.dumps(d) for d in ct_docs]
    ct_raw.append(gzip.compress(orjson.dumps({"Records": recs[251:271]})))
    ct_raw.append(b"\n".join(orjson.dumps(r) for r in recs[271:281]))
    alerts = [alert for _, alert in falco_alerts()]
    auto_docs: list[Any] = [*recs[281:286], *alerts[:5]]

    expected = Counter(
        identity(i)
        for doc in [*recs[:281], *alerts, *auto_docs]
        for i in decode_document(doc, catalogue.source_for)
    )

    def bad(docs: list[Any]) -> list[int]:
        return [
            n
            for n, doc in enumerate(docs)
            if any(isinstance(i, DecodeError) for i in decode_document(doc, catalogue.source_for))
        ]

    expected_dead = {(falco, n) for n in bad(alerts)} | {(auto, n) for n in bad(auto_docs)}
    assert expected_dead, "the real Falco data has records Driftline rejects"

    ends = {
        ct: end_offsets_of(await produce(broker.bootstrap, ct, ct_raw)),
        falco: end_offsets_of(await produce(broker.bootstrap, falco, ct_values(alerts), 0)),
        auto: end_offsets_of(await produce(broker.bootstrap, auto, ct_values(auto_docs), 0)),
    }
    total = sum(expected.values())
    dead: list[tuple[str, int, int, str]] = []

    def dead_letter(topic: str, partition: int, offset: int, key: Any, value: Any, reason: str):
        dead.append((topic, partition, offset, reason))

    sink = Sink()
    topics = {ct: "cloudtrail", falco: "falco", auto: "auto"}
    # Decoded on the loop, so read-only records arrive with their ids too (what the fetch
    # worker hands over instead is checked against the detector in tests/test_kafka_worker.py).
    source = make_source(
        broker, topics, group, sink, dead_letter=dead_letter, source_for=catalogue.source_for,
        worker=False,
    )  # fmt: skip
    async with running(source):
        await sink.wait(lambda: len(sink.items) >= total)
        await until(
            lambda: (
                source.status()["partitions"]
                and all(p["commit_lag"] == 0 for p in source.status()["partitions"])
            ),
            what="every partition committed",
        )
        status = source.status()
    assert Counter(identity(i) for i in sink.items) == expected
    assert {(t, o) for t, _, o, _ in dead} == expected_dead
    assert len(dead) == len(expected_dead) and all(reason for *_, reason in dead)
    assert status["records"] == sum(len(v) for v in (ct_raw, alerts, auto_docs))
    assert status["dead_lettered"] == len(expected_dead) and status["lag"] == 0
    errors = Counter({k[6:]: n for k, n in expected.items() if k.startswith("error:")})
    assert Counter(status["rejected"]) == errors
    by_tp = {(p["topic"], p["partition"]): p for p in status["partitions"]}
    assert len(by_tp) == 5
    for topic, topic_ends in ends.items():
        for part, end in topic_ends.items():
            assert by_tp[(topic, part)]["committed"] == end
            assert by_tp[(topic, part)]["highwater"] == end
        await until_committed(broker.bootstrap, group, topic, topic_ends, timeout=5)


@pytest.mark.parametrize("worker", [True, False], ids=["fetch-worker", "loop"])
async def test_offsets_are_committed_only_after_on_items_returns(
    broker: Broker, worker: bool
) -> None:
    topic, group = unique("ct"), unique("g")
    await create_topic(broker.bootstrap, topic, 1)
    recs = writes()[:30]
    ids = [r["eventID"] for r in recs]
    await produce(broker.bootstrap, topic, ct_values(recs), 0)
    entered, gate = asyncio.Event(), asyncio.Event()

    async def store(n: int, items: list[Decoded]) -> None:
        # Calls: batch 1 stored; batch 2 slow then failing three times, then stored;
        # batch 3 failing for good (a store that went away).
        if n == 1:
            entered.set()
            await gate.wait()
        if n in (1, 2, 3) or n >= 5:
            raise RuntimeError("store unavailable")

    sink = Sink(store)
    # One batch in flight at a time, so calls and batches match one to one.
    source = make_source(
        broker, {topic: "cloudtrail"}, group, sink, max_batch=10, commit_every=1,
        commit_interval=0.01, max_inflight=1, worker=worker,
    )  # fmt: skip
    async with running(source):
        await asyncio.wait_for(entered.wait(), 30)
        # Batch 1 returned and is committed; batch 2 is inside on_items and is not.
        assert await until_committed(broker.bootstrap, group, topic, {0: 10}) == {0: 10}
        gate.set()
        await sink.wait(lambda: sink.failures >= 5)
        status = source.status()
    # A graceful stop while batch 3 keeps failing commits what was stored, nothing more.
    assert await committed_offsets(broker.bootstrap, group, topic, 1) == {0: 20}
    assert sink.event_ids() == ids[:20]  # batch 2 read again from its first record
    assert status["store_failures"] >= 5 and status["partitions"][0]["committed"] == 20
    assert "store unavailable" in (status["last_error"] or "")

    # The next member of the group starts where the stored records end.
    sink2 = Sink()
    async with running(make_source(broker, {topic: "cloudtrail"}, group, sink2, worker=worker)):
        await sink2.wait(lambda: len(sink2.event_ids()) >= 10)
        await until_committed(broker.bootstrap, group, topic, {0: 30})
    assert sink2.event_ids() == ids[20:]


@pytest.mark.parametrize("worker", [True, False], ids=["fetch-worker", "loop"])
async def test_batches_in_flight_complete_in_order_and_a_failure_rewinds_later_ones(
    broker: Broker, worker: bool
) -> None:
    topic, group = unique("ct"), unique("g")
    await create_topic(broker.bootstrap, topic, 1)
    recs = writes()[:60]
    ids = [r["eventID"] for r in recs]
    await produce(broker.bootstrap, topic, ct_values(recs), 0)
    entries: list[str] = []  # the first event of each call, in the order calls began
    gate = asyncio.Event()

    async def store(n: int, items: list[Decoded]) -> None:
        first = items[0]
        assert isinstance(first, ChangeEvent)
        entries.append(first.event_id)
        if first.event_id == ids[10] and not gate.is_set():
            await gate.wait()  # the second batch is slow, then fails once
            raise RuntimeError("store unavailable")

    sink = Sink(store)
    source = make_source(
        broker, {topic: "cloudtrail"}, group, sink, max_batch=10, commit_every=1,
        commit_interval=0.01, max_inflight=4, worker=worker,
    )  # fmt: skip
    async with running(source):
        # Batches 3 and 4 are stored while batch 2 is still in on_items ...
        await sink.wait(lambda: {ids[20], ids[30]} <= set(sink.event_ids()))
        assert entries[:4] == [ids[0], ids[10], ids[20], ids[30]]  # called in poll order
        # ... but nothing past batch 2 is done, so nothing past it is committed.
        await until_committed(broker.bootstrap, group, topic, {0: 10})
        assert source.status()["partitions"][0]["processed"] == 10
        gate.set()
        await sink.wait(lambda: set(sink.event_ids()) == set(ids))
        await until_committed(broker.bootstrap, group, topic, {0: 60})
        status = source.status()
    assert status["store_failures"] == 1
    # Batch 1 was done, so batch 5 was polled while batch 2 hung. Batch 2 failed: it and
    # the batches after it were read again from its first record.
    assert [ids.index(e) for e in entries] == [0, 10, 20, 30, 40, 10, 20, 30, 40, 50]
    stored = sink.event_ids()
    assert all(stored.count(i) == 1 for i in ids[:20] + ids[50:])
    assert all(stored.count(i) == 2 for i in ids[20:50])  # stored, then read again
    assert status["records"] == 60


@pytest.mark.parametrize("worker", [True, False], ids=["fetch-worker", "loop"])
async def test_rebalance_commits_what_is_stored_before_revoking(
    broker: Broker, worker: bool
) -> None:
    topic, group = unique("ct"), unique("g")
    await create_topic(broker.bootstrap, topic, 2)
    recs = writes()[:300]
    placed = await produce(broker.bootstrap, topic, ct_values(recs))

    async def slow_store(n: int, items: list[Decoded]) -> None:
        if n >= 10:
            await asyncio.sleep(0.4)  # a loaded store: the second member joins mid-stream

    first, second = Sink(slow_store), Sink()
    # No commit by count or time: only the rebalance (and the final stop) commit.
    quiet = {
        "commit_every": 10**9,
        "commit_interval": 3600.0,
        "max_batch": 5,
        "max_inflight": 4,
        "worker": worker,
    }
    a = make_source(broker, {topic: "cloudtrail"}, group, first, **quiet)
    b = make_source(broker, {topic: "cloudtrail"}, group, second, **quiet)
    async with running(a):
        await first.wait(lambda: len(first.event_ids()) >= 50)
        async with running(b):
            await sink_union([first, second], {r["eventID"] for r in recs})
            assert second.event_ids(), "the second member took over a partition mid-stream"
            assert a.status()["rebalances"] >= 2
    await until_committed(broker.bootstrap, group, topic, end_offsets_of(placed))
    # What the first member stored before giving a partition up was committed then: the
    # second member started after it, so no record was delivered twice.
    assert Counter(first.event_ids() + second.event_ids()) == Counter(r["eventID"] for r in recs)


@pytest.mark.parametrize("worker", [True, False], ids=["fetch-worker", "loop"])
async def test_poison_records_are_dead_lettered_and_neighbours_arrive(
    broker: Broker, worker: bool
) -> None:
    topic, dlq, group = unique("ct"), unique("dlq"), unique("g")
    await create_topic(broker.bootstrap, topic, 1)
    await create_topic(broker.bootstrap, dlq, 1)
    good = ct_values(writes()[:6])
    poison: list[tuple[bytes | None, str]] = [
        (b"\xff\xfe\x00 not json", "bad JSON"),
        (None, "empty record"),
        (b'{"hello": 1}', "unknown record shape"),
        (b"\x1f\x8b\x08\x00garbage", "bad gzip"),
        (orjson.dumps({"eventName": "PutObject"}), "not a CloudTrail record"),
    ]
    values: list[bytes | None] = []
    for n, value in enumerate(good):
        values.append(value)
        if n < len(poison):
            values.append(poison[n][0])
    keys = [b"k%d" % n for n in range(len(values))]
    await produce(broker.bootstrap, topic, values, 0, keys=keys)  # type: ignore[arg-type]
    dead: list[tuple[Any, ...]] = []

    async def dead_letter(*args: Any) -> None:
        dead.append(args)

    sink = Sink()
    source = make_source(broker, {topic: "cloudtrail"}, group, sink, dead_letter=dead_letter,
                         dlq_topic=dlq, max_batch=3, worker=worker)  # fmt: skip
    async with running(source):
        await sink.wait(lambda: len(sink.event_ids()) >= len(good))
        await until_committed(broker.bootstrap, group, topic, {0: len(values)})
        status = source.status()
    assert sink.event_ids() == [r["eventID"] for r in writes()[:6]]
    assert [(t, p, o, k, v) for t, p, o, k, v, _ in dead] == [
        (topic, 0, 2 * n + 1, keys[2 * n + 1], value) for n, (value, _) in enumerate(poison)
    ]
    for (*_, reason), (_, expected) in zip(dead, poison, strict=True):
        assert reason.startswith(expected)
    assert status["dead_lettered"] == len(poison)
    assert sum(status["rejected"].values()) == len(poison)

    reader = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest")
    await reader.start()
    try:
        tp = TopicPartition(dlq, 0)
        reader.assign([tp])
        await reader.seek_to_beginning(tp)
        got: list[Any] = []
        while len(got) < len(poison):
            batch = await asyncio.wait_for(reader.getmany(tp, timeout_ms=500), 10)
            got.extend(batch.get(tp, []))
    finally:
        await reader.stop()
    assert [(m.key, m.value) for m in got] == [
        (keys[2 * n + 1], v) for n, (v, _) in enumerate(poison)
    ]
    headers = [dict(m.headers) for m in got]
    assert [h["driftline.offset"] for h in headers] == [b"%d" % (2 * n + 1) for n in range(5)]
    assert all(h["driftline.topic"] == topic.encode() for h in headers)
    assert headers[0]["driftline.reason"].startswith(b"bad JSON")


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
async def test_compressed_record_batches_are_read(broker: Broker, codec: str) -> None:
    # Pipelines commonly compress (Vector, Logstash, falcosidekick): aiokafka needs cramjam.
    pytest.importorskip("cramjam", reason="aiokafka[lz4,snappy,zstd] (cramjam) not installed")
    topic, group = unique(codec), unique("g")
    await create_topic(broker.bootstrap, topic, 1)
    recs = writes()[:100]
    await produce(broker.bootstrap, topic, ct_values(recs), 0, compression=codec)
    sink = Sink()
    async with running(make_source(broker, {topic: "cloudtrail"}, group, sink)):
        await sink.wait(lambda: len(sink.items) >= len(recs))
        await until_committed(broker.bootstrap, group, topic, {0: len(recs)})
    assert sink.event_ids() == [r["eventID"] for r in recs]


async def test_lag_per_partition_while_behind(broker: Broker) -> None:
    topic, group = unique("ct"), unique("g")
    await create_topic(broker.bootstrap, topic, 1)
    await produce(broker.bootstrap, topic, ct_values(writes()[:50]), 0)
    entered, gate = asyncio.Event(), asyncio.Event()

    async def slow(n: int, items: list[Decoded]) -> None:
        entered.set()
        await gate.wait()

    sink = Sink(slow)
    source = make_source(broker, {topic: "cloudtrail"}, group, sink, max_batch=10, max_inflight=1)
    async with running(source):
        await asyncio.wait_for(entered.wait(), 30)
        [part] = source.status()["partitions"]
        assert (part["position"], part["highwater"], part["lag"]) == (10, 50, 40)
        assert part["processed"] is None and part["committed"] is None
        gate.set()
        await sink.wait(lambda: len(sink.items) >= 50)
        await until(lambda: source.status()["partitions"][0]["commit_lag"] == 0)
        [part] = source.status()["partitions"]
    assert (part["committed"], part["processed"], part["lag"]) == (50, 50, 0)


async def test_broker_stalled_then_resumed(owned_broker: Broker) -> None:
    broker = owned_broker
    topic, group = unique("ct"), unique("g")
    await create_topic(broker.bootstrap, topic, 2)
    recs = writes()[:300]
    sink = Sink()
    source = make_source(broker, {topic: "cloudtrail"}, group, sink,
                         client_options={"request_timeout_ms": 1500})  # fmt: skip
    async with running(source):
        first = await produce(broker.bootstrap, topic, ct_values(recs[:100]))
        await sink.wait(lambda: len(sink.items) >= 100)
        broker.pause()
        try:
            await until(lambda: not source.status()["connected"], what="stall noticed")
            assert "not answering" in (source.status()["last_error"] or "")
            # Records sent during the stall wait in the producer until the broker answers.
            during = asyncio.create_task(produce(broker.bootstrap, topic, ct_values(recs[100:200])))
            # Stay stalled past the group's session timeout, so membership must be rebuilt.
            await asyncio.sleep(GROUP_OPTIONS["session_timeout_ms"] / 1000 * 1.5)
        finally:
            broker.resume()
        second = await asyncio.wait_for(during, 60)
        third = await produce(broker.bootstrap, topic, ct_values(recs[200:]))
        await sink.wait(lambda: set(sink.event_ids()) >= {r["eventID"] for r in recs}, 60)
        await until(lambda: source.status()["connected"], what="reconnected")
        ends = end_offsets_of([*first, *second, *third])
        await until_committed(broker.bootstrap, group, topic, ends, timeout=60)
    assert set(sink.event_ids()) == {r["eventID"] for r in recs}


async def test_broker_unreachable_then_back(owned_broker: Broker) -> None:
    broker = owned_broker
    assert broker.proxy is not None
    topic, group = unique("ct"), unique("g")
    await create_topic(broker.bootstrap, topic, 2)
    recs = writes()[:300]
    placed = await produce(broker.bootstrap, topic, ct_values(recs[:100]))
    await broker.proxy.cut()  # refused from the start: the source must keep trying
    sink = Sink()
    source = make_source(broker, {topic: "cloudtrail"}, group, sink)
    async with running(source):
        await until(lambda: source.status()["reconnects"] >= 2, what="retries with backoff")
        assert source.status()["state"] in ("backoff", "starting")
        assert source.status()["last_error"]
        await broker.proxy.restore()
        await sink.wait(lambda: len(sink.items) >= 100)
        placed += await produce(broker.bootstrap, topic, ct_values(recs[100:200]))
        await sink.wait(lambda: len(sink.items) >= 200)
        # Cut off mid-stream: connections reset, new ones refused.
        await broker.proxy.cut()
        await until(lambda: not source.status()["connected"], what="loss noticed")
        await broker.proxy.restore()
        placed += await produce(broker.bootstrap, topic, ct_values(recs[200:]))
        await sink.wait(lambda: set(sink.event_ids()) >= {r["eventID"] for r in recs}, 60)
        await until_committed(broker.bootstrap, group, topic, end_offsets_of(placed), timeout=60)
        await until(lambda: source.status()["connected"], what="reconnected")
    assert set(sink.event_ids()) == {r["eventID"] for r in recs}


async def test_scale_out_two_sources_split_the_partitions(broker: Broker) -> None:
    topic, group = unique("ct"), unique("g")
    await create_topic(broker.bootstrap, topic, 4)
    sinks = [Sink(), Sink()]
    sources = [make_source(broker, {topic: "cloudtrail"}, group, s) for s in sinks]
    async with running(sources[0]), running(sources[1]):

        def assigned(s: KafkaSource) -> set[int]:
            return {p["partition"] for p in s.status()["partitions"]}

        await until(
            lambda: assigned(sources[0]) and assigned(sources[1])
            and not assigned(sources[0]) & assigned(sources[1])
            and assigned(sources[0]) | assigned(sources[1]) == {0, 1, 2, 3},
            what="both members assigned",
        )  # fmt: skip
        split = [assigned(s) for s in sources]
        recs = writes()[:400]
        placed = await produce(broker.bootstrap, topic, ct_values(recs))
        where = {r["eventID"]: p for r, (p, _) in zip(recs, placed, strict=True)}
        await sink_union(sinks, {r["eventID"] for r in recs})
        await until_committed(broker.bootstrap, group, topic, end_offsets_of(placed))
        assert [assigned(s) for s in sources] == split  # no rebalance happened meanwhile
    got = [s.event_ids() for s in sinks]
    assert all(got), "each member received a share"
    assert Counter(got[0] + got[1]) == Counter(list(where))  # every record exactly once
    for ids, parts in zip(got, split, strict=True):
        assert {where[i] for i in ids} <= parts


async def sink_union(sinks: list[Sink], want: set[str], timeout: float = 30) -> None:
    await until(
        lambda: set().union(*(s.event_ids() for s in sinks)) >= want, timeout, "all records"
    )


# -- a consumer killed mid-stream, then restarted: nothing lost, nothing duplicated ----------


async def reference_drifts(path: Path, records: list[dict[str, Any]]) -> list[str]:
    """What the store holds after every record is ingested once, in order."""
    store = SqliteStore(path)
    store.start()
    pipeline = Pipeline(build_detector(), store, Hub(clock=lambda: CLOCK), lambda: CLOCK)
    await pipeline.start()
    try:
        source_for = pipeline.detector.catalogue.source_for
        for n in range(0, len(records), 100):
            chunk = records[n : n + 100]
            await pipeline.ingest([i for r in chunk for i in decode_document(r, source_for)])
    finally:
        await pipeline.stop()
    try:
        return drift_ids(store)
    finally:
        store.close()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("worker", [True, False], ids=["fetch-worker", "loop"])
async def test_consumer_killed_mid_stream_then_restarted(
    broker: Broker, tmp_path: Path, worker: bool
) -> None:
    topic, group = unique("ct"), unique("g")
    await create_topic(broker.bootstrap, topic, 1)
    recs = invictus()
    # The records handed over with their ids (the fetch worker hands read-only ones over
    # as a count only).
    all_ids = {r["eventID"] for r in (writes() if worker else recs)}
    await produce(broker.bootstrap, topic, ct_values(recs), 0)
    expected = await reference_drifts(tmp_path / "reference.db", recs)
    assert len(expected) >= 10, "the real data must yield drifts for this test to mean anything"
    db = tmp_path / "driftline.db"

    # First consumer: a separate process that stores ~1000 records, then hangs inside
    # on_items (stored, not acknowledged) and is SIGKILLed.
    with (tmp_path / "child.err").open("wb") as err:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.test_kafka", "child", broker.bootstrap, topic, group,
            str(db), "1000", str(int(worker)), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )  # fmt: skip
    first: set[str] = set()
    stored = 0  # records the first consumer stored
    try:
        assert child.stdout is not None
        while True:
            line = await asyncio.wait_for(child.stdout.readline(), 60)
            assert line, f"child ended early: {(tmp_path / 'child.err').read_text()[-2000:]}"
            msg = orjson.loads(line)
            first.update(msg.get("stored", ()))
            stored += msg.get("items", 0)
            if msg.get("hang"):
                break
        committed = 0
        deadline = time.monotonic() + 30
        while not committed and time.monotonic() < deadline:  # commits run in the background
            await asyncio.sleep(0.1)
            committed = (await committed_offsets(broker.bootstrap, group, topic, 1))[0] or 0
        # Never committed past what is stored, and some stored records are not committed.
        assert 0 < committed < stored
    finally:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGKILL)
        await child.wait()
    assert 1000 <= stored < len(recs)

    # Second consumer, same group, same store: takes over from the last commit.
    store = SqliteStore(db)
    store.start()
    hub = Hub(clock=lambda: CLOCK, start_seq=store.last_seq())
    pipeline = Pipeline(build_detector(), store, hub, lambda: CLOCK)
    second: list[str] = []
    done = asyncio.Event()

    async def ingest(items: list[Decoded]) -> IngestResult:
        result = await pipeline.ingest(items)
        second.extend(i.event_id for i in items if isinstance(i, ChangeEvent))
        if first | set(second) >= all_ids:
            done.set()
        return result

    await pipeline.start()
    try:
        source = make_source(broker, {topic: "cloudtrail"}, group, ingest, worker=worker,
                             source_for=pipeline.detector.catalogue.source_for)  # fmt: skip
        async with running(source):
            await asyncio.wait_for(done.wait(), 60)
            await until_committed(broker.bootstrap, group, topic, {0: len(recs)})
    finally:
        await pipeline.stop()
    try:
        assert first | set(second) == all_ids  # nothing lost
        assert first & set(second), "records stored but not committed were delivered again"
        # Resumed at the committed offset.
        assert second[0] == next(r["eventID"] for r in recs[committed:] if r["eventID"] in all_ids)
        assert drift_ids(store) == expected  # each drift exactly once
    finally:
        store.close()


async def _child(
    bootstrap: str, topic: str, group: str, db: str, hang_after: int, worker: bool
) -> None:
    store = SqliteStore(db)
    store.start()
    pipeline = Pipeline(build_detector(), store, Hub(clock=lambda: CLOCK), lambda: CLOCK)
    stored = 0

    async def ingest(items: list[Decoded]) -> IngestResult:
        nonlocal stored
        result = await pipeline.ingest(items)
        ids = [i.event_id for i in items if isinstance(i, ChangeEvent)]
        stored += len(items)
        print(orjson.dumps({"stored": ids, "items": len(items)}).decode(), flush=True)
        if stored >= hang_after:
            print(orjson.dumps({"hang": True}).decode(), flush=True)
            await asyncio.Event().wait()  # stuck mid-batch until killed
        return result

    await pipeline.start()
    source = kafka_source(
        bootstrap, {topic: "cloudtrail"}, group, ingest,
        consumer_options=dict(GROUP_OPTIONS), max_batch=100, commit_every=300,
        commit_interval=3600, source_for=pipeline.detector.catalogue.source_for, worker=worker,
    )  # fmt: skip
    await source.start()
    await asyncio.Event().wait()


if __name__ == "__main__" and sys.argv[1:2] == ["child"]:
    _, _, b, t, g, d, h, w = sys.argv
    asyncio.run(_child(b, t, g, d, int(h), w == "1"))
