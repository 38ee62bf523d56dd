"""The Kafka output against a real Kafka-protocol broker (Tansu, or Apache Kafka via
DRIFTLINE_TEST_KAFKA): key = resource, value = the drift JSON, in order; and a broker that
is cut off gets every delivery once it is back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from monitor.app.config import Config
from tests.support.asgi import InMemory, in_memory
from tests.support.kafka_broker import Broker, create_topic, unique
from tests.support.kafka_source import broker, owned_broker
from tests.support.live import wait_until
from tests.support.records import DEMO_STATE, resize

__all__ = ["broker", "owned_broker"]  # the fixtures
pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
CLOUDTRAIL = "/api/v1/ingest/cloudtrail"
FAST = {"backoff_seconds": 0.05, "max_backoff_seconds": 0.2, "timeout_seconds": 3}


def _config(tmp_path: Path) -> Config:
    return Config(state=[DEMO_STATE], data_dir=str(tmp_path / "data"), state_poll_seconds=60)


async def _setup(srv: InMemory, b: Broker, **over: Any) -> tuple[str, str]:
    topic = unique("drifts")
    await create_topic(b.bootstrap, topic)
    body = {"name": "k", "type": "kafka", "brokers": b.bootstrap, "topic": topic} | FAST | over
    r = await srv.client.post("/api/v1/outputs", json=body)
    assert r.status_code == 201, r.text
    return topic, r.json()["data"]["id"]


async def _ingest(srv: InMemory, n: int, prefix: str) -> None:
    for i in range(n):
        record = resize(f"{prefix}-{i}", f"m{i}.{prefix}")
        r = await srv.client.post(CLOUDTRAIL, content=orjson.dumps(record))
        assert r.status_code == 202, r.text


async def _consume(bootstrap: str, topic: str, n: int) -> list[ConsumerRecord[bytes, bytes]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    got: list[ConsumerRecord[bytes, bytes]] = []
    try:
        async with asyncio.timeout(30):
            while len(got) < n:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend(records)
    finally:
        await consumer.stop()
    return got


async def test_each_drift_is_a_record_keyed_by_resource(tmp_path: Path, broker: Broker) -> None:
    async with in_memory(_config(tmp_path)) as srv:
        topic, _ = await _setup(srv, broker)
        await _ingest(srv, 5, "a")
        records = await _consume(broker.bootstrap, topic, 5)
        drifts = (await srv.client.get("/api/v1/drifts")).json()["data"]["drifts"]
    values = [orjson.loads(r.value) for r in records]
    by_id = {d["id"]: d for d in drifts}
    for record, value in zip(records, values, strict=True):
        assert value["id"] in by_id and value["severity"] == by_id[value["id"]]["severity"]
        assert record.key == value["resource_address"].encode()
        headers = dict(record.headers)
        assert headers["driftline-event"] == b"new"
    ids = [int(dict(r.headers)["driftline-delivery-id"]) for r in records]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert [v["new_value"] for v in values] == [f"m{i}.a" for i in range(5)]


async def test_a_broker_cut_off_gets_everything_when_back(
    tmp_path: Path, owned_broker: Broker
) -> None:
    proxy = owned_broker.proxy
    assert proxy is not None
    async with in_memory(_config(tmp_path)) as srv:
        topic, output_id = await _setup(srv, owned_broker)
        await _ingest(srv, 2, "before")
        await _consume(owned_broker.bootstrap, topic, 2)
        await proxy.cut()
        await _ingest(srv, 3, "during")  # ingest does not wait for the broker
        stats = srv.daemon.outputs.senders[output_id].stats
        await wait_until(lambda: stats.failed_attempts >= 2, "failed attempts", 30)
        await proxy.restore()
        records = await _consume(owned_broker.bootstrap, topic, 5)
    values = [orjson.loads(r.value)["new_value"] for r in records]
    assert values[:2] == ["m0.before", "m1.before"]
    assert list(dict.fromkeys(values[2:])) == [f"m{i}.during" for i in range(3)]
