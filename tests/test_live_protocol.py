"""The live protocol over a real uvicorn with real WebSocket and SSE clients: filters, resume
edges, bad client input, the `events` topic, one drift payload, every actor kept."""

from __future__ import annotations

import asyncio
import copy
import json
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from monitor.app.config import Config
from tests.support.live import Running, SSEReader, running
from tests.support.records import DEMO_STATE, resize, template

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path, **over: Any) -> Config:
    return Config(
        state=[str(ROOT / DEMO_STATE)],
        data_dir=str(tmp_path / "data"),
        state_poll_seconds=60,
        prune_interval_seconds=3600,
        **over,
    )


def _record(name: str, event_id: str, account: str | None = None) -> dict[str, Any]:
    rec = template(name)
    rec["eventID"] = event_id
    if account is not None:
        rec["recipientAccountId"] = account
    return rec


def _by(rec: dict[str, Any], user: str, ip: str) -> dict[str, Any]:
    """`rec` made by IAM user `user` (known by its ARN only) from `ip`."""
    out = copy.deepcopy(rec)
    out["userIdentity"] = {
        "type": "IAMUser",
        "arn": f"arn:aws:iam::123456789012:user/{user}",
        "accountId": "123456789012",
        "principalId": f"AIDA{user.upper()}",
    }
    out["sourceIPAddress"] = ip
    return out


async def _post(srv: Running, *recs: dict[str, Any]) -> dict[str, Any]:
    body = b"\n".join(orjson.dumps(r) for r in recs)
    resp = await srv.client.post(
        "/api/v1/ingest/cloudtrail", content=body, headers={"Content-Type": "application/x-ndjson"}
    )
    assert resp.status_code == 202, resp.text
    return resp.json()["data"]  # type: ignore[no-any-return]


