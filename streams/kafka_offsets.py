"""Kafka offsets: where each partition is read to, what is stored, and what is committed.

A partition's `done` offset moves only when every batch up to it has been stored, and only
`done` offsets are committed, so a restart reads again whatever was not stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

Report = Callable[[str, BaseException], None]


class Offsets:
    """Per-partition positions and commits of one group member's assignment."""

    def __init__(
        self,
        commit_every: int,
        commit_interval: float,
        commit_timeout: float,
        clock: Callable[[], float],
        report: Report,
    ) -> None:
        self.commit_every = commit_every
        self.commit_interval = commit_interval
        self.commit_timeout = commit_timeout
        self.clock = clock
        self.report = report
        self.assigned: set[TopicPartition] = set()
        self.done: dict[TopicPartition, int] = {}  # the next offset to store
        self.committed: dict[TopicPartition, int | None] = {}
        self.position: dict[TopicPartition, int] = {}  # the next offset to hand over
        self.uncommitted = 0
        self.last_commit = clock()
        self.commits = 0
        self.failures = 0
        # Commits cover finished batches only, so they need not wait for the one in hand.
        self._lock = asyncio.Lock()

    def stored(self, tp: TopicPartition, next_offset: int) -> None:
        """Everything of `tp` below `next_offset` is stored (ignored once `tp` is revoked)."""
        if tp in self.assigned:
            self.done[tp] = next_offset

    def due(self) -> bool:
        """Whether a commit is due: something new is stored, and enough of it or long ago."""
        done, committed = self.done, self.committed
        if not any(done.get(tp) != committed.get(tp) for tp in done):
            return False
        return (
            self.uncommitted >= self.commit_every
            or self.clock() - self.last_commit >= self.commit_interval
        )

    async def commit(
        self, consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]
    ) -> None:
        """Commit what is stored for `partitions`; a failure is counted and retried later."""
        async with self._lock:
            await self._commit(consumer, partitions)

    async def _commit(
        self, consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]
    ) -> None:
        assigned = consumer.assignment()
        offsets = {
            tp: self.done[tp]
            for tp in partitions
            if tp in assigned and tp in self.done and self.done[tp] != self.committed.get(tp)
        }
        self.last_commit = self.clock()
        self.uncommitted = 0  # a failed commit is retried on the interval, not every poll
        if not offsets:
            return
        try:
            await asyncio.wait_for(consumer.commit(offsets), self.commit_timeout)
        except asyncio.CancelledError:
            raise
        except CommitFailedError as exc:
            # The partitions moved to another member, which reads them from the last commit.
            self.failures += 1
            self.report("kafka commit refused after a rebalance", exc)
            return
        except (KafkaError, TimeoutError, OSError) as exc:
            self.failures += 1
            self.report("kafka commit failed; will retry", exc)
            return
        self.committed.update(offsets)
        self.commits += 1

    def revoke(self, revoked: Iterable[TopicPartition]) -> None:
        for tp in revoked:
            self.assigned.discard(tp)
            for table in (self.done, self.committed, self.position):
                table.pop(tp, None)

    def clear(self) -> None:
        """Forget the assignment (the connection is closed)."""
        self.assigned.clear()
        self.done.clear()
        self.committed.clear()
        self.position.clear()
        self.uncommitted = 0
