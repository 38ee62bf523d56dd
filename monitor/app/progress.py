"""A progress line on a terminal; silent everywhere else."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Redraws `[####      ] 42%  12,345 records  3 drifts` at most five times a second."""

    def __init__(self, total_bytes: int, stream: TextIO | None = None, min_bytes: int = 1 << 20):
        self.stream = stream or sys.stderr
        self.total = total_bytes
        self.enabled = self.stream.isatty() and total_bytes >= min_bytes
        self._last = 0.0

    def update(self, done_bytes: int, records: int, drifts: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.2:
            return
        self._last = now
        frac = min(1.0, done_bytes / self.total) if self.total else 1.0
        bar = "#" * int(frac * 30)
        self.stream.write(f"\r[{bar:<30}] {frac:4.0%}  {records:,} records  {drifts:,} drifts")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 72 + "\r")
            self.stream.flush()