async def _recv(ws: ClientConnection, type_: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            msg = orjson.loads(await ws.recv())
            if msg["type"] == type_:
                return msg  # type: ignore[no-any-return]


async def _ws(srv: Running, query: str = "") -> ClientConnection:
    ws = await connect(srv.ws + query, additional_headers=srv.auth)
    await _recv(ws, "welcome")
    return ws


async def _request(ws: ClientConnection, msg: Any, answer: str) -> dict[str, Any]:
    # json, not orjson: the tests send integers beyond 64 bits too.
    await ws.send(msg if isinstance(msg, str) else json.dumps(msg))
    return await _recv(ws, answer)


async def _sse_take(
    srv: Running, params: dict[str, str], headers: dict[str, str], n: int, kind: str = "drift"
) -> list[tuple[int | None, str, Any]]:
    """The events of a fresh SSE connection up to the `n`th of type `kind`."""
    got = []
    async with (
        asyncio.timeout(10),
        srv.client.stream("GET", "/api/v1/stream", params=params, headers=headers) as resp,
    ):
        assert resp.status_code == 200, await resp.aread()
        reader = SSEReader(resp)
        while n:
            item = await reader.next()
            got.append(item)
            n -= item[1] == kind
    return got


async def test_filters_on_ws_and_sse_live_and_on_resume(tmp_path: Path) -> None:
    async with running(_config(tmp_path)) as srv:
        ws = await _ws(srv)
        sub = {
            "type": "subscribe",
            "topic": "drifts",
            "filter": {"severity": ["critical", "high"], "account_id": "123456789012"},
        }
        ack = await _request(ws, sub, "subscribed")
        assert ack["payload"]["filter"] == {
            "severity": ["critical", "high"],
            "account_id": ["123456789012"],
        }
        start = srv.daemon.hub.seq
        params = {"topics": "drifts", "severity": "critical", "resource_type": "aws_iam_role"}
        async with srv.client.stream("GET", "/api/v1/stream", params=params) as resp:
            reader = SSEReader(resp)
            _, event, hello = await reader.next()
            assert event == "connected"
            assert hello["filter"] == {"severity": ["critical"], "resource_type": ["aws_iam_role"]}
            await _post(
                srv,
                resize("f-1", "t3.large"),  # medium
                _record("CreateUser", "f-2"),  # high
                _record("AuthorizeSecurityGroupIngress", "f-3", account="999999999999"),
                _record("UpdateAssumeRolePolicy", "f-4"),  # critical, iam role
            )
            _, event, data = await reader.until("drift")
            assert data["event_id"] == "f-4"
        got = [(await _recv(ws, "drift"))["payload"]["event_id"] for _ in range(2)]
        assert got == ["f-2", "f-4"]
        # Resuming with a filter replays only what matches, from memory or from the store.
        for where in ("memory", "store"):
            if where == "store":
                srv.daemon.hub.buffer.clear()
            params = {"topics": "drifts", "severity": "critical", "account_id": "123456789012"}
            items = await _sse_take(srv, params, {"Last-Event-ID": str(start)}, 1)
            assert [i[2]["event_id"] for i in items if i[1] == "drift"] == ["f-4"], where
            ws2 = await _ws(srv)
            resume = {"type": "subscribe", "topic": "drifts", "since": start}
            await ws2.send(orjson.dumps({**resume, "filter": {"severity": "high"}}).decode())
            assert (await _recv(ws2, "drift"))["payload"]["event_id"] == "f-2", where
            await ws2.close()
        # Bad filters: an error naming the field (the connection stays), a 400 on SSE.
        bad = await _request(
            ws, {"type": "subscribe", "topic": "drifts", "filter": {"sevrity": "high"}}, "error"
        )
        assert bad["payload"]["field"] == "filter.sevrity"
        bad = await _request(
            ws, {"type": "subscribe", "topic": "drifts", "filter": {"severity": "urgent"}}, "error"
        )
        assert bad["payload"]["field"] == "filter.severity"
        for q in ({"severity": "urgent"}, {"colour": "red"}):
            resp = await srv.client.get("/api/v1/stream", params=q)
            assert resp.status_code == 400 and resp.json()["error"]["code"] == "VALIDATION_ERROR"
        assert (await _request(ws, {"type": "ping"}, "pong"))["type"] == "pong"
        await ws.close()


async def test_resume_edges_on_sse_and_ws(tmp_path: Path) -> None:
    async with running(_config(tmp_path, max_messages=3)) as srv:
        for n in range(6):
            await _post(srv, resize(f"r-{n}", f"t3.size{n}"))
        head = srv.daemon.hub.seq
        await srv.daemon.prune()  # keeps the newest 3 messages
        oldest = srv.daemon.store.first_seq()
        assert oldest is not None and oldest > 2
        kept = [r[0] for r in srv.daemon.store.messages_since(0, ["drifts"], 100)]
        assert kept and kept[0] >= oldest
        srv.daemon.hub.buffer.clear()
        # Beyond the head: `reset`, then live from the head (the connected id is the head).
        items = await _sse_take(srv, {}, {"Last-Event-ID": "999999999999999999"}, 1, "reset")
        assert [(i[0], i[1]) for i in items] == [(head, "connected"), (head, "reset")]
        assert items[1][2]["requested"] == 999999999999999999 and items[1][2]["seq"] == head
        # Below the oldest kept: `gap` naming the first available, then all that is kept.
        params = {"topics": "drifts"}
        items = await _sse_take(srv, params, {"Last-Event-ID": "1"}, len(kept))
        assert items[1][1] == "gap" and items[1][2]["first_available"] == oldest
        assert [i[0] for i in items if i[1] == "drift"] == kept
        # Bad values: 400 on SSE, an error naming `since` on WS.
        for bad in ("-1", "abc", str(2**64), "9" * 4300, "1.5"):
            resp = await srv.client.get("/api/v1/stream", headers={"Last-Event-ID": bad})
            assert resp.status_code == 400, bad
            assert "Last-Event-ID" in resp.json()["error"]["message"]
        ws = await _ws(srv)
        for bad in (-1, "7", 2**64, 1.5, True, [], {}):
            answer = await _request(
                ws, {"type": "subscribe", "topic": "drifts", "since": bad}, "error"
            )
            assert answer["payload"]["field"] == "since", bad
        reset = await _request(
            ws, {"type": "subscribe", "topic": "drifts", "since": 2**63 - 1}, "reset"
        )
        assert reset["payload"]["seq"] == head
        gap = await _request(ws, {"type": "subscribe", "topic": "drifts", "since": 0}, "gap")
        assert gap["payload"]["first_available"] == oldest
        replayed = [(await _recv(ws, "drift"))["seq"] for _ in kept]
        assert replayed == kept
        # And live from there.
        await _post(srv, resize("r-live", "t3.live"))
        assert (await _recv(ws, "drift"))["payload"]["event_id"] == "r-live"
        await ws.close()


def _junk(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value, biased towards the shapes and names the protocol uses."""
    pick = rng.randrange(10 if depth < 3 else 6)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False, 0, -1, 2**64, 1.5, -(2**70)])
    if pick in (2, 3):
        return rng.choice(["drifts", "all", "subscribe", "query", "stats", "", "x" * 300, "é"])
    if pick == 4:
        return rng.randrange(-5, 10**6)
    if pick == 5:
        return rng.choice(["critical", "events", "state", "graph", "ping", "unsubscribe"])
    if pick in (6, 7):
        return [_junk(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = [
        "type",
        "topic",
        "payload",
        "since",
        "filter",
        "severity",
        "resource",
        "page",
        "limit",
        "provider",
        "resource_id",
        "kind",
        "account_id",
        "zzz",
    ]
    return {rng.choice(keys): _junk(rng, depth + 1) for _ in range(rng.randrange(5))}


def _client_message(rng: random.Random) -> Any:
    msg = {
        "type": rng.choice(["subscribe", "unsubscribe", "query", "ping", "nope", 7, None, []]),
        "topic": _junk(rng),
    }
    for extra in ("payload", "since", "filter"):
        if rng.random() < 0.5:
            msg[extra] = _junk(rng)
    return msg


async def test_no_client_message_drops_the_connection(tmp_path: Path) -> None:
    known = [
        '{"type":"subscribe","topic":[]}',
        '{"type":"subscribe","topic":{}}',
        '{"type":"unsubscribe","topic":["drifts"]}',
        '{"type":"unsubscribe","topic":{"a":1}}',
        '{"type":"query","payload":{"resource_id":{"a":1}}}',
        '{"type":"query","payload":{"provider":[1]}}',
        '{"type":"query","topic":"drifts","payload":{"page":"2"}}',
        "[1,2]",
        "not json",
        '"text"',
    ]
    rng = random.Random(14)
    fuzz = [json.dumps(_client_message(rng)) for _ in range(250)]
    async with running(_config(tmp_path)) as srv:
        ws = await _ws(srv)
        for n, raw in enumerate(known + fuzz):
            await ws.send(raw)
            # Every message gets an answer and the connection is still there to say so.
            await ws.send(orjson.dumps({"type": "ping", "payload": {"n": n}}).decode())
            async with asyncio.timeout(10):
                while True:
                    msg = orjson.loads(await ws.recv())
                    if msg["type"] == "pong" and msg["payload"] == {"n": n}:
                        break
                    if msg["type"] == "error":
                        assert msg["payload"]["code"] != "INTERNAL_ERROR", raw
        for raw in known[:6]:
            err = await _request(ws, raw, "error")
            assert err["payload"]["field"] in ("topic", "payload.resource_id", "payload.provider")
        await ws.close()


async def test_events_topic_carries_every_change_and_query_answers_stats_and_state(
    tmp_path: Path,
) -> None:
    async with running(_config(tmp_path)) as srv:
        ws = await _ws(srv, "?topics=events")
        first = _record("DeleteBucket", "ev-1")  # a change that makes no drift
        await _post(srv, first, resize("ev-2", "t3.huge"))
        one, two = [(await _recv(ws, "event"))["payload"] for _ in range(2)]
        assert (one["id"], one["severity"], one["event_name"]) == ("ev-1", "info", "DeleteBucket")
        assert (two["id"], two["severity"]) == ("ev-2", "medium")
        stored = (await srv.client.get("/api/v1/events/ev-2")).json()["data"]
        assert {k: v for k, v in stored.items() if k in two} == two  # the normalised fields
        # Redelivery publishes nothing; a Falco alert still arrives as `falco`.
        await _post(srv, first)
        alert = {
            "time": "2026-01-01T00:00:00Z",
            "rule": "Terminal shell in container",
            "priority": "Warning",
            "output": "shell",
            "source": "syscall",
            "hostname": "h1",
            "output_fields": {"container.id": "c1"},
        }
        resp = await srv.client.post("/api/v1/falco/events", content=orjson.dumps(alert))
        assert resp.status_code == 202
        assert (await _recv(ws, "falco"))["payload"]["rule"] == "Terminal shell in container"
        # Query answers stats and state with their own data (not the drift list).
        stats = await _request(ws, {"type": "query", "topic": "stats"}, "query_result")
        assert stats["payload"]["stats"]["drifts_total"] == 1
        assert stats["payload"]["stats"]["events_by_kind"] == {"cloudtrail": 2, "falco": 1}
        state = await _request(
            ws, {"type": "query", "payload": {"resource": "state"}}, "query_result"
        )
        assert state["payload"]["state"]["resource_count"] == len(srv.daemon.detector.index)
        err = await _request(ws, {"type": "query", "topic": "all"}, "error")
        assert err["payload"]["field"] == "topic"
        await ws.close()


async def test_one_drift_payload_on_rest_ws_and_sse(tmp_path: Path) -> None:
    async with running(_config(tmp_path)) as srv:
        ws = await _ws(srv, "?topics=drifts")
        async with srv.client.stream("GET", "/api/v1/stream", params={"topics": "drifts"}) as resp:
            reader = SSEReader(resp)
            await reader.until("connected")
            [drift_id] = (await _post(srv, _record("UpdateAssumeRolePolicy", "p-1")))["drift_ids"]
            _, _, sse = await reader.until("drift")
        wsd = (await _recv(ws, "drift"))["payload"]
        [listed] = (await srv.client.get("/api/v1/drifts")).json()["data"]["drifts"]
        detail = (await srv.client.get(f"/api/v1/drifts/{drift_id}")).json()["data"]
        for name in ("timestamp", "resource_name", "user_identity", "actors", "actor_count"):
            assert name in listed, name
        assert sse == listed and wsd == listed
        assert {k: detail[k] for k in listed} == listed
        await ws.close()


async def test_every_actor_is_kept(tmp_path: Path) -> None:
    async with running(_config(tmp_path)) as srv:
        ws = await _ws(srv, "?topics=drifts")
        base = resize("a-1", "t3.xlarge")
        [drift_id] = (await _post(srv, _by(base, "alice", "192.0.2.1")))["drift_ids"]
        await _recv(ws, "drift")
        bob = _by(base, "bob", "198.51.100.7")
        bob["eventID"], bob["eventTime"] = "a-2", "2026-01-01T00:05:00Z"
        assert (await _post(srv, bob))["repeats"] == 1
        update = (await _recv(ws, "drift_update"))["payload"]
        assert update["id"] == drift_id and update["update"]["reason"] == "occurrence"
        assert update["update"]["new_actor"]["user_name"] == "bob"  # from the ARN alone
        assert update["update"]["new_actor"]["source_ip"] == "198.51.100.7"
        again = dict(bob, eventID="a-3")
        assert (await _post(srv, again))["repeats"] == 1
        assert "new_actor" not in (await _recv(ws, "drift_update"))["payload"]["update"]
        detail = (await srv.client.get(f"/api/v1/drifts/{drift_id}")).json()["data"]
        assert [a["user_name"] for a in detail["actors"]] == ["alice", "bob"]
        assert detail["actor_count"] == 2 and detail["occurrences"] == 3
        # The actor filter sees every actor of a drift, not only the first: bob's first
        # appearance is the update that named him.
        items = await _sse_take(
            srv, {"topics": "drifts", "actor": "bob"}, {"Last-Event-ID": "0"}, 1, "drift_update"
        )
        assert [i[1] for i in items] == ["connected", "drift_update"]
        assert items[1][2]["update"]["new_actor"]["user_name"] == "bob"
        await ws.close()
