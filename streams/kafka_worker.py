"""Kafka fetching and read-only triage in a worker process.

A Kafka consumer spends most of its time on two things that need no state of Driftline's:
fetching and unpacking record batches, and parsing records that can never be drift (about
80% of a real CloudTrail stream is read-only calls). Both run here, in a process of their
own, so they overlap with detection and storage on the event loop instead of taking turns
with them.

The worker is a plain consumer (no group, no commits) of the partitions the parent assigns
it, from the offsets the parent gives. The parent stays the group member: it is told of
rebalances, commits offsets once what a record produced is stored, and seeks (through the
worker) when a batch must be read again. Every assign or seek carries an epoch; the worker
tags what it fetched with the epoch in force when it fetched it, and the parent drops
anything tagged with an older epoch than its own, so nothing fetched before a seek is ever
handed over after it.

For each polled partition the worker sends one code per record (`streams.triage`): records
marked DECODE are sent whole (offset, key, value) to be decoded on the loop; the others are
read-only changes and travel as their code alone.

The pipe protocol is in `streams.kafka_wire`.

Run as `python -m streams.kafka_worker`; it exits when its stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streams.documents import Limits, decode_bytes
from streams.formats import FORMATS, decoder_for
from streams.kafka_options import client_kwargs
from streams.kafka_wire import Highwater, Part, decode_batch, encode_batch, frame, read_frame
from streams.triage import DECODE, judge

log = logging.getLogger("driftline.kafka.worker")

_HIGHWATER_EVERY = 1.0  # seconds between highwater-only frames while nothing is fetched
_QUEUE = 4  # batches parsed ahead of the consumer loop (the pipe holds more)


class WorkerGone(Exception):
    """The worker process exited or its output could not be read."""


# -- the worker process ----------------------------------------------------------------------


class _Worker:
    def __init__(self, config: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        self.config = config
        self.writer = writer
        self.limits = Limits(int(config["max_record_bytes"]), empty_is_error=True)
        self.decoders = {
            topic: decoder_for(fmt if fmt in FORMATS else "auto")
            for topic, fmt in config["topics"].items()
        }
        self.epochs: dict[Any, int] = {}
        self.commands: list[tuple[bytes, Any]] = []
        self.wake = asyncio.Event()
        self.closed = False

    async def read_commands(self, reader: asyncio.StreamReader) -> None:
        while (got := await read_frame(reader)) is not None:
            kind, payload = got
            self.commands.append((kind, orjson.loads(payload)))
            self.wake.set()
        self.closed = True
        self.wake.set()

    def error(self, what: str, exc: BaseException) -> None:
        detail = str(exc).strip()
        text = f"{what}: {type(exc).__name__}" + (f": {detail}" if detail else "")
        self.writer.write(frame(b"E", text.encode()))

    def apply(self, consumer: Any) -> None:
        """The commands received so far, in order (only ever between two polls)."""
        commands, self.commands = self.commands, []
        for kind, body in commands:
            if kind == b"A":
                tps = {TopicPartition(t, p): (o, e) for t, p, o, e in body}
                consumer.assign(list(tps))
                self.epochs = {tp: e for tp, (_, e) in tps.items()}
                for tp, (offset, _) in tps.items():
                    consumer.seek(tp, offset)
            elif kind == b"S":
                topic, partition, offset, epoch = body
                tp = TopicPartition(topic, partition)
                if tp in self.epochs:
                    consumer.seek(tp, offset)
                    self.epochs[tp] = epoch

    def judge(self, topic: str, msgs: Sequence[Any]) -> bytes:
        decoder = self.decoders[topic]  # only configured topics are ever assigned
        codes = bytearray(len(msgs))
        for i, msg in enumerate(msgs):
            try:
                codes[i] = judge(decode_bytes(msg.value, decoder, self.limits))
            except Exception:  # the loop decodes it and reports whatever is wrong
                codes[i] = DECODE
        return bytes(codes)

    def highwater(self, consumer: Any) -> Highwater:
        marks = ((tp, consumer.highwater(tp)) for tp in self.epochs)
        return [(tp.topic, tp.partition, high) for tp, high in marks if high is not None]

    async def run(self) -> None:
        config = self.config
        delay = float(config["backoff_initial"])
        consumer: AIOKafkaConsumer | None = None
        last_high = 0.0
        try:
            while not self.closed:
                if consumer is None:
                    consumer = AIOKafkaConsumer(
                        bootstrap_servers=config["bootstrap"],
                        **client_kwargs(config["client"]),
                        **config["consumer"],
                        group_id=None,
                        enable_auto_commit=False,
                        auto_offset_reset=config["auto_offset_reset"],
                    )
                    try:
                        await consumer.start()
                    except (KafkaError, OSError) as exc:
                        self.error("kafka worker could not connect", exc)
                        await consumer.stop()
                        consumer = None
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, float(config["backoff_max"]))
                        continue
                    delay = float(config["backoff_initial"])
                    self.epochs = {}
                self.apply(consumer)
                if not self.epochs:
                    self.wake.clear()
                    if not self.commands and not self.closed:
                        await self.wake.wait()
                    continue
                epochs = dict(self.epochs)
                try:
                    polled = await consumer.getmany(
                        timeout_ms=int(config["poll_ms"]), max_records=int(config["max_batch"])
                    )
                except KafkaError as exc:
                    self.error("kafka worker fetch failed", exc)
                    await asyncio.sleep(delay)
                    continue
                parts = [
                    (tp.topic, tp.partition, epochs[tp], msgs, self.judge(tp.topic, msgs))
                    for tp, msgs in polled.items()
                    if msgs and tp in epochs
                ]
                now = time.monotonic()
                if parts:
                    self.writer.write(encode_batch(parts, self.highwater(consumer)))
                    last_high = now
                elif now - last_high >= _HIGHWATER_EVERY:
                    self.writer.write(frame(b"H", orjson.dumps(self.highwater(consumer))))
                    last_high = now
                await self.writer.drain()  # the parent reads as fast as it stores
        finally:
            if consumer is not None:
                await consumer.stop()


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, sys.stdout.buffer
    )
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    first = await read_frame(reader)
    if first is None or first[0] != b"C":
        return
    worker = _Worker(orjson.loads(first[1]), writer)
    commands = asyncio.create_task(worker.read_commands(reader))
    try:
        await worker.run()
    finally:
        commands.cancel()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with contextlib.suppress(BrokenPipeError, ConnectionError, KeyboardInterrupt):
        asyncio.run(_serve())


# -- the parent's side ------------------------------------------------------------------------


class FetchWorker:
    """A fetch worker process, the commands sent to it and the batches read from it."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._config = orjson.dumps(dict(config))  # fails here if an option is not JSON
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[tuple[list[Part], Highwater] | None] = asyncio.Queue(_QUEUE)
        self.highwater: dict[tuple[str, int], int] = {}
        self.last_error: str | None = None

    @property
    def alive(self) -> bool:
        """The process runs (what it sent before it went away may still be read)."""
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "streams.kafka_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._send(b"C", self._config)
        self._reader = asyncio.create_task(self._read(self._proc))

    def assign(self, parts: Iterable[tuple[str, int, int, int]]) -> None:
        """Fetch exactly these (topic, partition, offset, epoch) from now on."""
        self._send(b"A", orjson.dumps(list(parts)))

    def seek(self, topic: str, partition: int, offset: int, epoch: int) -> None:
        self._send(b"S", orjson.dumps([topic, partition, offset, epoch]))

    def _send(self, kind: bytes, payload: bytes) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            return  # a new worker is given the whole assignment when it starts
        with contextlib.suppress(ConnectionError, RuntimeError):
            proc.stdin.write(frame(kind, payload))

    async def next(self, timeout: float) -> list[Part] | None:
        """The next batch's parts; None if none came within `timeout`. WorkerGone once
        everything the worker sent has been read and it is not running."""
        if self._queue.empty() and (self._reader is None or self._reader.done()):
            raise WorkerGone("kafka fetch worker is not running")
        try:
            got = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None
        if got is None:
            raise WorkerGone("kafka fetch worker went away")
        parts, high = got
        self._note_highwater(high)
        return parts

    def _note_highwater(self, high: Highwater) -> None:
        for topic, partition, mark in high:
            self.highwater[(topic, partition)] = mark

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        try:
            while (got := await read_frame(proc.stdout)) is not None:
                kind, payload = got
                if kind == b"B":
                    await self._queue.put(decode_batch(payload))
                elif kind == b"H":
                    self._note_highwater(orjson.loads(payload))
                elif kind == b"E":
                    text = payload.decode("utf-8", "replace")
                    log.warning("%s", text)
                    self.last_error = text
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("kafka fetch worker output unreadable: %s: %s", type(exc).__name__, exc)
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)
            if proc.returncode is None:
                proc.kill()

    async def stop(self) -> None:
        """End the worker at once: it holds no state (no group, no offsets) worth a goodbye."""
        proc, self._proc = self._proc, None
        reader, self._reader = self._reader, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            if proc.stdout is not None:
                # Read to the end, so the pipe (and the transport) is closed, not left to GC.
                with contextlib.suppress(TimeoutError, ConnectionError):
                    await asyncio.wait_for(proc.stdout.read(), 5)
            await proc.wait()


if __name__ == "__main__":
    main()
