"""Ingest bodies as a hostile or unlucky client sends them: the answer says what happened,
bad records cost only themselves and are dead-lettered, limits hold (issue 13, part A)."""

from __future__ import annotations

import asyncio
import gzip
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.app.config import Config
from monitor.app.web_api import web_app
from tests.support.asgi import in_memory
from tests.support.records import DEMO_STATE, resize
from web.ingest import OFFLOAD_BYTES

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]
ENDPOINTS = (
    "/api/v1/falco/events",
    "/api/v1/ingest/cloudtrail",
    "/api/v1/ingest/k8s-audit",
    "/api/v1/ingest/gcp-audit",
    "/api/v1/ingest/azure-activity",
)
CLOUDTRAIL = "/api/v1/ingest/cloudtrail"


def _config(tmp_path: Path, **over: Any) -> Config:
    return Config(
        state=[str(ROOT / DEMO_STATE)],
        data_dir=str(tmp_path / "data"),
        state_poll_seconds=60,
        **over,
    )


def _ndjson(*records: Any) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in records)


def _poisoned(n: int, where: tuple[str, ...], value: Any) -> dict[str, Any]:
    rec = resize(f"poison-{n}", f"m5.p{n}xlarge")
    node = rec
    for step in where[:-1]:
        node = node[step]
    node[where[-1]] = value
    return rec


async def test_wrongly_typed_fields_cost_nothing_and_neighbours_are_stored(
    tmp_path: Path,
) -> None:
    body = _ndjson(
        resize("good-1", "m5.axlarge"),
        _poisoned(1, ("userAgent",), 7),
        _poisoned(2, ("userAgent",), True),
        _poisoned(3, ("userIdentity", "type"), ["IAMUser"]),
        _poisoned(4, ("userIdentity", "arn"), {"a": 1}),
        resize("good-2", "m5.bxlarge"),
    )
    async with in_memory(_config(tmp_path)) as srv:
        resp = await srv.client.post(CLOUDTRAIL, content=body)
        assert resp.status_code == 202, resp.text
        assert resp.json()["data"]["accepted"] == 6
        for event_id in ("good-1", "good-2", "poison-1", "poison-3", "poison-4"):
            got = await srv.client.get(f"/api/v1/events/{event_id}")
            assert got.status_code == 200, event_id
        actor = (await srv.client.get("/api/v1/events/poison-1")).json()["data"]
        assert actor["user_agent"] == "7"


async def test_gzip_bodies_and_other_encodings(tmp_path: Path) -> None:
    record = orjson.dumps(resize("gz-1", "m5.gzxlarge"))
    async with in_memory(_config(tmp_path, max_decompressed_bytes=64 * 1024)) as srv:
        gz = {"content-encoding": "gzip"}
        resp = await srv.client.post(CLOUDTRAIL, content=gzip.compress(record), headers=gz)
        assert resp.status_code == 202 and resp.json()["data"]["accepted"] == 1
        bomb = gzip.compress(b" " * (1 << 20) + record)
        resp = await srv.client.post(CLOUDTRAIL, content=bomb, headers=gz)
        assert resp.status_code == 413, resp.text
        assert "after gunzip" in resp.json()["error"]["message"]
        resp = await srv.client.post(CLOUDTRAIL, content=record + b"x", headers=gz)
        assert resp.status_code == 400 and "gzip" in resp.json()["error"]["message"]
        resp = await srv.client.post(CLOUDTRAIL, content=record, headers={"content-encoding": "br"})
        assert resp.status_code == 415
        assert resp.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"


NOT_RECORDS = (b"1", b'"text"', b"null", b"true", b"[]", b"\x00\xff\xfe\n\x81junk\n")


async def test_bodies_that_are_not_records_are_400_on_every_endpoint(tmp_path: Path) -> None:
    async with in_memory(_config(tmp_path)) as srv:
        for path in ENDPOINTS:
            for body in NOT_RECORDS:
                resp = await srv.client.post(path, content=body)
                assert resp.status_code == 400, (path, body, resp.text)
                assert resp.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_a_thousand_deep_array_is_a_400_naming_the_nesting(tmp_path: Path) -> None:
    async with in_memory(_config(tmp_path)) as srv:
        for path in ENDPOINTS:
            resp = await srv.client.post(path, content=b"[" * 1000 + b"]" * 1000)
            assert resp.status_code == 400, (path, resp.text)
            assert "nests more than 64 levels" in resp.json()["error"]["message"]


