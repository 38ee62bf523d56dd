"""`driftline serve` as a process: JSON log lines (uvicorn's too), an access log with no
key in it, and the loopback metrics port."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support.serve_process import serve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_json_logs_access_lines_and_the_metrics_port(tmp_path: Path):
    metrics_port = _free_port()
    extra = ("--log-format", "json", "--access-log", "--metrics-port", str(metrics_port))
    async with serve(tmp_path / "data", *extra) as (proc, base, key):
        assert key is not None
        auth = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(timeout=10) as client:
            scraped = await client.get(f"http://127.0.0.1:{metrics_port}/metrics")
            only = await client.get(f"http://127.0.0.1:{metrics_port}/api/v1/drifts", headers=auth)
            keyless = await client.get(f"{base}/metrics")
            viewer = await client.get(f"{base}/metrics", headers=auth)
            drifts = await client.get(f"{base}/api/v1/drifts?ticket={key}", headers=auth)
        proc.terminate()
        assert proc.stderr is not None
        rest = await asyncio.to_thread(proc.stderr.read)
    assert scraped.status_code == 200 and "driftline_records_received_total" in scraped.text
    assert only.status_code == 404
    assert keyless.status_code == 401 and viewer.status_code == 200
    lines = [line for line in rest.decode().splitlines() if line.startswith("{")]
    parsed = [orjson.loads(line) for line in lines]
    assert all({"time", "level", "logger", "message"} <= set(p) for p in parsed)
    access = [p for p in parsed if p["logger"] == "uvicorn.access"]
    assert {p["path"].split("?")[0] for p in access} >= {"/metrics", "/api/v1/drifts"}
    assert any(p["logger"] == "uvicorn.error" for p in parsed)  # uvicorn's own lines too
    request_id = drifts.headers["x-request-id"]
    assert any(p.get("request_id") == request_id for p in access)
    assert key not in rest.decode()
