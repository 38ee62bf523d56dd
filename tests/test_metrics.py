"""/metrics: parsed with prometheus-client's own parser; every family moves with its event."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.app.config import Config
from monitor.app.web_api import web_app
from tests.support.asgi import in_memory, make_daemon
from tests.support.records import DEMO_STATE, resize

pytestmark = pytest.mark.timeout(60)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _config(tmp_path: Path, **over: Any) -> Config:
    state = tmp_path / "demo.tfstate"
    shutil.copy(DEMO_STATE, state)
    return Config(
        state=[str(state)], data_dir=str(tmp_path / "data"), state_poll_seconds=60, **over
    )


async def _scrape(client: httpx.AsyncClient) -> Samples:
    resp = await client.get("/metrics")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain; version=")
    return parse(resp.text)


async def test_every_family_moves_when_its_event_happens(tmp_path: Path):
    async with in_memory(_config(tmp_path)) as app:
        d = app.daemon
        before = await _scrape(app.client)
        assert value(before, "driftline_state_resources") > 0

        bad = {"eventVersion": "1.08", "eventName": 42}
        resp = await app.client.post(
            "/api/v1/ingest/cloudtrail",
            content=orjson.dumps({"Records": [resize("m-1", "m5.24xlarge"), bad]}),
        )
        assert resp.status_code == 202, resp.text
        reason = next(iter(d.pipeline.rejected))
        slow = d.hub.subscribe(["drifts", "events"], queue_size=1)  # overflows: lagged
        waiting = d.hub.subscribe(["drifts"])  # never reads: its queue holds the drift
        await app.client.post(
            "/api/v1/ingest/cloudtrail", content=orjson.dumps(resize("m-2", "m5.12xlarge"))
        )
        state = Path(d.config.state[0])
        doc = orjson.loads(state.read_bytes())
        doc["serial"] += 1
        state.write_bytes(orjson.dumps(doc))
        assert await d.reload_state()
        state.write_text("{not json")
        await d.reload_state()
        after = await _scrape(app.client)
        assert slow.lagged and len(waiting.queue) >= 1

    src = {"source": "http:cloudtrail"}
    moved = {
        ("driftline_records_received_total", ()): 3,
        ("driftline_records_decoded_total", ()): 2,
        ("driftline_records_rejected_total", (("reason", reason),)): 1,
        ("driftline_drifts_total", (("kind", "modified"), ("severity", "medium"))): 2,
        ("driftline_state_reloads_total", ()): 1,
        ("driftline_state_reload_errors_total", ()): 1,
        ("driftline_hub_subscribers", ()): 1,  # the lagged one was dropped
        ("driftline_hub_lagged_disconnects_total", ()): 1,
        ("driftline_stored_drifts", ()): 2,
    }
    for (name, extra), delta in moved.items():
        labels = {**(src if name.startswith("driftline_records") else {}), **dict(extra)}
        assert value(after, name, **labels) - value(before, name, **labels) == delta, name
    grew = [
        "driftline_hub_queued_messages",
        "driftline_hub_published_total",
        "driftline_store_commits_total",
        "driftline_graph_nodes",
        "driftline_ingest_to_stored_seconds_count",
        "driftline_stored_to_published_seconds_count",
        "driftline_store_commit_seconds_count",
        "driftline_store_commit_batches_count",
    ]
    for name in grew:
        assert value(after, name) > value(before, name), name
    sev = value(after, "driftline_stored_drifts_by_severity", severity="medium")
    assert sev == 2


class _FakeKafka:
    """A Kafka source's status as streams/kafka.py reports it."""

    def __init__(self) -> None:
        self.commits = 0

    def status(self) -> dict[str, Any]:
        partitions = [{"topic": "cloudtrail", "partition": 0, "lag": 7 - self.commits}]
        return {
            "commits": self.commits,
            "commit_failures": 0,
            "rebalances": 1,
            "partitions": partitions,
        }

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


async def test_kafka_lag_commits_and_rebalances_come_from_the_source_status(tmp_path: Path):
    async with in_memory(_config(tmp_path)) as app:
        kafka = _FakeKafka()
        app.daemon.sources["kafka"] = kafka  # type: ignore[assignment]
        before = await _scrape(app.client)
        kafka.commits = 3
        after = await _scrape(app.client)
    lag = {"topic": "cloudtrail", "partition": "0"}
    assert value(before, "driftline_kafka_consumer_lag", **lag) == 7
    assert value(after, "driftline_kafka_consumer_lag", **lag) == 4
    assert value(after, "driftline_kafka_commits_total") == 3
    assert value(after, "driftline_kafka_rebalances_total") == 1


async def test_a_viewer_may_scrape_an_ingest_key_may_not(tmp_path: Path):
    async with in_memory(_config(tmp_path)) as app:
        keys = app.daemon.access.keys
        viewer, _ = keys.create("prom", "viewer", "tests")
        ingest, _ = keys.create("falco", "ingest", "tests")
        ok = await app.client.get("/metrics", headers={"Authorization": f"Bearer {viewer}"})
        refused = await app.client.get("/metrics", headers={"Authorization": f"Bearer {ingest}"})
        anonymous = await app.client.get("/metrics", headers={"Authorization": ""})
    assert ok.status_code == 200 and "driftline_records_received" in ok.text
    assert refused.status_code == 403
    assert anonymous.status_code == 401


async def test_the_metrics_port_serves_metrics_alone_without_a_key(tmp_path: Path):
    daemon = make_daemon(_config(tmp_path, metrics_port=9187))
    await daemon.start()
    try:
        transport = httpx.ASGITransport(app=web_app(daemon))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:9187") as c:
            scraped = await c.get("/metrics")
            other = await c.get("/api/v1/drifts")
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as c:
            main = await c.get("/metrics")
    finally:
        await daemon.stop()
    assert scraped.status_code == 200 and "driftline_hub_subscribers" in scraped.text
    assert other.status_code == 404
    assert main.status_code == 401  # the main port still wants a key


def test_metrics_port_must_be_a_port_other_than_the_api_port():
    with pytest.raises(ValueError, match="metrics_port"):
        Config(demo=True, metrics_port=8080).validate()
