"""Kafka topics to decoded items: one consumer group, at-least-once, poison records dead-lettered.

Offsets are committed only after `on_items` (which stores what a record produced) has
returned for every record at or below them; a record that cannot be decoded is handed to the
dead-letter callback (and optional DLQ topic) and then counts as done, so it never blocks its
partition. A broker that goes away, or a store that fails, is retried with backoff; a failed
batch is sought back and read again, so nothing is lost and the idempotent store keeps the
output exactly-once.

Up to `max_inflight` batches are handed to `on_items` before the first of them has returned,
so a store with group commit can write several in one transaction. Calls are made in poll
order and a batch counts as done only once every batch before it is done; `on_items` keeps
that order for its writes if it queues them before its first `await` (Pipeline.ingest does).

By default the records are fetched, and read-only ones judged, by a worker process
(`streams.kafka_worker`); this process stays the group member, decodes what is left, and
commits. Without the worker (`worker=False`, or when it cannot start) the group consumer
fetches itself and every record is decoded on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.helpers import create_ssl_context

from monitor.types import Decoded, DecodeError, OnItems, SkippedChange
from streams.decode import decode_document
from streams.files import RawDoc, parse_documents
from streams.kafka_worker import FetchWorker, Part, WorkerGone
from streams.triage import DECODE, SKIPPED

log = logging.getLogger("driftline.kafka")

FORMATS = ("cloudtrail", "falco", "k8s_audit", "gcp_audit", "azure_activity", "auto")
# Formats whose decoders live in their own modules, imported on first use.
_LAZY_DECODERS: dict[str, str] = {
    "k8s_audit": "streams.k8s_audit",
    "gcp_audit": "streams.gcp_audit",
    "azure_activity": "streams.azure_activity",
}
_SSL_FILE_KEYS = ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password")
_GZIP_MAGIC = b"\x1f\x8b"

DeadLetter = Callable[[str, int, int, bytes | None, bytes | None, str], Any]
DocDecoder = Callable[[Any], Iterable[Decoded]]


def parse_topics(specs: Iterable[str]) -> dict[str, str]:
    """`FORMAT:TOPIC` strings (a bare `TOPIC` means `auto`) to a topic -> format map."""
    topics: dict[str, str] = {}
    for spec in specs:
        fmt, sep, topic = spec.partition(":")
        if not sep:
            fmt, topic = "auto", spec
        fmt, topic = fmt.strip(), topic.strip()
        if fmt not in FORMATS:
            raise ValueError(f"kafka topic {spec!r}: unknown format {fmt!r} (one of {FORMATS})")
        if not topic:
            raise ValueError(f"kafka topic {spec!r}: no topic name")
        if topics.get(topic, fmt) != fmt:
            raise ValueError(f"kafka topic {topic!r} declared with two formats")
        topics[topic] = fmt
    return topics


def client_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    """aiokafka client keyword arguments; ssl_cafile/certfile/keyfile become an ssl_context."""
    opts = dict(options)
    files = {k: opts.pop(k) for k in _SSL_FILE_KEYS if k in opts}
    if files and "ssl_context" not in opts:
        opts["ssl_context"] = create_ssl_context(
            cafile=files.get("ssl_cafile"),
            certfile=files.get("ssl_certfile"),
            keyfile=files.get("ssl_keyfile"),
            password=files.get("ssl_password"),
        )
    return opts


def _gunzip(data: bytes, limit: int) -> bytes:
    out = bytearray()
    while data:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += d.decompress(data, limit + 1 - len(out))
        except zlib.error as exc:
            raise DecodeError("bad gzip", str(exc)) from None
        if len(out) > limit:
            raise DecodeError("record too large", f"more than {limit} bytes after gunzip")
        if not d.eof:
            raise DecodeError("bad gzip", "truncated stream")
        data = d.unused_data  # concatenated gzip members
    return bytes(out)


def decoder_for(
    fmt: str, source_for: Callable[[str], str | None] = lambda name: None
) -> DocDecoder:
    """The document decoder for a topic format, imported on first use.

    A format whose decoder module is not installed gets a decoder that rejects every
    document with a `decoder missing` DecodeError naming what is missing.
    """
    if fmt not in _LAZY_DECODERS:
        if fmt not in FORMATS:
            raise ValueError(f"unknown kafka topic format {fmt!r}")

        def decode(doc: Any) -> Iterable[Decoded]:
            return decode_document(doc, source_for)

        return decode
    module_name, name = _LAZY_DECODERS[fmt], f"decode_{fmt}"
    try:
        func = getattr(importlib.import_module(module_name), name, None)
    except ImportError:
        func = None
    if callable(func):
        return cast(DocDecoder, func)
    missing = DecodeError("decoder missing", f"{module_name}.{name} is not available")

    def reject(doc: Any) -> Iterable[Decoded]:
        return (missing,)

    return reject


def decode_value(
    value: bytes | None, decoder: DocDecoder, max_bytes: int = 64 * 1024 * 1024
) -> Iterator[Decoded]:
    """Every item in one record's value (JSON, NDJSON, gzip); unreadable input is a DecodeError."""
    if not value:
        yield DecodeError("empty record", "the record has no value")
        return
    data = value
    if data[:2] == _GZIP_MAGIC:
        try:
            data = _gunzip(data, max_bytes)
        except DecodeError as exc:
            yield exc
            return
    try:
        docs: Iterable[Any] = (orjson.loads(data),)  # the common case: one JSON document
    except orjson.JSONDecodeError:
        if not data.strip():
            yield DecodeError("empty record", "the record has no value")
            return
        docs = parse_documents(data, "record")  # NDJSON, or a bad document reported
    for doc in docs:
        if isinstance(doc, RawDoc):
            if doc.error is not None:
                yield doc.error
                continue
            doc = doc.doc
        try:
            yield from decoder(doc)
        except DecodeError as exc:
            yield exc
        except Exception as exc:  # a decoder bug must not stop the partition
            yield DecodeError("decoder failed", f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True, slots=True)
