"""Kafka topics to decoded items: one consumer group, at-least-once, poison records dead-lettered.

Offsets are committed only after `on_items` (which stores what a record produced) has
returned for every record at or below them (`streams.kafka_offsets`); a record that cannot
be decoded is dead-lettered (`streams.kafka_dead`) and then counts as done, so it never
blocks its partition. A broker that goes away, or a store that fails, is retried with
backoff; a failed batch is sought back and read again (`streams.kafka_handover`), so nothing
is lost and the idempotent store keeps the output exactly-once.

By default the records are fetched, and read-only ones judged, by a worker process
(`streams.kafka_worker`); this process stays the group member, decodes what is left, and
commits. Without the worker (`worker=False`, or when it cannot start) the group consumer
fetches itself and every record is decoded on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from monitor.types import OnItems
from streams.falco import SourceFor, no_source
from streams.formats import DocDecoder
from streams.kafka_dead import DeadLetter, DeadLetters
from streams.kafka_feed import CannotRun, WorkerFeed
from streams.kafka_handover import Batch, HandOver, RecordDecoder, tp_of
from streams.kafka_offsets import Offsets
from streams.kafka_options import KafkaOptions, client_kwargs
from streams.kafka_wire import Part
from streams.kafka_worker import FetchWorker

log = logging.getLogger("driftline.kafka")


class _Listener(ConsumerRebalanceListener):
    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.source._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self.source._on_assigned(set(assigned))


class KafkaSource:
    """Consumes declared topics in one consumer group and hands decoded items to `on_items`."""

    def __init__(
        self,
        options: KafkaOptions,
        on_items: OnItems,
        *,
        dead_letter: DeadLetter | None = None,
        source_for: SourceFor = no_source,
        decoders: Mapping[str, DocDecoder] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self.clock = clock
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._dead = DeadLetters(dead_letter, options.dlq_topic)
        self._offsets = Offsets(
            options.commit_every,
            options.commit_interval,
            options.commit_timeout,
            clock,
            self._error,
        )
        decoder = RecordDecoder(
            options.topics, source_for, decoders or {}, options.max_record_bytes
        )
        self._handover = HandOver(on_items, decoder, self._offsets, self._dead, self._error)
        # Held by a rebalance or a close while it waits for the batches in flight and
        # commits: no new batch starts meanwhile, so only what was stored is committed.
        self._gate = asyncio.Lock()
        # The fetch worker, used while `_use_worker` (this connection fetches through it).
        self._feed = WorkerFeed(options, self._offsets, clock, self._error, self._pause)
        self._use_worker = False
        self._polled = False

        self.state = "stopped"
        self.reconnects = 0
        self.rebalances = 0
        self.last_error: str | None = None
        self.broker_ok = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start consuming in the background; connection failures are retried, not raised."""
        if self._task is not None:
            return
        self._stopping.clear()
        self.state = "starting"
        name = f"driftline-kafka-{self.options.group_id}"
        self._task = asyncio.create_task(self._run(), name=name)

    async def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in hand, commit what is stored, leave the group."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await self._close(commit=False)
        self.state = "stopped"

    def status(self) -> dict[str, Any]:
        """Counters, last error and per-partition offsets and lag (for /health, /stats)."""
        opts, offsets, handover = self.options, self._offsets, self._handover
        worker = self._feed.worker if self._use_worker else None
        partitions = self._partition_status(worker)
        return {
            "state": self.state,
            "connected": self.state == "running" and self.broker_ok,
            "bootstrap": opts.bootstrap,
            "group": opts.group_id,
            "topics": dict(opts.topics),
            "dlq_topic": opts.dlq_topic,
            "records": handover.records,
            "items": handover.items,
            "worker": worker is not None and worker.alive,
            "triaged": handover.triaged,
            "batches": handover.batches,
            "rejected": dict(handover.rejected),
            "dead_lettered": self._dead.count,
            "commits": offsets.commits,
            "commit_failures": offsets.failures,
            "store_failures": handover.store_failures,
            "reconnects": self.reconnects,
            "rebalances": self.rebalances,
            "last_error": self.last_error,
            "lag": sum(p["lag"] or 0 for p in partitions),
            "partitions": partitions,
        }

    def _partition_status(self, worker: FetchWorker | None) -> list[dict[str, Any]]:
        consumer = self._consumer
        live = consumer.assignment() if consumer is not None else set()
        offsets = self._offsets
        partitions = []
        for tp in sorted(offsets.assigned):
            if worker is not None:
                high = worker.highwater.get((tp.topic, tp.partition))
            else:
                high = consumer.highwater(tp) if consumer is not None and tp in live else None
            position = offsets.position.get(tp)
            committed = offsets.committed.get(tp)
            lag = high - position if high is not None and position is not None else None
            commit_lag = high - committed if high is not None and committed is not None else None
            partitions.append(
                {
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "committed": committed,
                    "processed": offsets.done.get(tp),
                    "position": position,
                    "highwater": high,
                    "lag": lag,
                    "commit_lag": commit_lag,
                }
            )
        return partitions

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff_initial, backoff_max = self.options.backoff_initial, self.options.backoff_max
        delay = backoff_initial
        while not self._stopping.is_set():
            try:
                await self._open()
                self.state = "running"
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._error("kafka consumer failed", exc)
                self.state = "backoff"
                await self._close(commit=True)
                self.reconnects += 1
                if self._polled:
                    delay = backoff_initial  # it worked for a while: start backoff afresh
                await self._pause(delay)
                delay = min(delay * 2, backoff_max)
        self.state = "stopping"
        await self._close(commit=True)
        self.state = "stopped"

    async def _open(self) -> None:
        opts = self.options
        common = client_kwargs(opts.client_options)
        await self._dead.open(opts.bootstrap, common)
        kwargs = {
            "auto_offset_reset": opts.auto_offset_reset,
            **common,
            **opts.consumer_options,
            # At-least-once rests on these: never let the client commit on its own.
            "group_id": opts.group_id,
            "enable_auto_commit": False,
        }
        consumer = AIOKafkaConsumer(bootstrap_servers=opts.bootstrap, **kwargs)
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        consumer.subscribe(topics=list(opts.topics), listener=_Listener(self))
        self._consumer = consumer
        self._use_worker = opts.worker
        self._feed.retry_at = 0.0
        self.broker_ok = True
        self._probe_task = asyncio.create_task(self._probe(consumer))

    async def _probe(self, consumer: AIOKafkaConsumer) -> None:
        """Ask the broker for metadata now and then: the client itself hides a stalled broker."""
        interval = self.options.probe_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.wait_for(consumer.topics(), interval)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.broker_ok:
                    self._error("kafka broker not answering", exc)
                self.broker_ok = False
            else:
                self.broker_ok = True

    async def _consume(self) -> None:
        """Poll, hand over, commit, until stopping.

        Batches are polled (from the fetch worker, or here) while up to `max_inflight`
        earlier ones are being decoded and stored (the store's commit is the slow part).
        """
        consumer = self._consumer
        assert consumer is not None
        opts, offsets, handover = self.options, self._offsets, self._handover
        store_delay = opts.backoff_initial
        self._polled = False
        inflight = handover.flights
        rewind = functools.partial(self._rewind, consumer)
        committing: asyncio.Task[None] | None = None
        try:
            while not self._stopping.is_set():
                failed = False
                while inflight and inflight[0].task.done():
                    if inflight.popleft().task.result():
                        store_delay = opts.backoff_initial
                    else:
                        failed = True
                if failed:
                    # Every later batch fails after it (each rewinds itself): wait for them,
                    # then back off before reading the failed records again.
                    await asyncio.gather(*(f.task for f in inflight))
                    inflight.clear()
                    await self._pause(store_delay)
                    store_delay = min(store_delay * 2, opts.backoff_max)
                    continue
                if offsets.due() and (committing is None or committing.done()):
                    # In the background: polling goes on during the broker's round trip.
                    committing = asyncio.create_task(offsets.commit(consumer, offsets.assigned))
                if len(inflight) >= opts.max_inflight:
                    # Wake for the commit interval too: a slow head must not hold commits.
                    await asyncio.wait([inflight[0].task], timeout=opts.commit_interval)
                    continue
                if self._use_worker:
                    parts = await self._poll_worker(consumer)
                else:
                    parts = await self._poll(consumer)
                self._polled = True
                if parts:
                    self.broker_ok = True  # records are an answer too
                    batch = Batch(parts, sum(p.count for p in parts))
                    async with self._gate:  # not while a rebalance is committing
                        handover.start(batch, rewind)
        finally:
            # Let the batches in hand finish storing (or fail and be read again).
            await asyncio.gather(*(f.task for f in inflight), return_exceptions=True)
            inflight.clear()
            if committing is not None:
                await asyncio.gather(committing, return_exceptions=True)

    async def _poll(self, consumer: AIOKafkaConsumer) -> list[Part]:
        """The group consumer's own fetch: every record is decoded on the loop."""
        opts = self.options
        polled = await consumer.getmany(timeout_ms=opts.poll_ms, max_records=opts.max_batch)
        assigned = consumer.assignment()
        return [
            Part(tp.topic, tp.partition, 0, msgs[0].offset, msgs[-1].offset, len(msgs), None, msgs)
            for tp, msgs in polled.items()
            if tp in assigned and msgs
        ]

    async def _poll_worker(self, consumer: AIOKafkaConsumer) -> list[Part]:
        """The fetch worker's next batch; the loop's own fetch if no worker can run."""
        # The group consumer fetches nothing itself (its partitions are paused), but it must
        # be polled: that keeps it in the group and raises the group's errors here.
        await consumer.getmany(timeout_ms=0)
        feed = self._feed
        try:
            parts = await feed.poll(consumer)
        except CannotRun as exc:
            # Fetch here instead, for as long as this connection lasts.
            self._error(
                "the kafka fetch worker cannot run; fetching on the loop", exc.__cause__ or exc
            )
            self._use_worker = False
            assigned = consumer.assignment()
            consumer.resume(*assigned)
            position = self._offsets.position
            for tp in assigned:
                if tp in position:
                    consumer.seek(tp, position[tp])
            return await self._poll(consumer)
        worker = feed.worker
        if worker is not None and worker.last_error is not None:
            self.last_error, worker.last_error = worker.last_error, None
        return parts

    def _seek(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
        self._offsets.position[tp] = offset
        if self._use_worker:
            self._feed.seek(tp, offset)
        else:
            consumer.seek(tp, offset)

    def _rewind(self, consumer: AIOKafkaConsumer, batch: Batch) -> None:
        """Read a batch again from its start, unless a batch before it that failed already
        sought its partition further back."""
        offsets = self._offsets
        for part in batch.parts:
            tp = tp_of(part)
            if tp in offsets.assigned and offsets.position.get(tp, part.first) >= part.first:
                self._seek(consumer, tp, part.first)

    # -- rebalances ------------------------------------------------------------------------

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        consumer = self._consumer
        async with self._gate:
            # Wait for the batches in hand, but not forever: a store that hangs must not hold
            # the whole group's rebalance (what is not committed is simply read again).
            settled = await self._handover.settle(self.options.commit_timeout)
            if not settled:
                self._error("rebalance did not wait for a stuck batch", TimeoutError())
            elif consumer is not None and revoked:
                await self._offsets.commit(consumer, revoked)
            self._feed.rebalanced(revoked)
            self._offsets.revoke(revoked)

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.rebalances += 1
        self._feed.rebalanced()
        offsets = self._offsets
        offsets.assigned = set(assigned)
        consumer = self._consumer
        if consumer is not None and self._use_worker:
            # The worker fetches these; the group consumer only holds them. The worker is
            # told from the loop, not here (finding positions waits on the group).
            consumer.pause(*assigned)
            self._feed.assign_pending = True
        if consumer is not None and assigned:
            # Only for status(): what the group had committed when these partitions came in.
            tps = sorted(assigned)
            found = await asyncio.gather(
                *(asyncio.wait_for(consumer.committed(tp), 5.0) for tp in tps),
                return_exceptions=True,
            )
            for tp, offset in zip(tps, found, strict=True):
                offsets.committed[tp] = offset if isinstance(offset, int) else None
                if isinstance(offset, int):
                    offsets.position.setdefault(tp, offset)
        log.info("kafka group %s assigned %s", self.options.group_id, sorted(assigned))

    # -- helpers ---------------------------------------------------------------------------

    async def _close(self, commit: bool) -> None:
        probe, self._probe_task = self._probe_task, None
        if probe is not None:
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)
        self.broker_ok = False
        timeout = self.options.commit_timeout
        consumer, self._consumer = self._consumer, None
        offsets = self._offsets
        if consumer is not None:
            if commit and offsets.assigned:
                async with self._gate:
                    if await self._handover.settle(timeout):
                        await offsets.commit(consumer, offsets.assigned)
            try:
                await asyncio.wait_for(consumer.stop(), timeout)
            except (KafkaError, TimeoutError, OSError) as exc:
                self._error("closing the kafka consumer failed", exc)
        offsets.clear()
        self._dead.settled()
        await self._feed.close()
        if self._stopping.is_set():
            try:
                await self._dead.close(timeout)
            except (KafkaError, TimeoutError, OSError) as exc:
                self._error("closing the kafka DLQ producer failed", exc)

    async def _pause(self, seconds: float) -> None:
        """Sleep for a backoff, waking at once when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _error(self, what: str, exc: BaseException) -> None:
        detail = str(exc).strip()
        self.last_error = f"{what}: {type(exc).__name__}" + (f": {detail}" if detail else "")
        log.warning("%s", self.last_error)
