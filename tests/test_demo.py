"""`driftline serve --demo`: drifts arrive on SSE within seconds, and keep arriving."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from monitor.app.config import Config
from tests.support.live import SSEReader, running

pytestmark = [pytest.mark.timeout(60), pytest.mark.integration]


async def test_demo_stream_produces_drifts_cycle_after_cycle(tmp_path: Path) -> None:
    config = Config(
        demo=True, demo_interval_seconds=0.01, data_dir=str(tmp_path), state_poll_seconds=60
    )
    async with (
        running(config) as srv,
        srv.client.stream("GET", "/api/v1/stream?topics=drifts,events") as sse,
    ):
        reader = SSEReader(sse)
        await reader.until("connected")
        fields: list[tuple[str, str | None]] = []
        resized = 0
        try:
            async with asyncio.timeout(30):
                while resized < 2:  # two cycles: the resize must be a new drift both times
                    _, event, payload = await reader.next()
                    if event == "drift":
                        fields.append(
                            (
                                payload["resource_address"] or payload["resource_type"],
                                payload["field"],
                            )
                        )
                        resized += payload["field"] == "instance_type"
        except TimeoutError:
            pytest.fail(f"no two instance_type drifts within 30 s; drifts seen: {fields}")
        assert ("aws_cloudtrail.main", "enable_logging") in fields
        assert ("aws_iam_role.app", "assume_role_policy") in fields
        assert ("aws_s3_bucket_public_access_block.data", "block_public_acls") in fields
        stats = (await srv.client.get("/api/v1/stats")).json()["data"]
        assert stats["ingest"]["not_drift"]["made by Terraform"] >= 1
        assert stats["ingest"]["not_drift"]["read-only call"] >= 1
        assert stats["events"]["by_type"]["falco"] >= 1
