"""The API: REST handlers in memory (ASGI), live paths over a real uvicorn (WebSocket, SSE)."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

from monitor.app.config import Config
from rules import load_catalogue
from tests.support.asgi import in_memory
from tests.support.live import SSEReader, running, wait_until
from tests.support.realdata import FALCO, cloudtrail_records
from tests.support.replay_state import replay_state
from web.envelope import MAX_PAGE
from web.openapi import SPEC

pytestmark = pytest.mark.timeout(60)


def _attack() -> dict[str, Any]:
    """The real trust-policy backdoor from the invictus logs."""
    records = sorted(cloudtrail_records("invictus_aws_dataset"), key=lambda r: r["eventTime"])
    return next(
        r
        for r in records
        if r["eventName"] == "UpdateAssumeRolePolicy" and "Terraform" not in str(r.get("userAgent"))
    )


@pytest.fixture(scope="module")
def state_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("state") / "replayed.tfstate"
    path.write_text(
        json.dumps(replay_state(cloudtrail_records("invictus_aws_dataset"), load_catalogue()))
    )
    return path


def _config(tmp_path: Path, state: Path, **over: Any) -> Config:
    return Config(
        state=[str(state)], data_dir=str(tmp_path / "data"), state_poll_seconds=60, **over
    )


async def _ws_recv(ws: Any, type_: str) -> dict[str, Any]:
    async with asyncio.timeout(10):  # for the one wanted, however many others come first
        while True:
            msg = orjson.loads(await ws.recv())
            if msg["type"] == type_:
                return msg  # type: ignore[no-any-return]


@pytest.mark.integration
async def test_a_real_record_posted_arrives_on_sse_and_ws(tmp_path: Path, state_path: Path):
    async with (
        running(_config(tmp_path, state_path)) as srv,
        srv.client.stream("GET", "/api/v1/stream?topics=drifts") as sse,
        connect(srv.ws, additional_headers=srv.auth) as ws,
    ):
        reader = SSEReader(sse)
        _, event, hello = await asyncio.wait_for(reader.next(), 10)
        assert event == "connected" and hello["stream_id"]
        welcome = orjson.loads(await ws.recv())
        assert welcome["type"] == "welcome" and welcome["payload"]["client_id"]
        await ws.send(json.dumps({"type": "subscribe", "topic": "drifts"}))
        await _ws_recv(ws, "subscribed")

        resp = await srv.client.post("/api/v1/ingest/cloudtrail", content=orjson.dumps(_attack()))
        assert resp.status_code == 202
        body = resp.json()
        assert body["success"] and body["data"]["accepted"] == 1 and body["data"]["drifts"] == 1

        sse_id, event, drift = await asyncio.wait_for(reader.until("drift"), 10)
        msg = await _ws_recv(ws, "drift")
        assert drift["field"] == "assume_role_policy" and drift["severity"] == "critical"
        assert msg["topic"] == "drifts" and msg["payload"]["id"] == drift["id"]
        assert msg["seq"] == sse_id and msg["timestamp"]

        # The same record again (at-least-once delivery upstream): nothing new.
        again = await srv.client.post("/api/v1/ingest/cloudtrail", content=orjson.dumps(_attack()))
        assert again.json()["data"]["drifts"] == 0
        listed = (await srv.client.get("/api/v1/drifts")).json()["data"]
        assert listed["total"] == 1
        one = (await srv.client.get(f"/api/v1/drifts/{drift['id']}")).json()["data"]
        assert one["related_events"][0]["id"] == _attack()["eventID"]
        assert one["user_identity"]["user_name"] == "bert-jan"


@pytest.mark.integration
async def test_falco_http_output_ndjson_and_sidekick(tmp_path: Path, state_path: Path):
    lines = [
        line
        for line in (FALCO / "falcosecurity-plugins_readme_alerts.jsonl").read_bytes().splitlines()
        if line.strip()
    ]
    alerts = [orjson.loads(line)["alert"] for line in lines]
    async with (
        running(_config(tmp_path, state_path)) as srv,
        srv.client.stream("GET", "/api/v1/stream?topics=events") as sse,
    ):
        reader = SSEReader(sse)
        await reader.until("connected")
        one = await srv.client.post("/api/v1/falco/events", content=orjson.dumps(alerts[0]))
        assert one.status_code == 202 and one.json()["data"]["falco_alerts"] == 1
        _, _, payload = await asyncio.wait_for(reader.until("falco"), 10)
        assert payload["rule"] == alerts[0]["rule"]
        batch = b"\n".join(orjson.dumps(a) for a in alerts[1:]) + b"\n"
        many = await srv.client.post(
            "/api/v1/falco/events", content=batch, headers={"content-type": "application/x-ndjson"}
        )
        assert many.json()["data"]["accepted"] == len(alerts) - 1
        sidekick = {
            **alerts[0],
            "uuid": "5bd3f0b3-2b7a-4a31-9b8b-77d31d4c8a7e",
            "output_fields": {**alerts[0]["output_fields"], "evt.time": 1},
        }
        r = await srv.client.post("/api/v1/falco/events", content=orjson.dumps(sidekick))
        assert r.json()["data"]["falco_alerts"] == 1
        events = (await srv.client.get("/api/v1/events?type=falco&limit=100")).json()["data"]
        assert events["total"] == len(alerts) + 1
        got = (await srv.client.get(f"/api/v1/events/{sidekick['uuid']}")).json()["data"]
        assert got["rule"] == alerts[0]["rule"] and got["type"] == "falco"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"", 400, "VALIDATION_ERROR"),
        (b"   \n", 400, "VALIDATION_ERROR"),
        (b"{not json", 400, "VALIDATION_ERROR"),
        (b"[]", 400, "VALIDATION_ERROR"),
    ],
)
async def test_bad_ingest_bodies(
    tmp_path: Path, state_path: Path, body: bytes, status: int, code: str
) -> None:
    async with in_memory(_config(tmp_path, state_path)) as srv:
        resp = await srv.client.post("/api/v1/ingest/cloudtrail", content=body)
        assert resp.status_code == status
        assert resp.json() == {
            "success": False,
            "error": {"code": code, "message": resp.json()["error"]["message"]},
        }


async def test_good_records_survive_bad_neighbours_and_size_limit(
    tmp_path: Path, state_path: Path
) -> None:
    records = cloudtrail_records("stratus_detonation_logs")[:3]
    body = b"\n".join(
        [
            orjson.dumps(records[0]),
            b"{broken",
            orjson.dumps({"foo": 1}),
            orjson.dumps(records[1]),
            orjson.dumps(records[2]),
        ]
    )
    async with in_memory(_config(tmp_path, state_path, max_body_bytes=4096)) as srv:
        small = b"\n".join(orjson.dumps(r) for r in records[:1])
        assert len(small) < 4096
        resp = await srv.client.post(
            "/api/v1/ingest/cloudtrail", content=body[:4000] if len(body) > 4096 else body
        )
        if len(body) <= 4096:
            data = resp.json()["data"]
            assert resp.status_code == 202 and data["accepted"] == 3 and data["rejected"] == 2
        big = await srv.client.post("/api/v1/ingest/cloudtrail", content=b"x" * 5000)
        assert big.status_code == 413
        assert big.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"

        async def chunks():  # no Content-Length: the limit applies while reading
            for _ in range(10):
                yield b"y" * 1000

        streamed = await srv.client.post("/api/v1/ingest/cloudtrail", content=chunks())
        assert streamed.status_code == 413

    async with in_memory(_config(tmp_path, state_path)) as srv:
        resp = await srv.client.post("/api/v1/ingest/cloudtrail", content=body)
        data = resp.json()["data"]
        assert resp.status_code == 202 and data["accepted"] == 3 and data["rejected"] == 2
        assert data["reasons"] == {"bad JSON": 1, "unknown record shape": 1}


@pytest.mark.parametrize(
    ("query", "ok"),
    [
        ("", True),
        ("?page=1&limit=1000", True),
        ("?page=99&limit=5", True),
        ("?page=0", False),
        ("?limit=0", False),
        ("?limit=1001", False),
        ("?page=abc", False),
        ("?severity=urgent", False),
        ("?kind=modified", True),
        ("?since=yesterday", False),
        ("?since=2023-07-10T00:00:00Z&until=2030-01-01T00:00:00Z", True),
    ],
)
async def test_pagination_and_filter_validation(
    tmp_path: Path, state_path: Path, query: str, ok: bool
) -> None:
    async with in_memory(_config(tmp_path, state_path)) as srv:
        await srv.client.post("/api/v1/ingest/cloudtrail", content=orjson.dumps(_attack()))
        for path in ("/api/v1/drifts", "/api/v1/events", "/api/v1/state/resources"):
            if "kind" in query and path != "/api/v1/drifts":
                continue
            if ("severity" in query or "since" in query) and path.endswith("resources"):
                continue
            resp = await srv.client.get(path + query)
            body = resp.json()
            if ok:
                assert resp.status_code == 200 and body["success"], (path, body)
                data = body["data"]
                assert {"page", "limit", "total"} <= set(data)
            else:
                assert resp.status_code == 400, (path, query)
                assert body["error"]["code"] == "VALIDATION_ERROR"
        if query == "?page=99&limit=5":
            data = (await srv.client.get("/api/v1/drifts" + query)).json()["data"]
            assert data["drifts"] == [] and data["total"] == 1


async def test_a_page_number_past_any_store_is_a_400_on_every_list(
    tmp_path: Path, state_path: Path
) -> None:
    lists = (
        "/api/v1/drifts",
        "/api/v1/events",
        "/api/v1/state/resources",
        "/api/v1/dead-letters",
        "/api/v1/graph/nodes",
        "/api/v1/graph/edges",
    )
    async with in_memory(_config(tmp_path, state_path)) as srv:
        for path in lists:
            last = await srv.client.get(f"{path}?page={MAX_PAGE}&limit=1000")
            assert last.status_code == 200, (path, last.text)
            for page in (MAX_PAGE + 1, 2**63, 10**30):
                resp = await srv.client.get(f"{path}?page={page}&limit=1000")
                assert resp.status_code == 400, (path, page, resp.text)
                error = resp.json()["error"]
                assert error["code"] == "VALIDATION_ERROR"
                assert error["message"] == f"page must be between 1 and {MAX_PAGE}, got {page}"


@pytest.mark.integration
async def test_malformed_ws_frames_get_errors_and_the_connection_stays(
    tmp_path: Path, state_path: Path
):
    async with (
        running(_config(tmp_path, state_path, max_ws_message_bytes=1024)) as srv,
        connect(srv.ws, additional_headers=srv.auth) as ws,
    ):
        await _ws_recv(ws, "welcome")
        for frame, code in [
            ("not json", "VALIDATION_ERROR"),
            ("[1,2]", "VALIDATION_ERROR"),
            (json.dumps({"type": "dance"}), "VALIDATION_ERROR"),
            (json.dumps({"type": "subscribe", "topic": "gossip"}), "VALIDATION_ERROR"),
            (
                json.dumps({"type": "subscribe", "topic": "drifts", "since": "yesterday"}),
                "VALIDATION_ERROR",
            ),
            (json.dumps({"type": "query", "payload": {"limit": 5000}}), "VALIDATION_ERROR"),
            ("x" * 2000, "MESSAGE_TOO_LARGE"),
            (b"\xff\xfe", "VALIDATION_ERROR"),
        ]:
            await ws.send(frame)
            err = await _ws_recv(ws, "error")
            assert err["payload"]["code"] == code, frame
        await ws.send(json.dumps({"type": "ping", "payload": {"n": 1}}))
        pong = await _ws_recv(ws, "pong")
        assert pong["payload"] == {"n": 1}
        await srv.client.post("/api/v1/ingest/cloudtrail", content=orjson.dumps(_attack()))
        await ws.send(
            json.dumps(
                {
                    "type": "query",
                    "topic": "drifts",
                    "payload": {"severity": "critical", "limit": 10},
                }
            )
        )
        result = await _ws_recv(ws, "query_result")
        assert result["payload"]["total"] == 1 and len(result["payload"]["drifts"]) == 1


@pytest.mark.integration
async def test_a_stalled_client_does_not_delay_the_others(tmp_path: Path, state_path: Path):
    async with running(_config(tmp_path, state_path, subscriber_queue=20)) as srv:
        # A client that connects and never reads: its socket buffers fill, then its queue.
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.setblocking(False)
        await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", srv.port))
        _, writer = await asyncio.open_connection(sock=raw)
        writer.write(
            b"GET /api/v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + srv.key.encode() + b"\r\n\r\n"
        )
        await writer.drain()
        async with srv.client.stream("GET", "/api/v1/stream?topics=events") as sse:
            live = SSEReader(sse)
            await live.until("connected")
            await wait_until(
                lambda: len(srv.daemon.hub.subscribers) >= 2, "both SSE clients to subscribe"
            )
            big = {
                "rule": "bulk",
                "priority": "Warning",
                "time": "2026-01-01T00:00:00Z",
                "source": "syscall",
                "output": "z" * 65536,
                "output_fields": {},
            }
            for n in range(200):
                alert = {**big, "uuid": f"bulk-{n}"}
                await srv.client.post("/api/v1/falco/events", content=orjson.dumps(alert))
                _, _, got = await asyncio.wait_for(live.until("falco"), 10)
                assert got["id"] == f"bulk-{n}"
            assert srv.daemon.hub.lagged_total >= 1
            assert len(srv.daemon.hub.subscribers) == 1
        writer.close()


@pytest.mark.integration
async def test_sse_resume_with_last_event_id(tmp_path: Path, state_path: Path) -> None:
    async with running(_config(tmp_path, state_path)) as srv:
        async with srv.client.stream("GET", "/api/v1/stream?topics=events") as sse:
            reader = SSEReader(sse)
            await reader.until("connected")
            await srv.client.post(
                "/api/v1/falco/events",
                content=orjson.dumps(
                    {
                        "rule": "r",
                        "priority": "Notice",
                        "time": "2026-01-01T00:00:00Z",
                        "output": "first",
                        "uuid": "a-1",
                    }
                ),
            )
            first_id, _, _ = await reader.until("falco")
        for n in (2, 3, 4):
            await srv.client.post(
                "/api/v1/falco/events",
                content=orjson.dumps(
                    {
                        "rule": "r",
                        "priority": "Notice",
                        "time": "2026-01-01T00:00:00Z",
                        "output": "missed",
                        "uuid": f"a-{n}",
                    }
                ),
            )
        headers = {"Last-Event-ID": str(first_id)}
        async with srv.client.stream("GET", "/api/v1/stream?topics=events", headers=headers) as sse:
            reader = SSEReader(sse)
            cid, _, hello = await reader.until("connected")
            assert cid == first_id and hello["resumed_from"] == first_id
            got = [(await reader.until("falco"))[2]["id"] for _ in range(3)]
            assert got == ["a-2", "a-3", "a-4"]


async def test_rest_endpoints_and_envelopes(tmp_path: Path, state_path: Path) -> None:
    async with in_memory(_config(tmp_path, state_path)) as srv:
        health = (await srv.client.get("/api/v1/health")).json()["data"]
        assert health["status"] == "ok"
        assert set(health["components"]) >= {"state", "store", "hub", "sources"}
        # The public /health tells a load balancer the status and nothing else.
        public = await srv.client.get("/health", headers={"Authorization": ""})
        assert public.json()["data"] == {"status": "ok"}
        meta = (await srv.client.get("/api/v1/state")).json()["data"]
        assert meta["version"] == 4 and meta["resource_count"] == 112
        res = (await srv.client.get("/api/v1/state/resources?limit=500")).json()["data"]
        assert res["total"] == 112 and len(res["resources"]) == 112
        address = res["resources"][0]["address"]
        one = await srv.client.get("/api/v1/state/resources/" + address)
        assert one.json()["data"]["address"] == address
        missing = await srv.client.get("/api/v1/state/resources/aws_vpc.nope")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
        assert (await srv.client.get("/api/v1/drifts/nope")).status_code == 404
        assert (await srv.client.get("/api/v1/events/nope")).status_code == 404
        unknown = await srv.client.get("/api/v1/nothing-here")
        assert unknown.status_code == 404 and unknown.json()["success"] is False
        wrong = await srv.client.put("/api/v1/ingest/cloudtrail")
        assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
        await srv.client.post("/api/v1/ingest/cloudtrail", content=orjson.dumps(_attack()))
        stats = (await srv.client.get("/api/v1/stats")).json()["data"]
        assert stats["drifts"]["total"] == 1 and stats["drifts"]["severity_counts"]["critical"] == 1
        assert stats["severity_breakdown"]["critical"] == 100.0
        assert stats["top_resource_types"] == [{"type": "aws_iam_role", "count": 1}]
        assert {"graph", "events"} <= set(stats)
        cors = await srv.client.get("/api/v1/stats", headers={"Origin": "http://localhost:5173"})
        assert cors.headers["access-control-allow-origin"] == "http://localhost:5173"
        evil = await srv.client.get("/api/v1/stats", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in evil.headers
        spec = (await srv.client.get("/openapi.json")).json()
        assert "/api/v1/drifts" in spec["paths"]


def test_openapi_describes_every_route() -> None:
    from web.app import routes

    paths = {r.path.replace(":path}", "}") for r in routes()}
    assert paths <= set(SPEC["paths"])


@pytest.mark.integration
async def test_state_reload_publishes_state_change_and_keeps_last_good(
    tmp_path: Path, state_path: Path
):
    path = tmp_path / "live.tfstate"
    doc = json.loads(state_path.read_text())
    path.write_text(json.dumps(doc))
    async with (
        running(_config(tmp_path, path)) as srv,
        connect(srv.ws + "?topics=state", additional_headers=srv.auth) as ws,
    ):
        await _ws_recv(ws, "welcome")
        doc["serial"] += 1
        doc["resources"] = doc["resources"][:10]
        path.write_text(json.dumps(doc))
        assert await srv.daemon.reload_state()
        change = await _ws_recv(ws, "state_change")
        assert change["topic"] == "state" and change["payload"]["resource_count"] == 10
        path.write_text('{"version": 4, "terraform_version": "1.5.0", "resour')
        assert not await srv.daemon.reload_state()
        health = (await srv.client.get("/api/v1/health")).json()["data"]
        assert health["status"] == "degraded"
        assert "not valid JSON" in health["components"]["state"]["error"]
        meta = (await srv.client.get("/api/v1/state")).json()["data"]
        assert meta["resource_count"] == 10


@pytest.mark.integration
async def test_stats_topic_gets_periodic_totals(tmp_path: Path, state_path: Path) -> None:
    config = _config(tmp_path, state_path, stats_interval_seconds=0.05)
    async with (
        running(config) as srv,
        connect(srv.ws + "?topics=stats", additional_headers=srv.auth) as ws,
    ):
        await _ws_recv(ws, "welcome")
        first = await _ws_recv(ws, "stats")
        assert first["topic"] == "stats" and first["payload"]["total"] == 0
        await srv.client.post("/api/v1/ingest/cloudtrail", content=orjson.dumps(_attack()))
        while (msg := await _ws_recv(ws, "stats"))["payload"]["total"] != 1:
            pass
        assert msg["payload"]["by_severity"]["critical"] == 1
