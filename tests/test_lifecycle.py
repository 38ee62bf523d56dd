"""Durable store and drift lifecycle: restarts, transitions, baselines, flood control, resume."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

from monitor.app.config import Config
from monitor.store import SqliteStore
from monitor.store.schema import MIGRATIONS, SCHEMA_VERSION
from tests.support.live import SSEReader, running
from tests.support.records import DEMO_STATE, resize

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path, state: Path | None = None, **over: Any) -> Config:
    return Config(
        state=[str(state or ROOT / DEMO_STATE)],
        data_dir=str(tmp_path / "data"),
        state_poll_seconds=60,
        prune_interval_seconds=3600,
        **over,
    )


async def _post(srv: Any, rec: dict[str, Any]) -> dict[str, Any]:
    resp = await srv.client.post("/api/v1/ingest/cloudtrail", content=orjson.dumps(rec))
    assert resp.status_code == 202, resp.text
    return resp.json()["data"]  # type: ignore[no-any-return]


@pytest.mark.integration
async def test_restart_keeps_drifts_events_stats_and_sequence(tmp_path: Path) -> None:
    async with running(_config(tmp_path)) as srv:
        await _post(srv, resize("e-1", "t3.2xlarge"))
        await srv.client.post(
            "/api/v1/falco/events",
            content=orjson.dumps(
                {
                    "rule": "r",
                    "priority": "Warning",
                    "time": "2026-01-01T00:00:00Z",
                    "output": "x",
                    "uuid": "alert-1",
                }
            ),
        )
        before = {
            p: (await srv.client.get(p)).json()["data"]
            for p in ("/api/v1/drifts", "/api/v1/events", "/api/v1/drifts/summary")
        }
        stats_before = (await srv.client.get("/api/v1/stats")).json()["data"]
        seq_before = srv.daemon.hub.seq
        assert seq_before >= 2 and before["/api/v1/drifts"]["total"] == 1
    async with running(_config(tmp_path)) as srv:
        for path, data in before.items():
            assert (await srv.client.get(path)).json()["data"] == data, path
        stats = (await srv.client.get("/api/v1/stats")).json()["data"]
        for key in ("drifts", "events", "severity_breakdown", "top_resource_types", "ingest"):
            if key == "events":
                assert stats[key]["total"] == stats_before[key]["total"]
            else:
                assert stats[key] == stats_before[key], key
        assert srv.daemon.hub.seq == seq_before
        await _post(srv, resize("e-2", "t3.large"))
        assert srv.daemon.hub.seq > seq_before


@pytest.mark.integration
async def test_lifecycle_transitions_and_errors(tmp_path: Path) -> None:
    async with running(_config(tmp_path)) as srv:
        [drift_id] = (await _post(srv, resize("e-1", "t3.2xlarge")))["drift_ids"]
        url = f"/api/v1/drifts/{drift_id}"
        ok = await srv.client.patch(url, json={"status": "investigating", "note": "on it"})
        assert ok.status_code == 200 and ok.json()["data"]["status"] == "investigating"
        again = await srv.client.patch(url, json={"status": "investigating"})
        assert again.status_code == 409 and again.json()["error"]["code"] == "CONFLICT"
        back = await srv.client.patch(url, json={"status": "detected"})
        assert back.status_code == 400 and back.json()["error"]["code"] == "VALIDATION_ERROR"
        for bad in (b"{nope", b"[1]", b'{"status": 7}'):
            r = await srv.client.patch(url, content=bad)
            assert r.status_code == 400
        missing = await srv.client.patch(
            "/api/v1/drifts/drift-nope", json={"status": "investigating"}
        )
        assert missing.status_code == 404
        done = await srv.client.post(url + "/resolve", json={"note": "reverted"})
        assert done.status_code == 200 and done.json()["data"]["status"] == "resolved"
        final = await srv.client.post(url + "/resolve", json={})
        assert final.status_code == 409
        detail = (await srv.client.get(url)).json()["data"]
        assert [(h["from"], h["to"], h["note"]) for h in detail["history"]] == [
            ("detected", "investigating", "on it"),
            ("investigating", "resolved", "reverted"),
        ]
        summary = (await srv.client.get("/api/v1/drifts/summary")).json()["data"]
        assert summary["total"] == 1 and summary["by_status"]["resolved"] == 1
        assert summary["by_status"]["detected"] == 0 and summary["by_severity"]["medium"] == 1
        listed = (await srv.client.get("/api/v1/drifts?status=resolved")).json()["data"]
        assert listed["total"] == 1 and listed["drifts"][0]["id"] == drift_id
        assert (await srv.client.get("/api/v1/drifts?status=detected")).json()["data"]["total"] == 0


@pytest.mark.integration
async def test_baseline_capture_suppresses_the_repeat_until_state_changes(tmp_path: Path):
    state = tmp_path / "live.tfstate"
    doc = json.loads((ROOT / DEMO_STATE).read_text())
    state.write_text(json.dumps(doc))
    async with running(_config(tmp_path, state)) as srv:
        [first] = (await _post(srv, resize("e-1", "t3.2xlarge")))["drift_ids"]
        r = await srv.client.post(
            f"/api/v1/drifts/{first}/resolve", json={"capture_baseline": True}
        )
        assert r.json()["data"]["baseline_captured"] is True
        repeat = await _post(srv, resize("e-2", "t3.2xlarge"))
        assert repeat["drifts"] == 0 and repeat["suppressed"] == 1
        other = await _post(srv, resize("e-3", "t3.large"))
        assert other["drifts"] == 1
        detail = (await srv.client.get(f"/api/v1/drifts/{other['drift_ids'][0]}")).json()["data"]
        assert detail["baseline"]["source"] == "accepted"
        assert detail["baseline_value"] == "t3.2xlarge" and detail["current_value"] == "t3.large"
        assert detail["diff"] == [
            {"op": "replace", "path": "/", "old": "t3.2xlarge", "value": "t3.large"}
        ]
        # The declared state changes: the accepted baseline no longer applies.
        doc["serial"] += 1
        for res in doc["resources"]:
            if res["type"] == "aws_instance":
                res["instances"][0]["attributes"]["instance_type"] = "t3.small"
        state.write_text(json.dumps(doc))
        assert await srv.daemon.reload_state()
        after = await _post(srv, resize("e-4", "t3.2xlarge"))
        assert after["drifts"] == 1


@pytest.mark.integration
async def test_flood_control_counts_occurrences_of_an_open_drift(tmp_path: Path) -> None:
    async with (
        running(_config(tmp_path)) as srv,
        connect(srv.ws + "?topics=drifts", additional_headers=srv.auth) as ws,
    ):
        await ws.recv()  # welcome
        [drift_id] = (await _post(srv, resize("e-1", "t3.2xlarge")))["drift_ids"]
        for n in (2, 3):
            data = await _post(srv, resize(f"e-{n}", "t3.2xlarge", f"2026-01-01T00:0{n}:00Z"))
            assert data["drifts"] == 0 and data["repeats"] == 1
        # Redelivery of an already counted event changes nothing.
        assert (await _post(srv, resize("e-3", "t3.2xlarge")))["repeats"] == 0
        detail = (await srv.client.get(f"/api/v1/drifts/{drift_id}")).json()["data"]
        assert detail["occurrences"] == 3 and detail["last_seen"] == "2026-01-01T00:03:00Z"
        assert detail["occurrence_events"] == ["e-1", "e-2", "e-3"]
        assert [e["id"] for e in detail["related_events"]][:3] == ["e-1", "e-3", "e-2"]
        types = []
        while len(types) < 3:
            msg = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            types.append((msg["type"], msg["payload"].get("occurrences")))
        assert types == [("drift", 1), ("drift_update", 2), ("drift_update", 3)]
        await srv.client.post(f"/api/v1/drifts/{drift_id}/resolve", json={})
        fresh = await _post(srv, resize("e-9", "t3.2xlarge"))
        assert fresh["drifts"] == 1 and fresh["drift_ids"] != [drift_id]


@pytest.mark.integration
async def test_resume_from_the_store_when_the_gap_is_older_than_memory(tmp_path: Path):
    async with running(_config(tmp_path, resume_buffer=3)) as srv:
        await _post(srv, resize("e-0", "t3.size0"))
        first = srv.daemon.hub.seq
        for n in range(1, 10):
            await _post(srv, resize(f"e-{n}", f"t3.size{n}"))
        assert srv.daemon.hub.buffer[0].seq > first + 1  # memory no longer reaches back
        async with srv.client.stream(
            "GET", "/api/v1/stream?topics=drifts", headers={"Last-Event-ID": str(first)}
        ) as sse:
            reader = SSEReader(sse)
            await reader.until("connected")
            got = [
                (await asyncio.wait_for(reader.until("drift"), 10))[2]["event_id"] for _ in range(9)
            ]
        assert got == [f"e-{n}" for n in range(1, 10)]
        async with connect(srv.ws, additional_headers=srv.auth) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "subscribe", "topic": "drifts", "since": first}))
            seen = []
            async with asyncio.timeout(10):  # for all nine, whatever else arrives between
                while len(seen) < 9:
                    msg = orjson.loads(await ws.recv())
                    if msg["type"] == "drift":
                        seen.append(msg["payload"]["event_id"])
            assert seen == got
            await _post(srv, resize("e-10", "t3.size10"))
            async with asyncio.timeout(10):
                while True:
                    msg = orjson.loads(await ws.recv())
                    if msg["type"] == "drift":
                        assert msg["payload"]["event_id"] == "e-10"
                        break


@pytest.mark.integration
async def test_retention_prunes_by_count_and_keeps_counters_true(tmp_path: Path) -> None:
    async with running(_config(tmp_path, max_events=4, max_drifts=3, max_messages=5)) as srv:
        for n in range(8):
            await _post(srv, resize(f"e-{n}", f"t3.size{n}", f"2026-01-01T00:00:0{n}Z"))
        pruned = await srv.daemon.prune()
        assert pruned["events"] == 4 and pruned["drifts"] == 5
        drifts = (await srv.client.get("/api/v1/drifts")).json()["data"]
        events = (await srv.client.get("/api/v1/events")).json()["data"]
        assert drifts["total"] == len(drifts["drifts"]) == 3
        assert events["total"] == len(events["events"]) == 4
        assert [d["event_id"] for d in drifts["drifts"]] == ["e-7", "e-6", "e-5"]
        summary = (await srv.client.get("/api/v1/drifts/summary")).json()["data"]
        assert summary["total"] == 3 and sum(summary["by_status"].values()) == 3
        seq = srv.daemon.hub.seq
    async with running(_config(tmp_path, max_messages=5)) as srv:
        assert srv.daemon.hub.seq == seq  # the sequence survives message pruning


def test_migration_from_schema_1(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[1] + ";PRAGMA user_version=1;")
    body = {
        "id": "drift-old",
        "kind": "modified",
        "severity": "high",
        "category": "iam",
        "provider": "aws",
        "resource_type": "aws_iam_role",
        "resource_id": "r",
        "resource_address": "aws_iam_role.r",
        "field": None,
        "old_value": None,
        "new_value": None,
        "event_id": "e-old",
        "event_name": "TagRole",
        "event_time": "2025-01-01T00:00:00Z",
        "detected_at": "2025-01-01T00:00:01Z",
        "actor": {"type": "IAMUser", "user_name": "alice", "arn": "arn:aws:iam::1:user/alice"},
        "source_ip": "192.0.2.9",
        "status": "detected",
    }
    db.execute(
        "INSERT INTO drifts (id, event_id, kind, severity, category, provider, "
        "resource_type, resource_id, resource_address, field, actor, status, "
        "event_time, detected_at, body) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            "drift-old",
            "e-old",
            "modified",
            "high",
            "iam",
            "aws",
            "aws_iam_role",
            "r",
            "aws_iam_role.r",
            None,
            "x",
            "detected",
            "2025-01-01T00:00:00Z",
            "2025-01-01T00:00:01Z",
            orjson.dumps(body),
        ),
    )
    db.commit()
    db.close()
    store = SqliteStore(path)
    store.start()
    try:
        d = store.drift("drift-old")
        assert d is not None and d["type"] == "security" and d["occurrences"] == 1
        # Schema 6 lists the drift's own actor (from the body, kept as a BLOB) as its first.
        assert d["actors"] == [
            {
                "type": "IAMUser",
                "user_name": "alice",
                "arn": "arn:aws:iam::1:user/alice",
                "principal_id": None,
                "source_ip": "192.0.2.9",
                "first_seen": "2025-01-01T00:00:00Z",
            }
        ]
        assert d["actor_count"] == 1
        assert store.summary()["total"] == 1 and store.summary()["by_severity"]["high"] == 1
        assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        store.close()
