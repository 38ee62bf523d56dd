"""Outputs against real local receivers: order, signatures, retries under injected failures
(500, dropped connection, timeout, 429 Retry-After, refused, slow), dead letters, Slack and
PagerDuty bodies, and a SIGKILL of `driftline serve` with deliveries pending."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.app.config import Config
from tests.support.asgi import in_memory
from tests.support.live import wait_until
from tests.support.receivers import Behaviour, receiver, refused_url, verify_signature
from tests.support.records import DEMO_STATE, resize
from tests.support.serve_process import create_key, serve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
CLOUDTRAIL = "/api/v1/ingest/cloudtrail"
SECRET = "receiver-shared-secret"
FAST = {"backoff_seconds": 0.01, "max_backoff_seconds": 0.05, "timeout_seconds": 2}


def _config(tmp_path: Path, **over: Any) -> Config:
    return Config(
        state=[DEMO_STATE], data_dir=str(tmp_path / "data"), state_poll_seconds=60, **over
    )


def _hook(url: str, **over: Any) -> dict[str, Any]:
    return {"name": "hook", "type": "webhook", "url": url, "events": ["new", "update"]} | over


async def _ingest(client: httpx.AsyncClient, n: int, prefix: str = "o") -> None:
    for i in range(n):
        r = await client.post(CLOUDTRAIL, content=orjson.dumps(resize(f"{prefix}-{i}", f"m{i}.x")))
        assert r.status_code == 202, r.text


async def _create(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    r = await client.post("/api/v1/outputs", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["data"]["id"])


async def test_webhook_gets_every_message_in_order_signed(tmp_path: Path) -> None:
    async with receiver() as rx, in_memory(_config(tmp_path)) as srv:
        await _create(srv.client, _hook(rx.url, secret=SECRET, **FAST))
        await _ingest(srv.client, 20)
        await wait_until(lambda: len(rx.received) >= 20, "20 deliveries")
        seqs = [r.json()["seq"] for r in rx.received]
        assert seqs == sorted(seqs) and len(set(seqs)) == 20
        assert {r.json()["event"] for r in rx.received} == {"new"}
        for r in rx.received:
            assert verify_signature(SECRET, r.headers["driftline-signature"], r.body)
            assert r.headers["driftline-delivery-id"] == r.json()["delivery_id"]
        assert len(set(rx.delivery_ids())) == 20


async def test_injected_failures_are_retried_with_the_same_delivery_id(tmp_path: Path) -> None:
    hung = asyncio.Event()
    async with receiver() as rx, in_memory(_config(tmp_path)) as srv:
        rx.script = [
            Behaviour(500),
            Behaviour(close=True),  # connection dropped unanswered
            Behaviour(hold=hung),  # no answer within timeout_seconds
            Behaviour(429, {"Retry-After": "1"}),
        ]
        output_id = await _create(srv.client, _hook(rx.url, **(FAST | {"timeout_seconds": 0.3})))
        try:
            await _ingest(srv.client, 1)
            await wait_until(lambda: len(rx.received) >= 5, "a delivery after 4 failures")
        finally:
            hung.set()
        assert len(set(rx.delivery_ids()[:5])) == 1
        assert rx.received[4].at - rx.received[3].at >= 1.0  # Retry-After honoured
        page = await srv.client.get(f"/api/v1/outputs/{output_id}/deliveries")
        [d] = page.json()["data"]["deliveries"]
        await wait_until(lambda: srv.daemon.outputs.senders[output_id].stats.delivered == 1, "ok")
        assert srv.daemon.outputs.senders[output_id].stats.failed_attempts == 4
        assert d["id"] == rx.delivery_ids()[0]


async def test_refused_receiver_degrades_health_and_gets_everything_back(tmp_path: Path) -> None:
    async with receiver() as rx, in_memory(_config(tmp_path)) as srv:
        output_id = await _create(srv.client, _hook(refused_url(), **FAST))
        await _ingest(srv.client, 10)
        sender = srv.daemon.outputs.senders[output_id]
        await wait_until(sender.degraded, "the output degraded")
        health = (await srv.client.get("/api/v1/health")).json()["data"]
        assert health["status"] == "degraded"
        assert health["components"]["outputs"]["outputs"]["hook"]["status"] == "degraded"
        await _ingest(srv.client, 5, "later")  # still accepted while the receiver is down
        r = await srv.client.patch(f"/api/v1/outputs/{output_id}", json={"url": rx.url})
        assert r.status_code == 200
        await wait_until(lambda: len(rx.received) >= 15, "the backlog delivered")
        seqs = [r.json()["seq"] for r in rx.received]
        assert seqs == sorted(seqs) and len(set(seqs)) == 15
        health = (await srv.client.get("/api/v1/health")).json()["data"]
        assert health["components"]["outputs"]["status"] == "ok"


async def test_a_slow_receiver_never_holds_up_ingest(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with receiver() as rx, in_memory(_config(tmp_path)) as srv:
        rx.script = [Behaviour(hold=release)]
        await _create(srv.client, _hook(rx.url, **FAST | {"timeout_seconds": 30}))
        await _ingest(srv.client, 1)
        await wait_until(lambda: len(rx.received) == 1, "the first delivery held")
        await _ingest(srv.client, 10, "more")  # all answered while the receiver holds one
        assert len(rx.received) == 1
        release.set()
        await wait_until(lambda: len(rx.received) == 11, "the rest delivered")


async def test_dead_letters_and_retry(tmp_path: Path) -> None:
    async with receiver() as rx, in_memory(_config(tmp_path)) as srv:
        rx.default = Behaviour(500)
        output_id = await _create(srv.client, _hook(rx.url, max_attempts=2, **FAST))
        await _ingest(srv.client, 2)
        sender = srv.daemon.outputs.senders[output_id]
        store = srv.daemon.store
        await wait_until(lambda: store.delivery_counts(output_id)["dead"] == 2, "two dead")
        url = f"/api/v1/outputs/{output_id}/deliveries"
        dead = (await srv.client.get(url, params={"status": "dead"})).json()["data"]
        assert dead["total"] == 2 and dead["deliveries"][0]["attempts"] == 2
        assert dead["deliveries"][0]["last_error"].startswith("2 attempts; last: HTTP 500")
        rx.default = Behaviour(200)
        did = dead["deliveries"][1]["id"]
        r = await srv.client.post(f"{url}/{did}/retry")
        assert r.status_code == 200 and r.json()["data"]["status"] == "pending"
        await wait_until(lambda: sender.stats.delivered == 1, "the retried delivery")
        assert rx.received[-1].headers["driftline-delivery-id"] == did
        missing = await srv.client.post(f"{url}/999999/retry")
        assert missing.status_code == 404


async def test_slack_and_pagerduty_receivers(tmp_path: Path) -> None:
    async with receiver() as slack, receiver() as pd, in_memory(_config(tmp_path)) as srv:
        await _create(srv.client, {"name": "chat", "type": "slack", "url": slack.url, **FAST})
        body = {"name": "pd", "type": "pagerduty", "url": pd.url, "routing_key": "K" * 32}
        await _create(srv.client, body | FAST)
        await _ingest(srv.client, 1)
        await wait_until(lambda: slack.received and pd.received, "both receivers")
        blocks = slack.received[0].json()["blocks"]
        assert blocks[0]["type"] == "header" and "aws_instance" in blocks[0]["text"]["text"]
        trigger = pd.received[0].json()
        drift_id = trigger["dedup_key"]
        assert trigger["event_action"] == "trigger"
        assert (await srv.client.get(f"/api/v1/drifts/{drift_id}")).status_code == 200
        r = await srv.client.post(f"/api/v1/drifts/{drift_id}/resolve", json={"note": "fixed"})
        assert r.status_code == 200
        await wait_until(lambda: len(pd.received) == 2, "the resolve event")
        resolve = pd.received[1].json()
        assert resolve["event_action"] == "resolve" and resolve["dedup_key"] == drift_id


async def test_tfdrift_webhook_test_endpoint(tmp_path: Path) -> None:
    async with receiver() as rx, in_memory(_config(tmp_path)) as srv:
        r = await srv.client.post("/api/v1/config/webhooks/test", json={"url": rx.url})
        assert r.json()["data"] == {"delivered": True, "status": 200, "error": None}
        assert rx.received[0].json()["payload"]["id"] == "drift-test"
        r = await srv.client.post("/api/v1/config/webhooks/test", json={"url": refused_url()})
        assert r.json()["data"]["delivered"] is False
        assert (await srv.client.post("/api/v1/config/webhooks/test", json={})).status_code == 400


async def _metrics(client: httpx.AsyncClient) -> dict[tuple[str, str], float]:
    text = (await client.get("/metrics")).text
    return {
        (s.name, s.labels.get("output", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("driftline_output_")
    }


async def test_delivery_metrics_per_output(tmp_path: Path) -> None:
    async with receiver() as rx, in_memory(_config(tmp_path)) as srv:
        await _create(srv.client, _hook(rx.url, name="up", **FAST))
        slow = FAST | {"backoff_seconds": 60, "max_backoff_seconds": 60}
        await _create(srv.client, _hook(refused_url(), name="down", **slow))
        await _create(srv.client, _hook(refused_url(), name="gone", **FAST, max_attempts=1))
        await _ingest(srv.client, 4)
        senders = srv.daemon.outputs.senders.values()
        stats = {s.spec.name: s.stats for s in senders}
        gone = next(s.spec.id for s in senders if s.spec.name == "gone")

        def settled() -> bool:
            dead = srv.daemon.store.delivery_counts(gone)["dead"]
            return stats["up"].delivered == 4 and stats["down"].failed_attempts == 1 and dead == 4

        await wait_until(settled, "sent, failed and dead")
        m = await _metrics(srv.client)
    assert m[("driftline_output_deliveries_sent_total", "up")] == 4
    assert m[("driftline_output_deliveries_dead_total", "gone")] == 4
    assert m[("driftline_output_delivery_failures_total", "gone")] == 4
    assert m[("driftline_output_delivery_failures_total", "down")] == 1  # then waits 30-60 s
    assert m[("driftline_output_backlog", "down")] == 4
    assert m[("driftline_output_backlog", "gone")] == 0
    assert m[("driftline_output_deliveries_sent_total", "down")] == 0
    assert m[("driftline_output_degraded", "gone")] == 1
    assert m[("driftline_output_degraded", "up")] == 0


async def test_sigkill_with_deliveries_pending_loses_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    headers = {"Authorization": "Bearer " + create_key(data, "admin")}
    headers["Content-Type"] = "application/json"
    hold = asyncio.Event()
    async with receiver() as rx:
        async with (
            serve(data) as (proc, base, _),
            httpx.AsyncClient(base_url=base, timeout=10, headers=headers) as client,
        ):
            rx.script = [Behaviour(), Behaviour(), Behaviour(hold=hold)]
            await _create(client, _hook(rx.url, **FAST | {"timeout_seconds": 60}))
            await _ingest(client, 30)
            await wait_until(lambda: len(rx.received) == 3, "the third delivery in flight")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        hold.set()
        before = rx.delivery_ids()
        async with serve(data):
            await wait_until(lambda: len(set(rx.delivery_ids())) == 30, "every delivery", 30)
        after = rx.delivery_ids()[len(before) :]
        assert before[2] in after  # sent, never acknowledged: sent again, same id
        assert after == sorted(after, key=int) and len(set(after)) == len(after)
        firsts = [int(i) for i in dict.fromkeys(rx.delivery_ids())]
        assert firsts == sorted(firsts)
