"""Kill the server with SIGKILL while ingests stream in; every acknowledged event's drift must
be there, exactly once, after a restart on the same data directory."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support.live import wait_until
from tests.support.records import resize
from tests.support.serve_process import create_key, serve

pytestmark = [pytest.mark.timeout(120), pytest.mark.integration]


async def test_sigkill_mid_stream_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    acked: list[str] = []
    sent: list[str] = []
    headers = {"Authorization": "Bearer " + create_key(tmp_path / "data", "admin")}
    headers["Content-Type"] = "application/json"
    async with (
        serve(tmp_path / "data") as (proc, base, _),
        httpx.AsyncClient(base_url=base, timeout=10, headers=headers) as client,
    ):

        async def stream(worker: int) -> None:
            n = 0
            while True:
                event_id = f"crash-{worker}-{n}"
                sent.append(event_id)
                body = orjson.dumps(resize(event_id, f"t3.w{worker}n{n}"))
                try:
                    r = await client.post("/api/v1/ingest/cloudtrail", content=body)
                except httpx.TransportError:
                    return  # the server is gone: this one was never acknowledged
                if r.status_code == 202:
                    assert r.json()["data"]["drifts"] == 1
                    acked.append(event_id)
                n += 1

        workers = [asyncio.create_task(stream(w)) for w in range(4)]
        # A worker that fails stops the wait too: its error surfaces from gather below.
        await wait_until(
            lambda: len(acked) >= 200 or any(w.done() for w in workers),
            "200 acknowledged ingests",
            timeout=60,
        )
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(asyncio.gather(*workers), 30)
    assert proc.wait(10) == -signal.SIGKILL

    async with (
        serve(tmp_path / "data") as (_, base, _),
        httpx.AsyncClient(base_url=base, timeout=10, headers=headers) as client,
    ):
        for event_id in acked:
            r = await client.get(f"/api/v1/events/{event_id}")
            assert r.status_code == 200, event_id
            drifts = r.json()["data"]["drifts"]
            assert len(drifts) == 1 and drifts[0]["event_id"] == event_id
        drifts = (await client.get("/api/v1/drifts?limit=1")).json()["data"]["total"]
        events = (await client.get("/api/v1/events?type=cloudtrail&limit=1")).json()["data"][
            "total"
        ]
        # Unacknowledged requests may or may not have landed, but never half: one drift
        # per stored event, none twice.
        assert drifts == events >= len(acked)
        assert events <= len(sent)
        listing = (await client.get("/api/v1/drifts?limit=1000")).json()["data"]["drifts"]
        assert len({d["event_id"] for d in listing}) == len(listing)
