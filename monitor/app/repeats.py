"""Repeated log lines during an outage: the first passes, then one summary per interval.

A broker that is away makes the Kafka client log the same failure on every retry (hundreds of
lines in seconds). The first line says what changed; after that one line per interval says
how many more came, so the log stays readable and the outage stays visible.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

# The loggers whose retries repeat: the Kafka client and Driftline's own Kafka source.
NOISY = ("aiokafka", "driftline.kafka")


@dataclass
class _Seen:
    last_passed: float
    suppressed: int = 0


class RepeatFilter(logging.Filter):
    """Lets a repeated message (same logger, same text) through once per `interval` seconds,
    the passing one saying how many were held back meanwhile."""

    def __init__(
        self,
        interval: float = 60.0,
        prefixes: tuple[str, ...] = NOISY,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 1000,
    ) -> None:
        super().__init__()
        self.interval = interval
        self.prefixes = prefixes
        self.clock = clock
        self.max_keys = max_keys
        self._seen: dict[tuple[str, str], _Seen] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        key = (record.name, record.getMessage())
        now = self.clock()
        seen = self._seen.get(key)
        if seen is None:
            if len(self._seen) >= self.max_keys:  # bounded: forget the oldest
                self._seen.pop(next(iter(self._seen)))
            self._seen[key] = _Seen(now)
            return True
        if now - seen.last_passed < self.interval:
            seen.suppressed += 1
            return False
        if seen.suppressed:
            record.msg = (
                f"{record.getMessage()} (and {seen.suppressed} more times in the last "
                f"{now - seen.last_passed:.0f} s)"
            )
            record.args = None
        seen.last_passed, seen.suppressed = now, 0
        return True


def quiet_repeats(interval: float = 60.0) -> None:
    """Install a RepeatFilter on the root logger's handlers (call after logging is set up)."""
    flt = RepeatFilter(interval)
    for handler in logging.getLogger().handlers:
        handler.addFilter(flt)
