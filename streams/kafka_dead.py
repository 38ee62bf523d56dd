"""Dead letters: records that cannot be decoded, handed to a callback and a DLQ topic once."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer

from monitor.types import DecodeError

log = logging.getLogger("driftline.kafka")

DeadLetter = Callable[[str, int, int, bytes | None, bytes | None, str], Any]
"""Called with (topic, partition, offset, key, value, reason); may be async."""


class DeadLetters:
    """The dead-letter callback, the DLQ producer, and which records were already sent."""

    def __init__(self, callback: DeadLetter | None, dlq_topic: str | None) -> None:
        self.callback = callback
        self.dlq_topic = dlq_topic
        self.producer: AIOKafkaProducer | None = None
        # (topic, partition, offset) sent since the last batch that was stored: a batch
        # that is read again after a store failure must not dead-letter its records twice.
        self._sent: set[tuple[str, int, int]] = set()
        self.count = 0

    async def open(self, bootstrap: str, client: dict[str, Any]) -> None:
        """Start the DLQ producer (once; it outlives reconnections of the consumer)."""
        if self.dlq_topic is None or self.producer is not None:
            return
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, **client
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self.producer = producer

    async def close(self, timeout: float) -> None:
        """Stop the producer (a failure is raised: the caller reports it)."""
        producer, self.producer = self.producer, None
        if producer is not None:
            await asyncio.wait_for(producer.stop(), timeout)

    def settled(self) -> None:
        """Everything dead-lettered so far belongs to stored batches: forget it."""
        self._sent.clear()

    async def send(self, msg: Any, error: DecodeError) -> None:
        mark = (msg.topic, msg.partition, msg.offset)
        if mark in self._sent:
            return  # already dead-lettered before a store failure made the batch repeat
        reason = str(error)
        if self.callback is not None:
            result = self.callback(msg.topic, msg.partition, msg.offset, msg.key, msg.value, reason)
            if inspect.isawaitable(result):
                await result
        if self.producer is not None and self.dlq_topic is not None:
            headers = [
                ("driftline.reason", reason.encode()[:1000]),
                ("driftline.topic", msg.topic.encode()),
                ("driftline.partition", str(msg.partition).encode()),
                ("driftline.offset", str(msg.offset).encode()),
            ]
            await self.producer.send_and_wait(
                self.dlq_topic, value=msg.value, key=msg.key, headers=headers
            )
        self._sent.add(mark)
        self.count += 1
        log.warning(
            "kafka record %s[%d]@%d dead-lettered: %s",
            msg.topic,
            msg.partition,
            msg.offset,
            reason,
            extra={"source": "kafka", "position": f"{msg.topic}[{msg.partition}]@{msg.offset}"},
        )
