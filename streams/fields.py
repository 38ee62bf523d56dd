"""Small helpers every audit-log decoder shares."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from monitor.types import DecodeError

T = TypeVar("T")


def text(value: Any) -> str | None:
    """A non-empty string, or None for anything else."""
    return value if isinstance(value, str) and value else None


def decode_each(
    records: Iterable[Any], decode_one: Callable[[Any], T]
) -> Iterator[T | DecodeError]:
    """Each record decoded; a bad one (or a DecodeError met unwrapping) yields its error and
    decoding goes on."""
    for rec in records:
        if isinstance(rec, DecodeError):
            yield rec
            continue
        try:
            yield decode_one(rec)
        except DecodeError as exc:
            yield exc
