"""Timestamps as found in the wild, normalised to ISO 8601 UTC (`2023-07-10T12:16:15Z`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from monitor.types import DecodeError


def _from_epoch(value: float) -> datetime:
    # Falco writes nanoseconds, some tools milliseconds, most seconds.
    if value > 1e17:
        value /= 1e9
    elif value > 1e14:
        value /= 1e6
    elif value > 1e11:
        value /= 1e3
    return datetime.fromtimestamp(value, UTC)


def format_time(dt: datetime) -> str:
    dt = dt.astimezone(UTC)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def normalise_time(value: Any) -> str:
    """ISO 8601 UTC text for a timestamp string or epoch number; DecodeError if unreadable."""
    if isinstance(value, str):
        # Fast path: CloudTrail's own format is already canonical.
        if len(value) == 20 and value[10] == "T" and value[19] == "Z":
            return value
        text = value.strip()
        if not text:
            raise DecodeError("bad timestamp", "empty")
        if text.isdigit():
            return format_time(_from_epoch(float(text)))
        if text.endswith("Z") or text.endswith("z"):
            text = text[:-1] + "+00:00"
        text = text.replace(" ", "T", 1) if "T" not in text else text
        # Python's parser takes at most microseconds; Falco writes nanoseconds.
        if "." in text:
            head, _, rest = text.partition(".")
            digits = "".join(c for c in rest if c.isdigit())
            tz = rest[len(digits) :]
            text = f"{head}.{digits[:6]}{tz}"
        if len(text) >= 5 and text[-5] in "+-" and text[-3] != ":" and text[-4:].isdigit():
            text = text[:-2] + ":" + text[-2:]
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise DecodeError("bad timestamp", repr(value)) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return format_time(dt)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return format_time(_from_epoch(float(value)))
        except (OverflowError, OSError, ValueError):
            raise DecodeError("bad timestamp", repr(value)) from None
    raise DecodeError("bad timestamp", repr(value))
