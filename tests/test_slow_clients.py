"""Slow and vanishing clients against a real uvicorn: header and body read deadlines."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from monitor.app.config import Config
from tests.support.live import running
from tests.support.records import DEMO_STATE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path) -> Config:
    return Config(
        state=[str(ROOT / DEMO_STATE)],
        data_dir=str(tmp_path / "data"),
        state_poll_seconds=60,
        header_read_seconds=0.3,
        body_read_seconds=0.3,
    )


async def test_headers_that_never_finish_lose_the_connection(tmp_path: Path) -> None:
    async with running(_config(tmp_path)) as srv:
        silent = await asyncio.open_connection("127.0.0.1", srv.port)
        trickle = await asyncio.open_connection("127.0.0.1", srv.port)
        trickle[1].write(b"POST /api/v1/ingest/cloudtrail HTTP/1.1\r\nHost: x\r\n")
        await trickle[1].drain()
        for reader, writer in (silent, trickle):
            assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server
            writer.close()
        assert (await srv.client.get("/health")).status_code in (200, 503)


async def test_a_body_that_never_finishes_is_a_408(tmp_path: Path) -> None:
    async with running(_config(tmp_path)) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(
            b"POST /api/v1/ingest/cloudtrail HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n"
            b"Authorization: Bearer " + srv.key.encode() + b"\r\n"
            b'Content-Type: application/json\r\n\r\n{"eventName":'
        )
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 10)
        assert status.startswith(b"HTTP/1.1 408"), status
        writer.close()
