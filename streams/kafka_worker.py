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

Wire format (both directions): frames `<I length><kind byte><payload>`.
- parent -> worker: `C` config (JSON, first frame; it holds credentials, so it is never put
  on the command line), `A` assign (JSON list of [topic, partition, offset, epoch]; replaces
  the whole assignment), `S` seek (JSON [topic, partition, offset, epoch]).
- worker -> parent: `B` batch (`<I header length>`, a JSON header, then the bytes: per
  partition its codes, then the key and value of each DECODE record), `H` highwater marks
  only (JSON), `E` an error message (UTF-8).

Run as `python -m streams.kafka_worker`; it exits when its stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from streams.triage import DECODE, judge

log = logging.getLogger("driftline.kafka.worker")

_LEN = struct.Struct("<I")
_NONE = -1  # the length of a missing key or value
_HIGHWATER_EVERY = 1.0  # seconds between highwater-only frames while nothing is fetched
_QUEUE = 4  # batches parsed ahead of the consumer loop (the pipe holds more)


class Record(NamedTuple):
    """What the loop needs of one record: decoding it and dead-lettering it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(slots=True)
class Part:
    """One partition's records from one poll.

    `codes` holds one triage code per record (None: decode every record); `msgs` holds the
    records to decode, in offset order (all of them when `codes` is None, else only those
    whose code is DECODE).
    """

    topic: str
    partition: int
    epoch: int
    first: int
    last: int
    count: int
    codes: bytes | None
    msgs: Sequence[Any]


class WorkerGone(Exception):
    """The worker process exited or its output could not be read."""


def _frame(kind: bytes, payload: bytes) -> bytes:
    return _LEN.pack(len(payload) + 1) + kind + payload


def _blob(data: bytes | None) -> tuple[int, bytes]:
    return (_NONE, b"") if data is None else (len(data), data)


Highwater = list[tuple[str, int, int]]  # (topic, partition, log end offset)


def encode_batch(
    parts: Iterable[tuple[str, int, int, Sequence[Any], bytes]], highwater: Highwater
) -> bytes:
    """A `B` frame: per partition (topic, partition, epoch, records, codes)."""
    header: list[Any] = []
    chunks: list[bytes] = []
    for topic, partition, epoch, msgs, codes in parts:
        offsets: list[int] = []
        klens: list[int] = []
        vlens: list[int] = []
        chunks.append(codes)
        for msg, code in zip(msgs, codes, strict=True):
            if code != DECODE:
                continue
            offsets.append(msg.offset)
            klen, key = _blob(msg.key)
            vlen, value = _blob(msg.value)
            klens.append(klen)
            vlens.append(vlen)
            chunks.append(key)
            chunks.append(value)
        first, last = msgs[0].offset, msgs[-1].offset
        header.append([topic, partition, epoch, first, last, len(msgs), offsets, klens, vlens])
    head = orjson.dumps({"parts": header, "high": highwater})
    return _frame(b"B", _LEN.pack(len(head)) + head + b"".join(chunks))


def decode_batch(payload: bytes) -> tuple[list[Part], Highwater]:
    """The parts and highwater marks of a `B` frame's payload."""
    (hlen,) = _LEN.unpack_from(payload)
    head = orjson.loads(payload[4 : 4 + hlen])
    pos = 4 + hlen
    parts: list[Part] = []
    for topic, partition, epoch, first, last, count, offsets, klens, vlens in head["parts"]:
        codes = payload[pos : pos + count]
        pos += count
        msgs: list[Record] = []
        for offset, klen, vlen in zip(offsets, klens, vlens, strict=True):
            key = None
            if klen != _NONE:
                key = payload[pos : pos + klen]
                pos += klen
            value = None
            if vlen != _NONE:
                value = payload[pos : pos + vlen]
                pos += vlen
            msgs.append(Record(topic, partition, offset, key, value))
        parts.append(Part(topic, partition, epoch, first, last, count, codes, msgs))
    return parts, head["high"]


# -- the worker process ----------------------------------------------------------------------


async def _read_frame(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    try:
        (n,) = _LEN.unpack(await reader.readexactly(_LEN.size))
        data = await reader.readexactly(n)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return data[:1], data[1:]


class _Worker:
    def __init__(self, config: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        from streams.kafka import FORMATS, decode_value, decoder_for

        self.config = config
        self.writer = writer
        self.decode_value = decode_value
        self.max_bytes = int(config["max_record_bytes"])
        self.decoders = {
            topic: decoder_for(fmt if fmt in FORMATS else "auto")
            for topic, fmt in config["topics"].items()
        }
        self.epochs: dict[Any, int] = {}
        self.commands: list[tuple[bytes, Any]] = []
        self.wake = asyncio.Event()
        self.closed = False

    async def read_commands(self, reader: asyncio.StreamReader) -> None:
        while (frame := await _read_frame(reader)) is not None:
            kind, payload = frame
            self.commands.append((kind, orjson.loads(payload)))
            self.wake.set()
        self.closed = True
        self.wake.set()

    def error(self, what: str, exc: BaseException) -> None:
        detail = str(exc).strip()
        text = f"{what}: {type(exc).__name__}" + (f": {detail}" if detail else "")
        self.writer.write(_frame(b"E", text.encode()))

    def apply(self, consumer: Any) -> None:
        """The commands received so far, in order (only ever between two polls)."""
        from aiokafka import TopicPartition

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
                codes[i] = judge(self.decode_value(msg.value, decoder, self.max_bytes))
            except Exception:  # the loop decodes it and reports whatever is wrong
                codes[i] = DECODE
        return bytes(codes)

    def highwater(self, consumer: Any) -> Highwater:
        marks = ((tp, consumer.highwater(tp)) for tp in self.epochs)
        return [(tp.topic, tp.partition, high) for tp, high in marks if high is not None]

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.errors import KafkaError

        from streams.kafka import client_kwargs

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
                    self.writer.write(_frame(b"H", orjson.dumps(self.highwater(consumer))))
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
    first = await _read_frame(reader)
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
            proc.stdin.write(_frame(kind, payload))

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
            while (frame := await _read_frame(proc.stdout)) is not None:
                kind, payload = frame
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
