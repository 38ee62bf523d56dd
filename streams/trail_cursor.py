"""The trail sources' cursor: per-stream high-water marks, persisted atomically as JSON."""

from __future__ import annotations

import bisect
import contextlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

# The delivery time CloudTrail puts in a log file name.
NAME_TIME_RE = re.compile(r"_(\d{8}T\d{4})(?:\d{2})?Z_")


class CursorError(ValueError):
    """A cursor file that cannot be used (unreadable, or written by another source)."""


def name_time(key: str) -> float | None:
    """The delivery time CloudTrail puts in a log file name, as epoch seconds."""
    m = NAME_TIME_RE.search(key.rsplit("/", 1)[-1])
    if m is None:
        return None
    return datetime.strptime(m.group(1), "%Y%m%dT%H%M").replace(tzinfo=UTC).timestamp()


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: a reader (or a crash) sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # The rename itself must reach the disk, or a power cut could bring back the old cursor.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@dataclass(slots=True)
class StreamPosition:
    """Every key <= mark is done; `done` holds the (sorted) keys above the mark that are."""

    mark: str = ""
    done: list[str] = field(default_factory=list)


class TrailCursor:
    """Per-stream high-water mark plus a bounded list of recent keys, persisted as JSON.

    A key only joins the mark once it is settled (its name time is `settle_seconds`
    older than the newest done key of its stream) and no listed-but-unfinished key lies
    below it, so a file delivered late into the same minute is still seen. `max_recent`
    bounds the list when names carry no time.
    """

    VERSION = 1

    def __init__(
        self, path: Path, source: str, *, settle_seconds: float = 900.0, max_recent: int = 5000
    ) -> None:
        self.path = path
        self.source = source
        self.settle_seconds = settle_seconds
        self.max_recent = max_recent
        self.streams: dict[str, StreamPosition] = {}

    def load(self) -> None:
        """Read the cursor file if there is one; a foreign or damaged file is an error."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise CursorError(f"cursor {self.path}: unreadable ({exc.strerror})") from None
        try:
            doc = orjson.loads(raw)
            if doc.get("version") != self.VERSION:
                raise ValueError(f"version {doc.get('version')!r}, expected {self.VERSION}")
            streams = {
                str(name): StreamPosition(str(pos.get("mark", "")), sorted(map(str, pos["done"])))
                for name, pos in doc["streams"].items()
            }
            source = doc["source"]
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
            raise CursorError(f"cursor {self.path}: not a trail cursor ({exc})") from None
        if source != self.source:
            raise CursorError(
                f"cursor {self.path} belongs to {source}, not {self.source}; give this source "
                "its own cursor file (deleting it makes the source read everything again)"
            )
        self.streams = streams

    def ensure(self, stream: str, initial_mark: str = "") -> StreamPosition:
        """The position of a stream, created at `initial_mark` on first sight."""
        pos = self.streams.get(stream)
        if pos is None:
            pos = self.streams[stream] = StreamPosition(initial_mark)
        return pos

    def start_after(self, stream: str) -> str:
        pos = self.streams.get(stream)
        return pos.mark if pos else ""

    def is_done(self, stream: str, key: str) -> bool:
        pos = self.streams.get(stream)
        if pos is None:
            return False
        if key <= pos.mark:
            return True
        i = bisect.bisect_left(pos.done, key)
        return i < len(pos.done) and pos.done[i] == key

    def record(self, stream: str, key: str, lowest_pending: str | None) -> None:
        """Mark a key done, then fold what is settled (and below `lowest_pending`) into the mark."""
        pos = self.ensure(stream)
        if key <= pos.mark:
            return
        i = bisect.bisect_left(pos.done, key)
        if i == len(pos.done) or pos.done[i] != key:
            pos.done.insert(i, key)
        newest = name_time(pos.done[-1])
        fold = 0
        for n, k in enumerate(pos.done):
            if lowest_pending is not None and k > lowest_pending:
                break
            t = name_time(k)
            settled = t is not None and newest is not None and t <= newest - self.settle_seconds
            if not settled and len(pos.done) - n <= self.max_recent:
                break
            fold = n + 1
        if fold:
            pos.mark = pos.done[fold - 1]
            del pos.done[:fold]

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "version": self.VERSION,
                "source": self.source,
                "streams": {
                    name: {"mark": pos.mark, "done": pos.done}
                    for name, pos in sorted(self.streams.items())
                },
            }
        )

    def save(self) -> None:
        write_atomic(self.path, self.dumps())
