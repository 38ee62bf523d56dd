"""CloudTrail log files: the persisted cursor, bounded decoding and the polling loop.

`TrailDirSource` (streams.trail_dir) and `TrailS3Source` (streams.trail_s3) only list and
read files; everything that decides what is done lives here, so both keep one contract:
a file is recorded as done only after `on_items` returned for all of its records, and the
cursor is replaced atomically, so a restart neither misses nor re-reads a file.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import re
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from monitor.clock import utc_now
from monitor.types import Clock, Decoded, DecodeError, OnItems
from streams.documents import InputError, Limits, decode_bytes
from streams.trail_cursor import NAME_TIME_RE, TrailCursor, write_atomic

log = logging.getLogger("driftline.trail")


REGION = r"[a-z]{2}(?:-[a-z]+)+-\d+"
ACCOUNT_RE = re.compile(r"\d{12}")
ORG_RE = re.compile(r"o-[a-z0-9]{10,32}")
REGION_RE = re.compile(REGION)
# The folder CloudTrail writes one account's events of one region into (organisation
# trails add the org id). Everything below it is YYYY/MM/DD/<name>, and those relative
# keys sort by delivery time, which is what lets one high-water mark cover the folder.
STREAM_ROOT_RE = re.compile(
    rf"(?:^|/)AWSLogs/(?:o-[a-z0-9]{{10,32}}/)?\d{{12}}/CloudTrail/{REGION}"
)
DATED_KEY_RE = re.compile(r"\d{4}/\d{2}/\d{2}/[^/]+\.json(?:\.gz)?")


class Vanished(Exception):
    """The file was listed but is gone now; it will not be listed again."""


class StillWriting(Exception):
    """The file changed while it was read; read it again on the next poll."""


def _name_label(key: str) -> str:
    m = NAME_TIME_RE.search(key.rsplit("/", 1)[-1])
    return m.group(1) if m else ""


@dataclass(frozen=True, slots=True)
class TrailFile:
    """One listed log file: the stream (folder) it belongs to, its key in it, and its size."""

    stream: str
    key: str
    location: str
    size: int
    version: str  # what changes while the file is rewritten: mtime for files, ETag in S3

    @property
    def order(self) -> tuple[str, str, str]:
        """Delivery-time order across streams, name order within one."""
        return (_name_label(self.key), self.stream, self.key)


# --- decoding --------------------------------------------------------------------------


def decode_file(data: bytes, name: str, limit: int) -> tuple[list[Decoded], DecodeError | None]:
    """All decoded items of one file, and the first error that concerns the file itself."""
    items = decode_bytes(data, "auto", Limits(limit, unit="file", growing=True), name)
    file_error = next((i for i in items if isinstance(i, InputError)), None)
    return items, file_error


# --- the shared polling source ---------------------------------------------------------


@dataclass(slots=True)
class _Incomplete:
    size: int
    version: str
    since: float


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]


class TrailFileSource(ABC):
    """The polling loop, cursor and bookkeeping shared by the directory and S3 sources."""

    kind = "trail"
    # S3 objects appear whole, so a file that does not decode is corrupt, not unfinished.
    atomic_files = False

    def __init__(
        self,
        on_items: OnItems,
        cursor_path: Path,
        *,
        source_id: str,
        poll_interval: float,
        max_files_per_poll: int = 500,
        max_file_bytes: int = 256 * 1024 * 1024,
        max_batch: int = 2000,
        incomplete_grace: float = 60.0,
        settle_seconds: float = 900.0,
        max_recent: int = 5000,
        since: str | None = None,
        stop_timeout: float = 30.0,
        clock: Clock = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError(f"poll_interval: must be positive, got {poll_interval}")
        for name, value in (
            ("max_files_per_poll", max_files_per_poll),
            ("max_file_bytes", max_file_bytes),
            ("max_batch", max_batch),
            ("max_recent", max_recent),
        ):
            if value <= 0:
                raise ValueError(f"{name}: must be positive, got {value}")
        self._since_mark = ""
        if since is not None:
            try:
                self._since_mark = datetime.strptime(since, "%Y-%m-%d").strftime("%Y/%m/%d")
            except ValueError:
                raise ValueError(f"since: {since!r} is not a YYYY-MM-DD date") from None
        self.on_items = on_items
        self.poll_interval = poll_interval
        self.max_files_per_poll = max_files_per_poll
        self.max_file_bytes = max_file_bytes
        self.max_batch = max_batch
        self.incomplete_grace = incomplete_grace
        self.stop_timeout = stop_timeout
        self.clock = clock
        self.monotonic = monotonic
        self.cursor = TrailCursor(
            cursor_path, source_id, settle_seconds=settle_seconds, max_recent=max_recent
        )
        self._ready = False
        self._state = "stopped"
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._poll_lock = asyncio.Lock()
        self._polled = asyncio.Condition()
        self._incomplete: dict[tuple[str, str], _Incomplete] = {}
        self._pending = 0
        self.polls = 0
        self.files_done = 0
        self.files_rejected = 0
        self.records = 0
        self.records_rejected = 0
        self.reasons: Counter[str] = Counter()
        self.last_poll: str | None = None
        self.last_error: str | None = None
        self.last_error_at: str | None = None

    # -- what a concrete source provides (called in a worker thread) --

    @abstractmethod
    def _prepare(self) -> None:
        """Check the location and open clients; raise with a clear message if unusable."""

    @abstractmethod
    def _list(self, limit: int) -> list[TrailFile]:
        """Listed files the cursor does not hold as done; at most `limit` per stream."""

    @abstractmethod
    def _read(self, f: TrailFile) -> bytes:
        """The bytes of one file; Vanished if it is gone, StillWriting if it changed."""

    def _start_after(self, stream: str, dated: bool) -> str:
        """Where listing a stream starts: its mark, or `since` for a new dated stream."""
        if stream in self.cursor.streams:
            return self.cursor.start_after(stream)
        return self._since_mark if dated else ""

    def _is_done(self, stream: str, key: str) -> bool:
        if stream in self.cursor.streams:
            return self.cursor.is_done(stream, key)
        return "/" in key and key <= self._since_mark

    # -- lifecycle --

    async def start(self) -> None:
        """Load the cursor, check the location, and start polling in the background."""
        if self._task is not None:
            return
        await self._ensure_ready()
        self._stopping.clear()
        self._state = "running"
        self._task = asyncio.create_task(self._run(), name=f"{self.kind}-poller")

    async def stop(self) -> None:
        """Finish the file in hand (so it is recorded) and stop polling."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), self.stop_timeout)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._stopping.clear()  # a later poll_once() or start() works again
        self._state = "stopped"

    async def next_poll(self) -> None:
        """Return when the next poll (started after this call) has finished."""
        async with self._polled:
            await self._polled.wait()

    def status(self) -> dict[str, Any]:
        """State, counts and the last error, for /health."""
        return {
            "kind": self.kind,
            "source": self.cursor.source,
            "state": self._state,
            "polls": self.polls,
            "last_poll": self.last_poll,
            "files_done": self.files_done,
            "files_rejected": self.files_rejected,
            "records": self.records,
            "records_rejected": self.records_rejected,
            "reasons": dict(self.reasons),
            "pending_files": self._pending,
            "retrying_files": len(self._incomplete),
            "streams": len(self.cursor.streams),
            "cursor": str(self.cursor.path),
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }

    # -- polling --

    async def _ensure_ready(self) -> None:
        if not self._ready:
            await asyncio.to_thread(self.cursor.load)
            await asyncio.to_thread(self._prepare)
            self._ready = True

    async def _run(self) -> None:
        while not self._stopping.is_set():
            backlog = False
            try:
                backlog = await self.poll_once() >= self.max_files_per_poll
            except Exception as exc:  # any failure is reported and retried next interval
                self._fail(f"poll failed: {_describe(exc)}")
            if backlog:
                await asyncio.sleep(0)  # let the loop breathe between full polls
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()

    def _fail(self, message: str) -> None:
        log.warning(
            "%s %s: %s", self.kind, self.cursor.source, message, extra={"source": self.kind}
        )
        self.last_error = message
        self.last_error_at = self.clock()
        if self._state == "running":
            self._state = "degraded"

    async def poll_once(self) -> int:
        """List once and handle new files in order; the number of files recorded as done."""
        async with self._poll_lock:
            try:
                await self._ensure_ready()
                return await self._poll()
            finally:
                self.polls += 1
                self.last_poll = self.clock()
                async with self._polled:
                    self._polled.notify_all()

    async def _poll(self) -> int:
        listed = await asyncio.to_thread(self._list, self.max_files_per_poll)
        listed.sort(key=lambda f: f.order)
        pending: dict[str, list[str]] = {}
        for f in listed:
            pending.setdefault(f.stream, []).append(f.key)
        for keys in pending.values():
            keys.sort()
        seen = {(f.stream, f.key) for f in listed}
        for ident in [i for i in self._incomplete if i not in seen]:
            del self._incomplete[ident]
        self._pending = len(listed)
        errors_before = self.last_error_at
        done = 0
        for f in listed[: self.max_files_per_poll]:
            if self._stopping.is_set():
                break
            if await self._handle(f, pending[f.stream]):
                done += 1
                self._pending -= 1
        if self._state == "degraded" and self.last_error_at == errors_before:
            self._state = "running"
        return done

    async def _handle(self, f: TrailFile, pending: list[str]) -> bool:
        ident = (f.stream, f.key)
        file_error: DecodeError | None
        if f.size > self.max_file_bytes:
            file_error = DecodeError("file too large", f"{f.location}: {f.size} bytes")
            items: list[Decoded] = [file_error]
        else:
            try:
                data = await asyncio.to_thread(self._read, f)
            except Vanished:
                self._incomplete.pop(ident, None)
                return False
            except StillWriting:
                self._incomplete[ident] = _Incomplete(f.size, f.version, self.monotonic())
                return False
            except Exception as exc:  # unreadable now (permissions, network): retry, never skip
                self._fail(f"{f.location}: {_describe(exc)}")
                return False
            items, file_error = await asyncio.to_thread(
                decode_file, data, f.location, self.max_file_bytes
            )
            if file_error is not None and self._still_writing(f):
                return False
        for start in range(0, len(items), self.max_batch):
            # Raising here leaves the file unrecorded: it is read again on the next poll.
            await self.on_items(items[start : start + self.max_batch])
        self._incomplete.pop(ident, None)
        self._count(f, items, file_error)
        i = bisect.bisect_left(pending, f.key)
        if i < len(pending) and pending[i] == f.key:
            del pending[i]
        self.cursor.ensure(f.stream, self._since_mark if "/" in f.key else "")
        self.cursor.record(f.stream, f.key, pending[0] if pending else None)
        await asyncio.to_thread(write_atomic, self.cursor.path, self.cursor.dumps())
        return True

    def _still_writing(self, f: TrailFile) -> bool:
        """Whether a file that did not decode may still be growing (then it is retried)."""
        if self.atomic_files:
            return False
        ident = (f.stream, f.key)
        now = self.monotonic()
        seen = self._incomplete.get(ident)
        if seen is None or (seen.size, seen.version) != (f.size, f.version):
            self._incomplete[ident] = _Incomplete(f.size, f.version, now)
            return True
        return now - seen.since < self.incomplete_grace

    def _count(self, f: TrailFile, items: list[Decoded], file_error: DecodeError | None) -> None:
        bad = 0
        for item in items:
            if isinstance(item, DecodeError):
                bad += 1
                self.reasons[item.reason] += 1
        self.records += len(items) - bad
        self.records_rejected += bad
        if file_error is not None:
            self.files_rejected += 1
            log.warning("%s: rejected (%s)", f.location, file_error, extra={"source": self.kind})
        else:
            self.files_done += 1
