"""Read-only triage in a worker process, so most records are never decoded on the event loop.

Most of a CloudTrail stream is read-only calls (Describe*, Get*, List*: about 80% of the
real invictus logs), and a read-only or failed read-only call can never be drift nor is it
stored. Parsing such a record only to drop it is most of what a consumer spends on it, so a
Kafka consumer sends each polled batch's raw values to a worker process first. The worker
parses them and answers one byte per value: decode it here (0), or it is one read-only
change (1) or one failed read-only change (2). Only the values marked 0 are decoded on the
loop; the others become `SkippedChange` items, counted exactly as the detector would have
counted them. A value the worker cannot judge (bad JSON, several records, anything not a
single read-only change) is marked 0, so errors and poison records are found on the loop as
before.

The wire format is plain bytes on the worker's stdin and stdout (no pickle, no threads):
request `<I n> <n format bytes> <n x <I length>> <values...>` (length 0xFFFFFFFF for no
value), answer `<n code bytes>`. Answers come back in request order.

Run as `python -m streams.triage MAX_RECORD_BYTES`; it exits when its stdin closes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import struct
import sys
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from monitor.detect import SKIP_FAILED, SKIP_READ_ONLY
from monitor.model import ChangeEvent
from streams.decode import Decoded, SkippedChange

log = logging.getLogger("driftline.triage")

DECODE, READ_ONLY, FAILED = 0, 1, 2
SKIPPED = {READ_ONLY: SkippedChange(SKIP_READ_ONLY), FAILED: SkippedChange(SKIP_FAILED)}
NO_VALUE = 0xFFFFFFFF
_COUNT = struct.Struct("<I")


class TriageUnavailable(Exception):
    """The worker is not running or went away; decode on the loop instead."""


def encode_request(formats: bytes, values: Sequence[bytes | None]) -> bytes:
    lengths = [NO_VALUE if v is None else len(v) for v in values]
    return b"".join(
        (
            _COUNT.pack(len(values)),
            formats,
            struct.pack(f"<{len(values)}I", *lengths),
            *(v for v in values if v is not None),
        )
    )


def judge(items: Iterator[Decoded]) -> int:
    """The code for what one record value decodes to (what the loop would conclude)."""
    first = next(items, None)
    if type(first) is not ChangeEvent or next(items, None) is not None:
        return DECODE
    if first.read_only is not True:
        return DECODE
    return FAILED if first.error_code else READ_ONLY


def serve(inp: BinaryIO, out: BinaryIO, formats: Sequence[str], max_bytes: int) -> None:
    """The worker loop: answer requests until the input closes."""
    from streams.kafka import decode_value, decoder_for  # not at the top: kafka imports us

    decoders = [decoder_for(f) for f in formats]

    def read(n: int) -> bytes | None:
        data = inp.read(n) if n else b""
        return data if data is not None and len(data) == n else None

    while True:
        head = read(_COUNT.size)
        if head is None:
            return
        (n,) = _COUNT.unpack(head)
        fmts = read(n)
        raw_lengths = read(4 * n)
        if fmts is None or raw_lengths is None:
            return
        lengths = struct.unpack(f"<{n}I", raw_lengths)
        data = read(sum(x for x in lengths if x != NO_VALUE))
        if data is None:
            return
        codes = bytearray(n)
        offset = 0
        for i, length in enumerate(lengths):
            value = None
            if length != NO_VALUE:
                value = data[offset : offset + length]
                offset += length
            try:
                codes[i] = judge(decode_value(value, decoders[fmts[i]], max_bytes))
            except Exception:  # the loop decodes it and reports whatever is wrong
                codes[i] = DECODE
        out.write(codes)
        out.flush()


class TriageWorker:
    """A worker process and the requests waiting for its answers, in order."""

    def __init__(self, formats: Sequence[str], max_bytes: int) -> None:
        self.formats = tuple(formats)
        self.max_bytes = max_bytes
        self._proc: asyncio.subprocess.Process | None = None
        self._waiting: collections.deque[tuple[int, asyncio.Future[bytes]]] = collections.deque()
        self._wake = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "streams.triage",
            str(self.max_bytes),
            *self.formats,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read_answers(self._proc))

    def submit(self, formats: bytes, values: Sequence[bytes | None]) -> asyncio.Future[bytes]:
        """Send one batch; the future gets one code per value (or TriageUnavailable)."""
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        proc = self._proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            fut.set_exception(TriageUnavailable("triage worker not running"))
            return fut
        try:
            proc.stdin.write(encode_request(formats, values))
        except (ConnectionError, RuntimeError) as exc:
            fut.set_exception(TriageUnavailable(f"triage worker gone: {exc}"))
            return fut
        self._waiting.append((len(values), fut))
        self._wake.set()
        return fut

    async def _read_answers(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None and proc.stdin is not None
        try:
            while True:
                while not self._waiting:
                    self._wake.clear()
                    await self._wake.wait()
                n, fut = self._waiting[0]
                await proc.stdin.drain()
                codes = await proc.stdout.readexactly(n)
                self._waiting.popleft()
                if not fut.done():
                    fut.set_result(codes)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("triage worker failed: %s: %s", type(exc).__name__, exc)
        finally:
            self._fail_waiting()

    def _fail_waiting(self) -> None:
        while self._waiting:
            _, fut = self._waiting.popleft()
            if not fut.done():
                fut.set_exception(TriageUnavailable("triage worker went away"))

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        reader, self._reader = self._reader, None
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        self._fail_waiting()


def main() -> None:
    max_bytes, formats = int(sys.argv[1]), sys.argv[2:]
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        serve(sys.stdin.buffer, sys.stdout.buffer, formats, max_bytes)


if __name__ == "__main__":
    main()
