"""Match keys over a drift (globs, field path prefixes, exact choices) and their index.

A rule set of thousands must not cost thousands of checks per drift: each match is filed
under one of its literal keys (the most selective it has), so a drift looks up one bucket
per key in use and checks only what is in them; matches with no literal key are scanned.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fnmatch import translate
from typing import Any, Generic, TypeVar

from monitor.types import DriftKind, Severity

# What a suppression, custom rule or disabled rule may match on.
MATCH_KEYS = (
    "resource_address",
    "resource_type",
    "resource_id",
    "field",
    "kind",
    "actor",
    "account",
    "region",
    "event_name",
    "severity",
    "tag",
)
# Keys a match may be filed under, most selective first.
ANCHORS = (
    "resource_id",
    "resource_address",
    "event_name",
    "resource_type",
    "actor",
    "account",
    "region",
    "tag",
    "severity",
    "kind",
)
CHOICES = {
    "kind": frozenset(k.value for k in DriftKind),
    "severity": frozenset(s.value for s in Severity),
}
_GLOB = re.compile(r"[*?\[]")
MAX_PATTERN = 1024

Getter = Callable[[str], tuple[str, ...]]  # a key's values for the thing being matched
T = TypeVar("T")


class MatchError(ValueError):
    """A match that cannot work; the message names the key."""


def _predicate(key: str, pattern: str) -> Callable[[str], bool]:
    if key == "field":
        if not _GLOB.search(pattern):
            prefix = pattern + "."
            return lambda v: v == pattern or v.startswith(prefix)
        # A path prefix: the pattern covers the field or any of its parents.
        return re.compile(translate(pattern)[:-2] + r"(?:\..*)?\Z", re.S).match  # type: ignore[return-value]
    if key == "tag" and "=" not in pattern:
        pattern += "=*"  # a bare tag key matches whatever its value
    if not _GLOB.search(pattern):
        return pattern.__eq__
    return re.compile(translate(pattern)).match  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Match:
    """Every given key must match (an empty match is refused at parse time)."""

    keys: tuple[tuple[str, str], ...]  # (key, pattern), as given
    checks: tuple[tuple[str, Callable[[str], bool]], ...]

    def matches(self, get: Getter) -> bool:
        return all(any(ok(v) for v in get(key)) for key, ok in self.checks)

    def anchor(self) -> tuple[str, str] | None:
        """The key and literal value this match is filed under (None: scanned)."""
        given = dict(self.keys)
        for key in ANCHORS:
            value = given.get(key)
            if value is None or _GLOB.search(value):
                continue
            if key == "tag" and "=" not in value:
                continue
            return key, value
        return None

    def as_dict(self) -> dict[str, str]:
        return dict(self.keys)


def parse_match(raw: Any, allowed: Iterable[str] = MATCH_KEYS) -> Match:
    """A match from its JSON body; MatchError names what is wrong."""
    allowed = tuple(allowed)
    if not isinstance(raw, Mapping) or not raw:
        raise MatchError(f"match must be an object with at least one of: {', '.join(allowed)}")
    keys: list[tuple[str, str]] = []
    for key, value in raw.items():
        if key not in allowed:
            raise MatchError(f"match.{key}: unknown key (allowed: {', '.join(allowed)})")
        if not isinstance(value, str) or not value or len(value) > MAX_PATTERN:
            raise MatchError(f"match.{key}: must be a non-empty string")
        choices = CHOICES.get(key)
        if choices is not None and value not in choices:
            raise MatchError(f"match.{key}: must be one of {', '.join(sorted(choices))}")
        keys.append((key, value))
    keys.sort()
    return Match(tuple(keys), tuple((k, _predicate(k, p)) for k, p in keys))


class MatchIndex(Generic[T]):
    """Items filed by their match's anchor; `first` is the earliest item whose match holds."""

    __slots__ = ("anchored", "scan")

    def __init__(self, items: Iterable[tuple[Match, T]] = ()) -> None:
        self.anchored: dict[str, dict[str, list[tuple[int, Match, T]]]] = {}
        self.scan: list[tuple[int, Match, T]] = []
        for pos, (match, item) in enumerate(items):
            anchor = match.anchor()
            if anchor is None:
                self.scan.append((pos, match, item))
            else:
                key, value = anchor
                self.anchored.setdefault(key, {}).setdefault(value, []).append((pos, match, item))

    def __bool__(self) -> bool:
        return bool(self.anchored or self.scan)

    def first(self, get: Getter, accept: Callable[[T], bool] | None = None) -> T | None:
        """The earliest-added item whose match holds for `get` (and that `accept`s)."""
        best: tuple[int, Match, T] | None = None
        for key, table in self.anchored.items():
            for value in get(key):
                for entry in table.get(value, ()):
                    if (
                        (best is None or entry[0] < best[0])
                        and entry[1].matches(get)
                        and (accept is None or accept(entry[2]))
                    ):
                        best = entry
        for entry in self.scan:
            if best is not None and entry[0] > best[0]:
                break
            if entry[1].matches(get) and (accept is None or accept(entry[2])):
                best = entry
                break
        return best[2] if best else None
