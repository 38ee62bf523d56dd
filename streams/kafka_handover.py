"""Handing polled Kafka batches over: decoding them, dead-lettering poison, calling on_items.

Up to `max_inflight` batches are handed to `on_items` before the first of them has returned,
so a store with group commit can write several in one transaction. Calls are made in poll
order and a batch counts as done only once every batch before it is done; `on_items` keeps
that order for its writes if it queues them before its first `await` (Pipeline.ingest does).
A batch that fails, or follows one that failed, is rewound: it is read again.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from monitor.types import Decoded, DecodeError, OnItems, SkippedChange
from streams.documents import Limits, decode_bytes
from streams.falco import SourceFor
from streams.formats import DocDecoder, decoder_for
from streams.kafka_dead import DeadLetters
from streams.kafka_offsets import Offsets, Report
from streams.kafka_wire import Part
from streams.triage import DECODE, SKIPPED

Poison = list[tuple[Any, DecodeError]]


@dataclass(frozen=True, slots=True)
class Batch:
    """The records of one poll, per partition."""

    parts: list[Part]
    count: int


@dataclass(frozen=True, slots=True)
class Flight:
    """A batch being handed over: `started` is set once its turn to call on_items came."""

    task: asyncio.Task[bool]
    started: asyncio.Event


def tp_of(part: Part) -> TopicPartition:
    return TopicPartition(part.topic, part.partition)


class RecordDecoder:
    """Each topic's records to items, by the topic's format; poison is what yields an error."""

    def __init__(
        self,
        topics: Mapping[str, str],
        source_for: SourceFor,
        decoders: Mapping[str, DocDecoder],
        max_bytes: int,
    ) -> None:
        self.topics = topics
        self.source_for = source_for
        self.decoders = dict(decoders)
        self.limits = Limits(max_bytes, empty_is_error=True)

    def decoder(self, fmt: str) -> DocDecoder:
        found = self.decoders.get(fmt)
        if found is None:
            found = self.decoders[fmt] = decoder_for(fmt, self.source_for)
        return found

    def batch(self, batch: Batch, keep: set[TopicPartition]) -> tuple[list[Decoded], Poison]:
        """What the batch's records (of partitions in `keep`) decode to, and its poison."""
        items: list[Decoded] = []
        poison: Poison = []
        limits = self.limits
        for part in batch.parts:
            if tp_of(part) not in keep:
                continue
            decoder = self.decoder(self.topics.get(part.topic, "auto"))
            msgs = iter(part.msgs)
            for code in part.codes if part.codes is not None else bytes(part.count):
                if code != DECODE:
                    items.append(SKIPPED[code])
                    continue
                msg = next(msgs)
                decoded = decode_bytes(msg.value, decoder, limits)
                items += decoded
                for item in decoded:
                    if isinstance(item, DecodeError):
                        poison.append((msg, item))
                        break
        return items, poison


class HandOver:
    """The batches in flight, oldest first, and the counts of what they produced."""

    def __init__(
        self,
        on_items: OnItems,
        decoder: RecordDecoder,
        offsets: Offsets,
        dead: DeadLetters,
        report: Report,
    ) -> None:
        self.on_items = on_items
        self.decoder = decoder
        self.offsets = offsets
        self.dead = dead
        self.report = report
        self.flights: deque[Flight] = deque()
        self.records = 0
        self.items = 0
        self.batches = 0
        self.triaged = 0  # records the fetch worker found read-only
        self.rejected: Counter[str] = Counter()
        self.store_failures = 0

    def start(self, batch: Batch, rewind: Callable[[Batch], None]) -> None:
        """Hand a batch over after those in flight; `rewind` reads it again if it fails."""
        position = self.offsets.position
        for part in batch.parts:
            position[tp_of(part)] = part.last + 1
        prev = self.flights[-1] if self.flights else None
        started = asyncio.Event()
        task = asyncio.create_task(self._hand_over(batch, prev, started, rewind))
        self.flights.append(Flight(task, started))

    async def settle(self, timeout: float) -> bool:
        """Wait until no batch is in flight; False if that took longer than `timeout`."""
        pending = [f.task for f in self.flights if not f.task.done()]
        if not pending:
            return True
        _, late = await asyncio.wait(pending, timeout=timeout)
        return not late

    async def _hand_over(
        self,
        batch: Batch,
        prev: Flight | None,
        started: asyncio.Event,
        rewind: Callable[[Batch], None],
    ) -> bool:
        """Decode and store one batch; it is done only when the batch before it (`prev`) is.

        False when it, or a batch before it, failed: it has then been sought back.
        """
        stored = True
        items: list[Decoded] = []
        try:
            if prev is not None:
                await prev.started.wait()  # on_items is called in poll order
            # Partitions a rebalance took meanwhile are left to their new owner.
            items, poison = self.decoder.batch(batch, self.offsets.assigned)
            if poison and prev is not None:
                # Dead letters are written only after everything before them is done (a
                # repeat must not write them twice).
                await asyncio.wait([prev.task])
            for msg, error in poison:
                await self.dead.send(msg, error)
            started.set()  # the next batch may call on_items once this call has begun
            if items:
                await self.on_items(items)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Nothing of this batch is done: it is read again after a pause.
            stored = False
            self.store_failures += 1
            self.report("storing a kafka batch failed; it will be read again", exc)
        finally:
            started.set()
        if prev is not None:
            await asyncio.wait([prev.task])
            stored = stored and not prev.task.cancelled() and prev.task.result()
        if not stored:
            rewind(batch)
            return False
        self._count(batch, items)
        return True

    def _count(self, batch: Batch, items: list[Decoded]) -> None:
        self.dead.settled()
        offsets = self.offsets
        for part in batch.parts:
            offsets.stored(tp_of(part), part.last + 1)
        self.records += batch.count
        self.items += len(items)
        self.batches += 1
        offsets.uncommitted += batch.count
        for item in items:
            if isinstance(item, DecodeError):
                self.rejected[item.reason] += 1
            elif isinstance(item, SkippedChange):
                self.triaged += 1
