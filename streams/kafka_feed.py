"""The fetch worker as the group member's feed: started, told the assignment, read from.

The group consumer stays the member (its partitions paused); the worker
(`streams.kafka_worker`) fetches them. Every assign or seek carries a new epoch, and a batch
the worker fetched under an older epoch than the partition's current one is dropped, so
nothing fetched before a seek is handed over after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streams.kafka_offsets import Offsets, Report
from streams.kafka_options import KafkaOptions
from streams.kafka_wire import Part
from streams.kafka_worker import FetchWorker, WorkerGone


class CannotRun(Exception):
    """The fetch worker cannot be started here (fetch on the loop instead)."""


class WorkerFeed:
    """One connection's fetch worker, restarted with backoff when it goes away."""

    def __init__(
        self,
        options: KafkaOptions,
        offsets: Offsets,
        clock: Callable[[], float],
        report: Report,
        pause: Callable[[float], Awaitable[None]],
    ) -> None:
        self.options = options
        self.offsets = offsets
        self.clock = clock
        self.report = report
        self.pause = pause
        self.worker: FetchWorker | None = None
        self.retry_at = 0.0  # when one that went away may be started again
        self.delay = options.backoff_initial
        # What the worker was last told for each partition.
        self.epochs: dict[TopicPartition, int] = {}
        self.epoch_seq = 0
        self.assign_pending = False  # the worker must be given the assignment (again)
        self.assign_gen = 0  # counts rebalances, so an assignment raced by one is redone

    @property
    def last_error(self) -> str | None:
        return self.worker.last_error if self.worker is not None else None

    async def poll(self, consumer: AIOKafkaConsumer) -> list[Part]:
        """The worker's next batch, less what it fetched before a seek or rebalance.

        CannotRun when no worker can be started at all.
        """
        worker = await self._ensure()
        poll_seconds = self.options.poll_ms / 1000
        if worker is None:
            await self.pause(poll_seconds)  # until a new worker may start
            return []
        if self.assign_pending:
            await self._assign(consumer, worker)
        try:
            parts = await worker.next(poll_seconds)
        except WorkerGone as exc:
            # Everything it sent was read: a new one starts after a pause, where this
            # process is (what the old one fetched and did not send is fetched again).
            self.report("kafka fetch worker went away; starting another", exc)
            self.worker = None
            await worker.stop()
            # One that keeps dying before it sends anything is restarted ever more slowly.
            self.retry_at = self.clock() + self.delay
            self.delay = min(self.delay * 2, self.options.backoff_max)
            return []
        if parts:
            self.delay = self.options.backoff_initial
        epochs = self.epochs
        return [
            p for p in parts or () if epochs.get(TopicPartition(p.topic, p.partition)) == p.epoch
        ]

    async def _ensure(self) -> FetchWorker | None:
        """The worker; a new one if there is none (None while waiting to start one)."""
        if self.worker is not None:
            return self.worker
        if self.clock() < self.retry_at:
            return None
        try:
            worker = FetchWorker(self.options.worker_config())
            await worker.start()
        except (TypeError, OSError) as exc:
            raise CannotRun(f"{type(exc).__name__}: {exc}") from exc
        self.worker = worker
        self.assign_pending = True
        return worker

    async def _assign(self, consumer: AIOKafkaConsumer, worker: FetchWorker) -> None:
        """Give the worker every assigned partition, from where this process is."""
        gen = self.assign_gen
        position = self.offsets.position
        entries: list[tuple[str, int, int, int]] = []
        for tp in sorted(self.offsets.assigned):
            offset = position.get(tp)
            if offset is None:
                # Where the group left off (or the reset policy, for a new group).
                try:
                    found: int = await asyncio.wait_for(
                        consumer.position(tp), self.options.commit_timeout
                    )
                except (KafkaError, TimeoutError) as exc:
                    self.report("kafka position unknown; will ask again", exc)
                    return
                if gen != self.assign_gen:
                    return  # a rebalance came meanwhile: start over with its assignment
                offset = position[tp] = found
            self.epoch_seq += 1
            self.epochs[tp] = self.epoch_seq
            entries.append((tp.topic, tp.partition, offset, self.epoch_seq))
        worker.assign(entries)
        self.assign_pending = False

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.epoch_seq += 1
        self.epochs[tp] = self.epoch_seq
        if self.worker is not None:
            self.worker.seek(tp.topic, tp.partition, offset, self.epoch_seq)

    def rebalanced(self, revoked: set[TopicPartition] | None = None) -> None:
        """A rebalance: an assignment in progress is redone; revoked partitions are dropped."""
        self.assign_gen += 1
        for tp in revoked or ():
            self.epochs.pop(tp, None)

    async def close(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            await worker.stop()
        self.epochs.clear()
        self.assign_pending = False