async def test_nothing_accepted_is_422_and_rejects_are_dead_letters(tmp_path: Path) -> None:
    body = _ndjson({"foo": 1}, {"eventName": "X"}) + b"\n{broken"
    async with in_memory(_config(tmp_path)) as srv:
        resp = await srv.client.post(CLOUDTRAIL, content=body)
        assert resp.status_code == 422, resp.text
        doc = resp.json()
        assert doc["success"] is False and doc["error"]["code"] == "UNPROCESSABLE_ENTITY"
        assert doc["data"]["accepted"] == 0 and doc["data"]["rejected"] == 3
        assert [e["line"] for e in doc["data"]["errors"]] == [1, 2, 3]
        again = await srv.client.post(CLOUDTRAIL, content=body)  # a retry keeps them once
        assert again.status_code == 422
        letters = (await srv.client.get("/api/v1/dead-letters")).json()["data"]
        rows = letters["dead_letters"]
        assert len(rows) == 3
        assert {r["source"] for r in rows} == {"http:cloudtrail"}
        by_line = {r["partition"]: r for r in rows}
        assert by_line[1]["reason"].startswith("unknown record shape")
        assert by_line[3]["reason"].startswith("bad JSON")
        assert by_line[3]["value_preview"] == "{broken"
        assert by_line[2]["position"].endswith("line 2 record 1")
        partly = _ndjson(resize("ok-1", "m5.okxlarge"), {"foo": 1})
        resp = await srv.client.post(CLOUDTRAIL, content=partly)
        data = resp.json()["data"]
        assert resp.status_code == 202 and (data["accepted"], data["rejected"]) == (1, 1)
        assert data["errors"][0]["reason"] == "unknown record shape"


async def test_records_per_request_are_limited(tmp_path: Path) -> None:
    async with in_memory(_config(tmp_path, max_records_per_request=10)) as srv:
        lines = _ndjson(*({"n": n} for n in range(11)))
        resp = await srv.client.post(CLOUDTRAIL, content=lines)
        assert resp.status_code == 413 and "too many records" in resp.json()["error"]["message"]
        array = orjson.dumps({"Records": [{"n": n} for n in range(11)]})
        resp = await srv.client.post(CLOUDTRAIL, content=array)
        assert resp.status_code == 413
        blank = b"\n\n\n\n".join(orjson.dumps(resize(f"b{n}", f"m5.b{n}")) for n in range(3))
        resp = await srv.client.post(CLOUDTRAIL, content=blank)
        assert resp.status_code == 202  # blank lines are not records


async def test_falco_plain_text_output_says_how_to_configure_falco(tmp_path: Path) -> None:
    text = (
        b"17:20:42.123456789: Warning Sensitive file opened for reading by non-trusted "
        b"program (user=root command=cat /etc/shadow file=/etc/shadow)\n"
        b"17:20:43.000000000: Notice Unexpected connection to K8s API Server from container\n"
    )
    async with in_memory(_config(tmp_path)) as srv:
        resp = await srv.client.post("/api/v1/falco/events", content=text)
        assert resp.status_code == 400
        message = resp.json()["error"]["message"]
        assert "json_output: true" in message and "json_include_output_property" in message


async def test_a_body_that_never_completes_times_out(tmp_path: Path) -> None:
    never = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b'{"eventName": '
        await never.wait()  # the client stalls: the server must not wait for it forever
        yield b"}"

    async with in_memory(_config(tmp_path, body_read_seconds=0.2)) as srv:
        resp = await srv.client.post(CLOUDTRAIL, content=slow())
        assert resp.status_code == 408
        assert "body_read_seconds" in resp.json()["error"]["message"]


async def test_a_client_that_leaves_mid_body_is_a_debug_line_not_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with in_memory(_config(tmp_path)) as srv:
        app = web_app(srv.daemon)
        events: list[dict[str, Any]] = [
            {"type": "http.request", "body": b'{"eventName": "X"', "more_body": True},
            {"type": "http.disconnect"},
        ]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return events.pop(0) if events else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": CLOUDTRAIL,
            "raw_path": CLOUDTRAIL.encode(),
            "query_string": b"",
            "headers": [
                (b"content-type", b"application/json"),
                (b"host", b"localhost"),
                (b"authorization", b"Bearer " + srv.key.encode()),
            ],
            "http_version": "1.1",
            "scheme": "http",
            "server": ("test", 80),
            "client": ("127.0.0.1", 5000),
            "root_path": "",
            "app": app,
        }
        with caplog.at_level(logging.DEBUG, logger="driftline"):
            await app(scope, receive, send)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert any("disconnected" in r.getMessage() for r in caplog.records)


async def test_a_large_body_is_judged_off_the_loop_and_stored_in_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("web.ingest.SLICE", 100)
    records = [resize(f"big-{n}", f"m5.big{n}") for n in range(400)]
    body = _ndjson(*records, {"foo": 1})
    assert len(body) > OFFLOAD_BYTES  # over the size judged on the event loop
    async with in_memory(_config(tmp_path)) as srv:
        resp = await srv.client.post(CLOUDTRAIL, content=body)
        data = resp.json()["data"]
        assert resp.status_code == 202
        assert (data["accepted"], data["rejected"], data["changes"]) == (400, 1, 400)
        assert data["drifts"] + data["repeats"] == 400  # every slice's outcome is counted
        events = (await srv.client.get("/api/v1/events?limit=1")).json()["data"]
        assert events["total"] == 400