class _Batch:
    """The records of one poll, per partition."""

    parts: list[Part]
    count: int


@dataclass(frozen=True, slots=True)
class _Flight:
    """A batch being handed over: `started` is set once its turn to call on_items came."""

    task: asyncio.Task[bool]
    started: asyncio.Event


def _tp(part: Part) -> TopicPartition:
    return TopicPartition(part.topic, part.partition)


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
        bootstrap: str,
        topics: Mapping[str, str],
        group_id: str,
        on_items: OnItems,
        *,
        dead_letter: DeadLetter | None = None,
        dlq_topic: str | None = None,
        commit_every: int = 5000,
        commit_interval: float = 1.0,
        max_batch: int = 2000,
        max_inflight: int = 16,
        worker: bool = True,
        poll_interval: float = 0.2,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        commit_timeout: float = 30.0,
        probe_interval: float = 5.0,
        auto_offset_reset: str = "earliest",
        max_record_bytes: int = 64 * 1024 * 1024,
        source_for: Callable[[str], str | None] = lambda name: None,
        decoders: Mapping[str, DocDecoder] | None = None,
        client_options: Mapping[str, Any] | None = None,
        consumer_options: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not topics:
            raise ValueError("kafka: no topics declared")
        for topic, fmt in topics.items():
            if fmt not in FORMATS:
                raise ValueError(f"kafka topic {topic!r}: unknown format {fmt!r}")
        if dlq_topic is not None and dlq_topic in topics:
            raise ValueError(f"kafka: the DLQ topic {dlq_topic!r} is also consumed")
        if commit_every < 1 or max_batch < 1 or max_inflight < 1 or commit_interval <= 0:
            raise ValueError(
                "kafka: commit_every, max_batch, max_inflight and commit_interval must be > 0"
            )
        self.bootstrap = bootstrap
        self.topics = dict(topics)
        self.group_id = group_id
        self.on_items = on_items
        self.dead_letter = dead_letter
        self.dlq_topic = dlq_topic
        self.commit_every = commit_every
        self.commit_interval = commit_interval
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self.worker = worker
        self.poll_ms = max(1, int(poll_interval * 1000))
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.commit_timeout = commit_timeout
        self.probe_interval = probe_interval
        self.auto_offset_reset = auto_offset_reset
        self.max_record_bytes = max_record_bytes
        self.source_for = source_for
        self.client_options = dict(client_options or {})
        self.consumer_options = dict(consumer_options or {})
        self.clock = clock
        self._decoders: dict[str, DocDecoder] = dict(decoders or {})

        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        # Batches handed to on_items and not finished yet, oldest first.
        self._inflight: deque[_Flight] = deque()
        # Held by a rebalance or a close while it waits for the batches in flight and
        # commits: no new batch starts meanwhile, so only what was stored is committed.
        self._gate = asyncio.Lock()
        # The fetch worker, when this connection uses one (`_use_worker`), and when one that
        # went away may be started again.
        self._worker: FetchWorker | None = None
        self._use_worker = False
        self._worker_retry = 0.0
        self._worker_delay = backoff_initial
        # What the fetch worker was last told for each partition; batches it fetched under
        # an older epoch are dropped (a seek or a new assignment came after them).
        self._epochs: dict[TopicPartition, int] = {}
        self._epoch_seq = 0
        self._assign_pending = False  # the worker must be given the assignment (again)
        self._assign_gen = 0  # counts rebalances, so an assignment raced by one is redone
        # Commits cover finished batches only, so they need not wait for the one in hand.
        self._commit_lock = asyncio.Lock()
        self._assigned: set[TopicPartition] = set()
        self._done: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int | None] = {}
        self._position: dict[TopicPartition, int] = {}
        self._dead_marks: set[tuple[TopicPartition, int]] = set()
        self._uncommitted = 0
        self._last_commit = clock()
        self._polled = False

        self.state = "stopped"
        self.records = 0
        self.items = 0
        self.triaged = 0  # records the fetch worker found read-only
        self.batches = 0
        self.rejected: Counter[str] = Counter()
        self.dead_lettered = 0
        self.commits = 0
        self.commit_failures = 0
        self.store_failures = 0
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
        self._task = asyncio.create_task(self._run(), name=f"driftline-kafka-{self.group_id}")

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
        consumer = self._consumer
        live = consumer.assignment() if consumer is not None else set()
        partitions = []
        total_lag = 0
        worker = self._worker if self._use_worker else None
        for tp in sorted(self._assigned):
            if worker is not None:
                high = worker.highwater.get((tp.topic, tp.partition))
            else:
                high = consumer.highwater(tp) if consumer is not None and tp in live else None
            position = self._position.get(tp)
            committed = self._committed.get(tp)
            lag = high - position if high is not None and position is not None else None
            commit_lag = high - committed if high is not None and committed is not None else None
            total_lag += lag or 0
            partitions.append(
                {
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "committed": committed,
                    "processed": self._done.get(tp),
                    "position": position,
                    "highwater": high,
                    "lag": lag,
                    "commit_lag": commit_lag,
                }
            )
        return {
            "state": self.state,
            "connected": self.state == "running" and self.broker_ok,
            "bootstrap": self.bootstrap,
            "group": self.group_id,
            "topics": dict(self.topics),
            "dlq_topic": self.dlq_topic,
            "records": self.records,
            "items": self.items,
            "worker": worker is not None and worker.alive,
            "triaged": self.triaged,
            "batches": self.batches,
            "rejected": dict(self.rejected),
            "dead_lettered": self.dead_lettered,
            "commits": self.commits,
            "commit_failures": self.commit_failures,
            "store_failures": self.store_failures,
            "reconnects": self.reconnects,
            "rebalances": self.rebalances,
            "last_error": self.last_error,
            "lag": total_lag,
            "partitions": partitions,
        }

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.backoff_initial
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
                    delay = self.backoff_initial  # it worked for a while: start backoff afresh
                await self._pause(delay)
                delay = min(delay * 2, self.backoff_max)
        self.state = "stopping"
        await self._close(commit=True)
        self.state = "stopped"

    async def _open(self) -> None:
        common = client_kwargs(self.client_options)
        if self.dlq_topic is not None and self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                enable_idempotence=False,
                **common,
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        opts = {
            "auto_offset_reset": self.auto_offset_reset,
            **common,
            **self.consumer_options,
            # At-least-once rests on these: never let the client commit on its own.
            "group_id": self.group_id,
            "enable_auto_commit": False,
        }
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, **opts)
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        consumer.subscribe(topics=list(self.topics), listener=_Listener(self))
        self._consumer = consumer
        self._use_worker = self.worker
        self._worker_retry = 0.0
        self.broker_ok = True
        self._probe_task = asyncio.create_task(self._probe(consumer))

    async def _probe(self, consumer: AIOKafkaConsumer) -> None:
        """Ask the broker for metadata now and then: the client itself hides a stalled broker."""
        while True:
            await asyncio.sleep(self.probe_interval)
            try:
                await asyncio.wait_for(consumer.topics(), self.probe_interval)
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
        store_delay = self.backoff_initial
        self._polled = False
        inflight = self._inflight
        committing: asyncio.Task[None] | None = None
        try:
            while not self._stopping.is_set():
                failed = False
                while inflight and inflight[0].task.done():
                    if inflight.popleft().task.result():
                        store_delay = self.backoff_initial
                    else:
                        failed = True
                if failed:
                    # Every later batch fails after it (each rewinds itself): wait for them,
                    # then back off before reading the failed records again.
                    await asyncio.gather(*(f.task for f in inflight))
                    inflight.clear()
                    await self._pause(store_delay)
                    store_delay = min(store_delay * 2, self.backoff_max)
                    continue
                if self._commit_due() and (committing is None or committing.done()):
                    # In the background: polling goes on during the broker's round trip.
                    committing = asyncio.create_task(self._commit(consumer, self._assigned))
                if len(inflight) >= self.max_inflight:
                    # Wake for the commit interval too: a slow head must not hold commits.
                    await asyncio.wait([inflight[0].task], timeout=self.commit_interval)
                    continue
                if self._use_worker:
                    parts = await self._poll_worker(consumer)
                else:
                    parts = await self._poll(consumer)
                self._polled = True
                if parts:
                    self.broker_ok = True  # records are an answer too
                    batch = _Batch(parts, sum(p.count for p in parts))
                    async with self._gate:  # not while a rebalance is committing
                        self._start(consumer, batch)
        finally:
            # Let the batches in hand finish storing (or fail and be read again).
            await asyncio.gather(*(f.task for f in inflight), return_exceptions=True)
            inflight.clear()
            if committing is not None:
                await asyncio.gather(committing, return_exceptions=True)

    async def _poll(self, consumer: AIOKafkaConsumer) -> list[Part]:
        """The group consumer's own fetch: every record is decoded on the loop."""
        polled = await consumer.getmany(timeout_ms=self.poll_ms, max_records=self.max_batch)
        assigned = consumer.assignment()
        return [
            Part(tp.topic, tp.partition, 0, msgs[0].offset, msgs[-1].offset, len(msgs), None, msgs)
            for tp, msgs in polled.items()
            if tp in assigned and msgs
        ]

    async def _poll_worker(self, consumer: AIOKafkaConsumer) -> list[Part]:
        """The fetch worker's next batch, less what it fetched before a seek or rebalance."""
        # The group consumer fetches nothing itself (its partitions are paused), but it must
        # be polled: that keeps it in the group and raises the group's errors here.
        await consumer.getmany(timeout_ms=0)
        worker = await self._fetch_worker(consumer)
        if worker is None:
            if not self._use_worker:
                return await self._poll(consumer)
            await self._pause(self.poll_ms / 1000)  # until a new worker may start
            return []
        if self._assign_pending:
            await self._assign_worker(consumer, worker)
        try:
            parts = await worker.next(self.poll_ms / 1000)
        except WorkerGone as exc:
            # Everything it sent was read: a new one starts after a pause, where this
            # process is (what the old one fetched and did not send is fetched again).
            self._error("kafka fetch worker went away; starting another", exc)
            self._worker = None
            await worker.stop()
            # One that keeps dying before it sends anything is restarted ever more slowly.
            self._worker_retry = self.clock() + self._worker_delay
            self._worker_delay = min(self._worker_delay * 2, self.backoff_max)
            return []
        if parts:
            self._worker_delay = self.backoff_initial
        if worker.last_error is not None:
            self.last_error, worker.last_error = worker.last_error, None
        epochs = self._epochs
        return [p for p in parts or () if epochs.get(_tp(p)) == p.epoch]

    async def _fetch_worker(self, consumer: AIOKafkaConsumer) -> FetchWorker | None:
        """The fetch worker; a new one if there is none (None while waiting to start one)."""
        if self._worker is not None:
            return self._worker
        if self.clock() < self._worker_retry:
            return None
        try:
            worker = FetchWorker(self._worker_config())
            await worker.start()
        except (TypeError, OSError) as exc:
            # Fetch here instead, for as long as this connection lasts.
            self._error("the kafka fetch worker cannot run; fetching on the loop", exc)
            self._use_worker = False
            assigned = consumer.assignment()
            consumer.resume(*assigned)
            for tp in assigned:
                if tp in self._position:
                    consumer.seek(tp, self._position[tp])
            return None
        self._worker = worker
        self._assign_pending = True
        return worker

    def _worker_config(self) -> dict[str, Any]:
        return {
            "bootstrap": self.bootstrap,
            "topics": self.topics,
            "client": self.client_options,
            "consumer": {
                k: v
                for k, v in self.consumer_options.items()
                if k not in ("group_id", "enable_auto_commit", "auto_offset_reset")
            },
            "auto_offset_reset": self.auto_offset_reset,
            "max_batch": self.max_batch,
            "poll_ms": self.poll_ms,
            "max_record_bytes": self.max_record_bytes,
            "backoff_initial": self.backoff_initial,
            "backoff_max": self.backoff_max,
        }

    async def _assign_worker(self, consumer: AIOKafkaConsumer, worker: FetchWorker) -> None:
        """Give the worker every assigned partition, from where this process is."""
        gen = self._assign_gen
        entries: list[tuple[str, int, int, int]] = []
        for tp in sorted(self._assigned):
            offset = self._position.get(tp)
            if offset is None:
                # Where the group left off (or the reset policy, for a new group).
                try:
                    found: int = await asyncio.wait_for(consumer.position(tp), self.commit_timeout)
                except (KafkaError, TimeoutError) as exc:
                    self._error("kafka position unknown; will ask again", exc)
                    return
                if gen != self._assign_gen:
                    return  # a rebalance came meanwhile: start over with its assignment
                offset = self._position[tp] = found
            self._epoch_seq += 1
            self._epochs[tp] = self._epoch_seq
            entries.append((tp.topic, tp.partition, offset, self._epoch_seq))
        worker.assign(entries)
        self._assign_pending = False

    def _seek(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
        self._position[tp] = offset
        if not self._use_worker:
            consumer.seek(tp, offset)
            return
        self._epoch_seq += 1
        self._epochs[tp] = self._epoch_seq
        if self._worker is not None:
            self._worker.seek(tp.topic, tp.partition, offset, self._epoch_seq)

    def _start(self, consumer: AIOKafkaConsumer, batch: _Batch) -> None:
        for part in batch.parts:
            self._position[_tp(part)] = part.last + 1
        prev = self._inflight[-1] if self._inflight else None
        started = asyncio.Event()
        task = asyncio.create_task(self._hand_over(consumer, batch, prev, started))
        self._inflight.append(_Flight(task, started))

    def _rewind(self, consumer: AIOKafkaConsumer, batch: _Batch) -> None:
        """Read a batch again from its start, unless a batch before it that failed already
        sought its partition further back."""
        for part in batch.parts:
            tp = _tp(part)
            if tp in self._assigned and self._position.get(tp, part.first) >= part.first:
                self._seek(consumer, tp, part.first)

    async def _hand_over(
        self,
        consumer: AIOKafkaConsumer,
        batch: _Batch,
        prev: _Flight | None,
        started: asyncio.Event,
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
            items, poison = self._decode(batch, self._assigned)
            if poison and prev is not None:
                # Dead letters are written only after everything before them is done (a
                # repeat must not write them twice).
                await asyncio.wait([prev.task])
            for msg, error in poison:
                await self._dead_letter(msg, error)
            started.set()  # the next batch may call on_items once this call has begun
            if items:
                await self.on_items(items)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Nothing of this batch is done: it is read again after a pause.
            stored = False
            self.store_failures += 1
            self._error("storing a kafka batch failed; it will be read again", exc)
        finally:
            started.set()
        if prev is not None:
            await asyncio.wait([prev.task])
            stored = stored and not prev.task.cancelled() and prev.task.result()
        if not stored:
            self._rewind(consumer, batch)
            return False
        self._dead_marks.clear()
        assigned = self._assigned
        for part in batch.parts:
            tp = _tp(part)
            if tp in assigned:  # a partition revoked meanwhile is not ours to commit
                self._done[tp] = part.last + 1
        self.records += batch.count
        self.items += len(items)
        self.batches += 1
        self._uncommitted += batch.count
        for item in items:
            if isinstance(item, DecodeError):
                self.rejected[item.reason] += 1
            elif isinstance(item, SkippedChange):
                self.triaged += 1
        return True

    def _decode(
        self, batch: _Batch, keep: set[TopicPartition]
    ) -> tuple[list[Decoded], list[tuple[Any, DecodeError]]]:
        """What the batch's records (of partitions in `keep`) decode to, and its poison."""
        items: list[Decoded] = []
        poison: list[tuple[Any, DecodeError]] = []
        max_bytes = self.max_record_bytes
        for part in batch.parts:
            if _tp(part) not in keep:
                continue
            decoder = self._decoder(self.topics.get(part.topic, "auto"))
            msgs = iter(part.msgs)
            for code in part.codes if part.codes is not None else bytes(part.count):
                if code != DECODE:
                    items.append(SKIPPED[code])
                    continue
                msg = next(msgs)
                first_error: DecodeError | None = None
                for item in decode_value(msg.value, decoder, max_bytes):
                    items.append(item)
                    if first_error is None and isinstance(item, DecodeError):
                        first_error = item
                if first_error is not None:
                    poison.append((msg, first_error))
        return items, poison

    def _decoder(self, fmt: str) -> DocDecoder:
        found = self._decoders.get(fmt)
        if found is None:
            found = self._decoders[fmt] = decoder_for(fmt, self.source_for)
        return found

    async def _dead_letter(self, msg: Any, error: DecodeError) -> None:
        tp = TopicPartition(msg.topic, msg.partition)
        if (tp, msg.offset) in self._dead_marks:
            return  # already dead-lettered before a store failure made the batch repeat
        reason = str(error)
        if self.dead_letter is not None:
            result = self.dead_letter(
                msg.topic, msg.partition, msg.offset, msg.key, msg.value, reason
            )
            if inspect.isawaitable(result):
                await result
        if self._producer is not None and self.dlq_topic is not None:
            headers = [
                ("driftline.reason", reason.encode()[:1000]),
                ("driftline.topic", msg.topic.encode()),
                ("driftline.partition", str(msg.partition).encode()),
                ("driftline.offset", str(msg.offset).encode()),
            ]
            await self._producer.send_and_wait(
                self.dlq_topic, value=msg.value, key=msg.key, headers=headers
            )
        self._dead_marks.add((tp, msg.offset))
        self.dead_lettered += 1
        log.warning(
            "kafka record %s[%d]@%d dead-lettered: %s", msg.topic, msg.partition, msg.offset, reason
        )

    # -- offsets ---------------------------------------------------------------------------

    def _commit_due(self) -> bool:
        if not any(self._done.get(tp) != self._committed.get(tp) for tp in self._done):
            return False
        return (
            self._uncommitted >= self.commit_every
            or self.clock() - self._last_commit >= self.commit_interval
        )

    async def _commit(
        self, consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]
    ) -> None:
        """Commit what is stored for `partitions`; a failure is counted and retried later."""
        async with self._commit_lock:
            await self._commit_now(consumer, partitions)

    async def _commit_now(
        self, consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]
    ) -> None:
        assigned = consumer.assignment()
        offsets = {
            tp: self._done[tp]
            for tp in partitions
            if tp in assigned and tp in self._done and self._done[tp] != self._committed.get(tp)
        }
        self._last_commit = self.clock()
        self._uncommitted = 0  # a failed commit is retried on the interval, not every poll
        if not offsets:
            return
        try:
            await asyncio.wait_for(consumer.commit(offsets), self.commit_timeout)
        except asyncio.CancelledError:
            raise
        except CommitFailedError as exc:
            # The partitions moved to another member, which reads them from the last commit.
            self.commit_failures += 1
            self._error("kafka commit refused after a rebalance", exc)
            return
        except (KafkaError, TimeoutError, OSError) as exc:
            self.commit_failures += 1
            self._error("kafka commit failed; will retry", exc)
            return
        self._committed.update(offsets)
        self.commits += 1

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        consumer = self._consumer
        async with self._gate:
            # Wait for the batches in hand, but not forever: a store that hangs must not hold
            # the whole group's rebalance (what is not committed is simply read again).
            settled = await self._settle(self.commit_timeout)
            if not settled:
                self._error("rebalance did not wait for a stuck batch", TimeoutError())
            elif consumer is not None and revoked:
                await self._commit(consumer, revoked)
            self._assign_gen += 1
            for tp in revoked:
                self._assigned.discard(tp)
                for table in (self._done, self._committed, self._position, self._epochs):
                    table.pop(tp, None)

    async def _settle(self, timeout: float) -> bool:
        """Wait until no batch is in flight; False if that took longer than `timeout`."""
        pending = [f.task for f in self._inflight if not f.task.done()]
        if not pending:
            return True
        _, late = await asyncio.wait(pending, timeout=timeout)
        return not late

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.rebalances += 1
        self._assign_gen += 1
        self._assigned = set(assigned)
        consumer = self._consumer
        if consumer is not None and self._use_worker:
            # The worker fetches these; the group consumer only holds them. The worker is
            # told from the loop, not here (finding positions waits on the group).
            consumer.pause(*assigned)
            self._assign_pending = True
        if consumer is not None and assigned:
            # Only for status(): what the group had committed when these partitions came in.
            tps = sorted(assigned)
            found = await asyncio.gather(
                *(asyncio.wait_for(consumer.committed(tp), 5.0) for tp in tps),
                return_exceptions=True,
            )
            for tp, offset in zip(tps, found, strict=True):
                self._committed[tp] = offset if isinstance(offset, int) else None
                if isinstance(offset, int):
                    self._position.setdefault(tp, offset)
        log.info("kafka group %s assigned %s", self.group_id, sorted(assigned))

    # -- helpers ---------------------------------------------------------------------------

    async def _close(self, commit: bool) -> None:
        probe, self._probe_task = self._probe_task, None
        if probe is not None:
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)
        self.broker_ok = False
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            if commit and self._assigned:
                async with self._gate:
                    if await self._settle(self.commit_timeout):
                        await self._commit(consumer, self._assigned)
            try:
                await asyncio.wait_for(consumer.stop(), self.commit_timeout)
            except (KafkaError, TimeoutError, OSError) as exc:
                self._error("closing the kafka consumer failed", exc)
        self._assigned.clear()
        self._done.clear()
        self._committed.clear()
        self._position.clear()
        self._dead_marks.clear()
        self._uncommitted = 0
        worker, self._worker = self._worker, None
        if worker is not None:
            await worker.stop()
        self._epochs.clear()
        self._assign_pending = False
        if self._stopping.is_set():
            producer, self._producer = self._producer, None
            if producer is not None:
                try:
                    await asyncio.wait_for(producer.stop(), self.commit_timeout)
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
