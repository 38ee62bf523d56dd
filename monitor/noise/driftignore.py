"""`.driftignore`, driftctl's format: which drifts nobody wants to hear about.

One rule a line: `type.id` ignores a resource, `type.id.path.to.field` one of its fields
(each path segment compared without case, `*` for any one segment, a prefix covering what
is below it); `*` is a wildcard in a type or an id (`**` is `*`); a bare `type` or `*`
covers every id; `\\.` is a dot inside a name and `\\\\` a backslash; `!` un-ignores what an
earlier line ignored (the last line that matches decides); `#` starts a comment line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import translate
from pathlib import Path

from monitor.types import Drift


class IgnoreFileError(ValueError):
    """The ignore file cannot be read."""


@dataclass(frozen=True, slots=True)
class IgnoreLine:
    number: int
    negate: bool
    resource_type: re.Pattern[str]
    resource_id: re.Pattern[str]
    path: tuple[str, ...]  # lower-cased segments, "*" for any; empty: the whole resource

    def matches(self, drift: Drift) -> bool:
        if not (
            self.resource_type.match(drift.resource_type)
            and self.resource_id.match(drift.resource_id)
        ):
            return False
        if not self.path:
            return True
        if drift.field is None:
            return False
        parts = drift.field.lower().split(".")
        if len(parts) < len(self.path):
            return False
        return all(p == "*" or p == f for p, f in zip(self.path, parts, strict=False))


def split_line(line: str) -> list[str]:
    """Segments split on unescaped dots, with `\\.` and `\\\\` unescaped."""
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line) and line[i + 1] in ".\\":
            cur.append(line[i + 1])
            i += 2
            continue
        if ch == ".":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def _glob(pattern: str) -> re.Pattern[str]:
    # Only `*` is special in driftctl's names; brackets and `?` are literal.
    return re.compile(translate(re.sub(r"([?\[\]])", r"[\1]", pattern)), re.S)


@dataclass(frozen=True, slots=True)
class DriftIgnore:
    """The parsed file; `problems` are lines skipped, with why."""

    lines: tuple[IgnoreLine, ...] = ()
    problems: tuple[str, ...] = ()
    source: str = ".driftignore"

    def ignored_by(self, drift: Drift) -> str | None:
        """What ignores this drift (`.driftignore:LINE`), or None."""
        for line in reversed(self.lines):
            if line.matches(drift):
                return None if line.negate else f"{self.source}:{line.number}"
        return None


def parse_driftignore(text: str, source: str = ".driftignore") -> DriftIgnore:
    lines: list[IgnoreLine] = []
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        if negate:
            line = line[1:]
        while "**" in line:
            line = line.replace("**", "*")
        parts = split_line(line)
        if any(not p for p in parts):
            problems.append(f"{source}:{number}: empty name in {raw.strip()!r}")
            continue
        rtype, rid = parts[0], parts[1] if len(parts) > 1 else "*"
        path = tuple(p.lower() for p in parts[2:])
        lines.append(IgnoreLine(number, negate, _glob(rtype), _glob(rid), path))
    return DriftIgnore(tuple(lines), tuple(problems), source)


def load_driftignore(path: str | Path) -> DriftIgnore:
    """The file at `path` (IgnoreFileError if it cannot be read)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise IgnoreFileError(f"{p}: cannot read the ignore file: {exc}") from None
    return parse_driftignore(text, p.name)


class IgnoreFileWatch:
    """An ignore file polled for changes (size and modification time); the last good
    version stays in force while the file is unreadable."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._seen: tuple[int, int] | None = None

    def _signature(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def load(self) -> DriftIgnore:
        """Read the file now (IgnoreFileError if it cannot be read)."""
        seen = self._signature()
        found = load_driftignore(self.path)
        self._seen = seen
        return found

    def changed(self) -> DriftIgnore | None:
        """The file again if it changed since the last read, else None."""
        seen = self._signature()
        if seen is None or seen == self._seen:
            return None
        return self.load()
