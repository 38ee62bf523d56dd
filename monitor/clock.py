"""The default clock and a fixed one for tests (the `Clock` type is in the contract)."""

from __future__ import annotations

from datetime import UTC, datetime

from monitor.types import Clock


def utc_now() -> str:
    """Now as ISO 8601 UTC with milliseconds."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def fixed_clock(value: str) -> Clock:
    return lambda: value
