"""What every state backend offers: a cheap listing with change signals, and a fetch."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

# A bound on one downloaded state: large estates run to tens of MB, never to this.
MAX_STATE_BYTES = 512 * 1024 * 1024


class Unreachable(Exception):
    """A backend could not be asked (network, credentials, permissions); retried later."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One state a listing found: where it is, its workspace, and its change signal."""

    key: str  # the state's own location: a path, s3://bucket/key, a URL, tfc://org/ws
    workspace: str
    signal: str  # ETag, LastModified, mtime+size, body hash or state version id
    modified: float | None = None  # seconds since the epoch, when the backend says
    body: bytes | None = None  # set when the listing already had to download it (HTTP)


class Backend(Protocol):
    """A blocking client for one source; the manager calls it from worker threads."""

    def listing(self) -> list[Entry]:
        """Every state the source holds now; Unreachable if the backend cannot be asked."""
        ...

    def fetch(self, entry: Entry) -> bytes:
        """The bytes of one state the listing returned."""
        ...


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A key glob: `**` crosses folders, `*` and `?` stay inside one."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def literal_prefix(pattern: str) -> str:
    """The folder part of a glob before its first wildcard (what a listing can start at)."""
    cut = min((pattern.find(c) for c in "*?[" if c in pattern), default=len(pattern))
    return pattern[: pattern.rfind("/", 0, cut) + 1]
