"""Outputs without a network: validation, routing, rendering, signatures, the outbox in the
drift's transaction, and the API in memory (secrets write-only)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.app.config import Config, ConfigError, load_config
from monitor.hub import Message
from monitor.outputs.http import Answer, retry_after
from monitor.outputs.render import pagerduty_event, render, slack_message
from monitor.outputs.route import Router
from monitor.outputs.spec import SpecError, parse_spec, patched
from monitor.store import Delivery, SqliteStore, WriteBatch, drift_payload
from tests.support.asgi import in_memory
from tests.support.drifts import DRIFT
from tests.support.receivers import refused_url, verify_signature
from tests.support.records import DEMO_STATE, resize

CLOUDTRAIL = "/api/v1/ingest/cloudtrail"
SECRET = "s3cr3t-hmac-key"


def _config(tmp_path: Path, **over: Any) -> Config:
    return Config(
        state=[DEMO_STATE], data_dir=str(tmp_path / "data"), state_poll_seconds=60, **over
    )


def _spec(**over: Any) -> Any:
    return parse_spec({"name": "hook", "type": "webhook", "url": "http://x.test/h"} | over, "o1")


def _message(seq: int, type_: str, payload: dict[str, Any]) -> Message:
    return Message(seq, "drifts", type_, "2026-03-01T10:00:01Z", payload)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://x.test/h"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"min_severity": "urgent"}, "min_severity"),
        ({"filter": {"colour": ["red"]}}, "filter.colour"),
        ({"filter": {"severity": ["bad"]}}, "filter.severity"),
        ({"events": ["new", "deleted"]}, "events"),
        ({"type": "carrier-pigeon"}, "type"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"colour": "red"}, "colour"),
        ({"type": "pagerduty"}, "routing_key"),
    ],
)
def test_bad_configuration_names_the_setting(body: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as err:
        _spec(**body)
    assert err.value.field == field


MAIL = {"name": "m", "type": "email", "url": "smtp://mail.test:587", "from": "d@x.test"}
MAIL |= {"to": ["a@x.test"], "username": "u", "password": "smtp-secret"}
KAFKA = {"name": "k", "type": "kafka", "brokers": "k1.test:9092,k2.test:9092", "topic": "drifts"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (MAIL | {"url": "http://mail.test"}, "url"),
        (MAIL | {"to": ["not-an-address"]}, "to"),
        ({k: v for k, v in MAIL.items() if k != "to"}, "to"),
        (MAIL | {"from": "nobody"}, "from"),
        (MAIL | {"starttls": False}, "password"),  # never a password in the clear
        ({k: v for k, v in MAIL.items() if k != "password"}, "password"),
        (MAIL | {"topic": "t"}, "topic"),
        (KAFKA | {"brokers": "k1.test"}, "brokers"),
        (KAFKA | {"url": "http://k1.test"}, "url"),
        ({k: v for k, v in KAFKA.items() if k != "topic"}, "topic"),
        ({"name": "w", "type": "webhook", "url": "http://x.test", "password": "p"}, "password"),
    ],
)
def test_bad_email_and_kafka_settings_name_the_setting(body: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(body, "o")
    assert err.value.field == field


def test_email_and_kafka_views_and_stored_round_trip() -> None:
    mail = parse_spec(MAIL, "o")
    view = mail.view()
    assert "smtp-secret" not in orjson.dumps(view).decode() and view["secret_set"] is True
    assert view["to"] == ["a@x.test"] and view["starttls"] is True
    assert parse_spec(orjson.loads(orjson.dumps(mail.stored())), "o") == mail
    assert patched(mail, {"to": "b@x.test"}).password == "smtp-secret"
    kafka = parse_spec(KAFKA, "k")
    assert kafka.view()["url"] is None and kafka.view()["topic"] == "drifts"
    assert parse_spec(orjson.loads(orjson.dumps(kafka.stored())), "k") == kafka


def test_views_never_show_secrets_and_patches_keep_them() -> None:
    spec = parse_spec(
        {"name": "s", "type": "slack", "url": "https://hooks.slack.test/T0/B0/tok3n?x=1"}, "o"
    )
    view = spec.view()
    assert "tok3n" not in orjson.dumps(view).decode() and view["url"].startswith("https://")
    hook = _spec(secret=SECRET, url="https://user:pw@x.test/h?token=abc")
    text = orjson.dumps(hook.view()).decode()
    assert SECRET not in text and "pw" not in text and "abc" not in text
    assert hook.view()["secret_set"] is True
    changed = patched(hook, {"min_severity": "high"})
    assert changed.secret == SECRET and changed.min_severity == "high"
    assert patched(changed, {"secret": None}).secret is None


def test_routing_by_severity_filter_and_message_type() -> None:
    router = Router()
    router.specs = (
        _spec(min_severity="high"),
        parse_spec(
            {
                "name": "all",
                "type": "webhook",
                "url": "http://x.test/a",
                "events": ["new", "update", "resolved", "state"],
                "filter": {"resource_type": ["aws_instance"], "actor": "u"},
            },
            "o2",
        ),
    )
    low = drift_payload(DRIFT)  # medium, aws_instance, by u
    high = {**low, "id": "d-2", "severity": "critical"}
    other = {**high, "id": "d-3", "resource_type": "aws_s3_bucket"}
    update = {**low, "update": {"reason": "occurrence"}}
    resolved = {**high, "update": {"reason": "status", "status": "resolved"}}
    messages = [
        _message(1, "drift", low),
        _message(2, "drift", high),
        _message(3, "drift", other),
        _message(4, "drift_update", update),
        _message(5, "drift_update", resolved),
        Message(6, "state", "state_change", "t", {"resource_count": 3}),
        Message(7, "events", "event", "t", {"severity": "critical"}),
    ]
    rows = router.route(messages)
    got = {(r[0], r[1], r[3]) for r in rows}
    assert got == {
        ("o1", 2, "new"),
        ("o1", 3, "new"),
        ("o1", 5, "resolved"),
        ("o2", 1, "new"),
        ("o2", 2, "new"),
        ("o2", 4, "update"),
        ("o2", 5, "resolved"),
        ("o2", 6, "state"),
    }
    assert router.touched == {"o1", "o2"}


def _delivery(event: str, payload: dict[str, Any]) -> Delivery:
    body = orjson.dumps(payload)
    return Delivery(7, "o1", 42, "drift", event, "t", body, "pending", 0, 0.0, None, 0.0, None)


def test_webhook_body_is_signed_over_timestamp_and_body() -> None:
    d = _delivery("new", drift_payload(DRIFT))
    now = time.time()
    headers, body = render(_spec(secret=SECRET), d, now, None)
    h = dict(headers)
    assert h["Driftline-Delivery-Id"] == "7" and h["Driftline-Event"] == "new"
    assert verify_signature(SECRET, h["Driftline-Signature"], body)
    assert not verify_signature("other", h["Driftline-Signature"], body)
    assert not verify_signature(SECRET, h["Driftline-Signature"], body + b" ")
    doc = orjson.loads(body)
    assert doc["delivery_id"] == "7" and doc["seq"] == 42 and doc["payload"]["id"] == "d-1"
    unsigned, _ = render(_spec(), d, now, None)
    assert "Driftline-Signature" not in dict(unsigned)


def test_slack_and_pagerduty_bodies() -> None:
    payload = drift_payload(DRIFT)
    msg = slack_message(_delivery("new", payload), "https://driftline.example")
    text = orjson.dumps(msg).decode()
    parts = ("MEDIUM", "aws_instance.web", "t3.micro", "t3.2xlarge", "instance_type", "*Actor*\\nu")
    for part in parts:
        assert part in text, part
    assert "https://driftline.example/api/v1/drifts/d-1" in text
    assert {b["type"] for b in msg["blocks"]} >= {"header", "section"}
    pd = parse_spec({"name": "pd", "type": "pagerduty", "routing_key": "R" * 32}, "p")
    trigger = pagerduty_event(pd, _delivery("new", payload), None)
    assert trigger["event_action"] == "trigger" and trigger["dedup_key"] == "d-1"
    assert trigger["payload"]["severity"] == "warning" and trigger["routing_key"] == "R" * 32
    resolve = pagerduty_event(pd, _delivery("resolved", payload), None)
    assert resolve == {"routing_key": "R" * 32, "event_action": "resolve", "dedup_key": "d-1"}


def test_retry_after_seconds_and_dates() -> None:
    now = time.time()
    assert retry_after(Answer(429, {"retry-after": "7"}, b""), now) == 7
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 30))
    assert 28 <= retry_after(Answer(429, {"retry-after": date}, b""), now) <= 31
    assert retry_after(Answer(429, {"retry-after": "soon"}, b""), now) == 0
    assert retry_after(Answer(429, {}, b""), now) == 0


def test_deliveries_are_written_with_the_message_or_not_at_all(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    router = Router()
    router.specs = (_spec(),)

    def publish(batches: Any, outcomes: Any) -> list[list[Message]]:
        return [[_message(1, "drift", drift_payload(DRIFT))]]

    store.stage([WriteBatch(drifts=[DRIFT], received_at="t")], publish, router)
    store._rollback()  # the write fails before COMMIT: neither message nor delivery
    store._write_lock.release()
    assert store.due_deliveries("o1", 10) == [] and store.last_seq() == 0
    store.stage([WriteBatch(drifts=[DRIFT], received_at="t")], publish, router)
    store.commit_staged()
    [d] = store.due_deliveries("o1", 10)
    assert (d.seq, d.event, orjson.loads(d.body)["id"]) == (1, "new", "d-1")
    store.close()


def test_outputs_in_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "outputs:\n  - name: ops\n    type: webhook\n    url: http://x.test/h\n"
        "    min_severity: high\n"
    )
    config = load_config(str(path), {}, {"state": [DEMO_STATE]})
    assert config.outputs[0]["name"] == "ops"
    path.write_text("outputs:\n  - name: ops\n    type: webhook\n    url: ftp://x\n")
    with pytest.raises(ConfigError, match=r"outputs\[0\]\.url"):
        load_config(str(path), {}, {"state": [DEMO_STATE]})


async def test_api_crud_secrets_write_only_and_deliveries_queued(tmp_path: Path) -> None:
    async with in_memory(_config(tmp_path)) as srv:
        c = srv.client
        body = {
            "name": "ops",
            "type": "webhook",
            "url": refused_url(),
            "secret": SECRET,
            "events": ["new", "update"],
            "filter": {"resource_type": ["aws_instance"]},
            "backoff_seconds": 60,
        }
        created = await c.post("/api/v1/outputs", json=body)
        assert created.status_code == 201, created.text
        output_id = created.json()["data"]["id"]
        assert (await c.post("/api/v1/outputs", json=body)).status_code == 409
        bad = await c.post("/api/v1/outputs", json=body | {"name": "x", "min_severity": "hi"})
        assert bad.status_code == 400 and "min_severity" in bad.json()["error"]["message"]
        r = await c.post(CLOUDTRAIL, content=orjson.dumps(resize("o-1", "m5.xlarge")))
        assert r.status_code == 202 and r.json()["data"]["drifts"] == 1
        page = (await c.get(f"/api/v1/outputs/{output_id}/deliveries")).json()["data"]
        assert page["total"] == 1 and page["deliveries"][0]["event"] == "new"
        patch = await c.patch(f"/api/v1/outputs/{output_id}", json={"min_severity": "critical"})
        assert patch.status_code == 200 and patch.json()["data"]["min_severity"] == "critical"
        listing = await c.get("/api/v1/outputs")
        one = await c.get(f"/api/v1/outputs/{output_id}")
        audit = await c.get("/api/v1/audit-log")
        for resp in (created, listing, one, patch, audit):
            assert SECRET not in resp.text
        assert srv.daemon.outputs.specs[output_id].secret == SECRET
        gone = await c.delete(f"/api/v1/outputs/{output_id}")
        assert gone.status_code == 200
        assert (await c.get(f"/api/v1/outputs/{output_id}")).status_code == 404
