"""The Kafka output: each delivery produced to a topic, keyed by resource, valued by the drift.

Keyed by resource, every message about one resource lands on one partition, so a consumer
sees them in order. The producer waits for the broker's acknowledgement (acks=all) before a
delivery counts as delivered; the sender's one-at-a-time order does the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from monitor.outputs.spec import OutputSpec
from monitor.outputs.transport import Outcome
from monitor.store import Delivery


def key_of(d: Delivery) -> bytes | None:
    """The resource the message is about (its Terraform address, else its id); None for state."""
    p: dict[str, Any] = orjson.loads(d.body)
    resource = p.get("resource_address") or p.get("resource_id")
    return str(resource).encode() if resource else None


class KafkaTransport:
    """One producer per output, started on the first send and again after any failure."""

    def __init__(self) -> None:
        self._producer: AIOKafkaProducer | None = None
        self._for: OutputSpec | None = None

    async def send(self, spec: OutputSpec, d: Delivery, now: float) -> Outcome:
        headers = [
            ("driftline-delivery-id", str(d.id).encode()),
            ("driftline-event", d.event.encode()),
        ]
        try:
            async with asyncio.timeout(spec.timeout_seconds):
                producer = await self._producer_for(spec)
                await producer.send_and_wait(
                    spec.topic or "", d.body, key=key_of(d), headers=headers
                )
        except (KafkaError, OSError, TimeoutError) as exc:
            await self.close()
            detail = str(exc) or "no acknowledgement in time"
            return Outcome(False, f"Kafka: {type(exc).__name__}: {detail}"[:300])
        return Outcome(True)

    async def _producer_for(self, spec: OutputSpec) -> AIOKafkaProducer:
        if self._producer is not None and self._for is spec:
            return self._producer
        await self.close()
        producer = AIOKafkaProducer(
            bootstrap_servers=spec.brokers,
            acks="all",
            # Idempotence needs a broker that supports it; order comes from one-at-a-time sends.
            enable_idempotence=False,
            request_timeout_ms=max(1000, int(spec.timeout_seconds * 1000)),
        )
        try:
            await producer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        self._producer, self._for = producer, spec
        return producer

    async def close(self) -> None:
        producer, self._producer, self._for = self._producer, None, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()
