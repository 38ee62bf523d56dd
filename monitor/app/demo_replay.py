"""`serve --demo`: replay a small, hand-written stream of CloudTrail calls and Falco alerts.

Each cycle gives every record a fresh id and the current time, so drifts keep arriving on
SSE and WebSocket for as long as the demo runs.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from monitor.clock import utc_now
from monitor.pipeline import IngestResult
from monitor.types import Decoded
from streams.decode import decode_document
from streams.falco import SourceFor

Ingest = Callable[[list[Decoded]], Awaitable[IngestResult]]

STREAM = Path(__file__).parent / "demo" / "stream.jsonl"
log = logging.getLogger("driftline.demo")


def demo_records() -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in STREAM.read_bytes().splitlines() if line.strip()]


SIZES = ("t3.2xlarge", "m5.4xlarge", "c5.9xlarge", "r5.8xlarge", "p3.2xlarge")


def freshen(record: dict[str, Any], cycle: str, now: str, n: int = 0) -> dict[str, Any]:
    """The record as if it happened now, with an id unique to this cycle. Two changes vary
    with the cycle number `n` so that new drifts keep coming (identical repeats of an open
    drift only add occurrences)."""
    out = dict(record)
    if "eventName" in out:
        out["eventID"] = f"{record.get('eventID', 'demo')}-{cycle}"
        out["eventTime"] = now[:19] + "Z"
        if out["eventName"] == "ModifyInstanceAttribute" and "HashiCorp" not in str(
            out.get("userAgent")
        ):
            out["requestParameters"] = {
                **out["requestParameters"],
                "instanceType": {"value": SIZES[n % len(SIZES)]},
            }
        elif out["eventName"] == "AuthorizeSecurityGroupIngress":
            port = (22, 3389, 5432, 6379, 9200)[n % 5]
            perm = {
                "ipProtocol": "tcp",
                "fromPort": port,
                "toPort": port,
                "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]},
            }
            out["requestParameters"] = {
                **out["requestParameters"],
                "ipPermissions": {"items": [perm]},
            }
    else:
        out["time"] = now
        fields = dict(out.get("output_fields") or {})
        fields.pop("evt.time", None)
        out["output_fields"] = fields
        out["uuid"] = f"demo-{uuid.uuid4()}"
    return out


async def replay_forever(ingest: Ingest, source_for: SourceFor, interval: float) -> None:
    """Feed the demo stream to `ingest` forever, one record every `interval` seconds."""
    records = demo_records()
    n = 0
    while True:
        cycle = uuid.uuid4().hex[:8]
        for record in records:
            items = list(decode_document(freshen(record, cycle, utc_now(), n), source_for))
            result = await ingest(items)
            if result.drifts:
                log.info(
                    "demo: %s -> %d drift(s)",
                    record.get("eventName") or record["rule"],
                    result.drifts,
                    extra={"source": "demo", "drift_id": result.drift_ids[0]},
                )
            await asyncio.sleep(interval)
        n += 1
