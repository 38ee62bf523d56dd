"""Severity rules: category, attribute patterns, drift kind and event overrides (YAML)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rules.catalogue import CATEGORIES, SEVERITIES, CatalogueError, read_yaml

DEFAULT_FILE = Path(__file__).parent / "severity.yaml"
RANK = {s: i for i, s in enumerate(SEVERITIES)}


@dataclass(frozen=True, slots=True)
class SeverityRules:
    default: str
    categories: dict[str, str]
    attributes: tuple[tuple[re.Pattern[str], str], ...]
    kinds: dict[str, str]
    events: dict[str, str]

    def rate(self, category: str | None, field: str | None, kind: str, event_key: str) -> str:
        """Severity for one drift: an event override, else the first attribute pattern that
        matches the field (user patterns are tried first), else the higher of the category's
        and the drift kind's."""
        override = self.events.get(event_key)
        if override:
            return override
        if field:
            for pattern, sev in self.attributes:
                if pattern.fullmatch(field):
                    return sev
        best = self.categories.get(category or "", self.default)
        kind_sev = self.kinds.get(kind)
        if kind_sev and RANK[kind_sev] > RANK[best]:
            best = kind_sev
        return best


def _sev(where: str, value: Any) -> str:
    if value not in SEVERITIES:
        raise CatalogueError(f"{where}: severity must be one of {SEVERITIES}, got {value!r}")
    return str(value)


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = read_yaml(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogueError(f"{path}: cannot read severity rules: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != 1:
        raise CatalogueError(f"{path}: expected a mapping with version: 1")
    return doc


def load_severity(override: Path | None = None) -> SeverityRules:
    """The built-in rules, with a user's file merged on top (its patterns are tried first)."""
    base = _read(DEFAULT_FILE)
    docs = [(DEFAULT_FILE, base)]
    if override is not None:
        docs.append((override, _read(override)))
    default = "medium"
    categories: dict[str, str] = {}
    patterns: list[tuple[re.Pattern[str], str]] = []
    kinds: dict[str, str] = {}
    events: dict[str, str] = {}
    for path, doc in docs:
        where = str(path)
        if "default" in doc:
            default = _sev(where, doc["default"])
        for cat, sev in (doc.get("categories") or {}).items():
            if cat not in CATEGORIES:
                raise CatalogueError(f"{where}: unknown category {cat!r}")
            categories[cat] = _sev(where, sev)
        new_patterns = []
        for item in doc.get("attributes") or []:
            if not isinstance(item, dict) or "match" not in item:
                raise CatalogueError(f"{where}: attributes entries need match and severity")
            try:
                pattern = re.compile(str(item["match"]))
                new_patterns.append((pattern, _sev(where, item.get("severity"))))
            except re.error as exc:
                raise CatalogueError(f"{where}: bad pattern {item['match']!r}: {exc}") from None
        patterns = new_patterns + patterns
        for kind, sev in (doc.get("kinds") or {}).items():
            kinds[str(kind)] = _sev(where, sev)
        for key, sev in (doc.get("events") or {}).items():
            events[str(key)] = _sev(where, sev)
    return SeverityRules(default, categories, tuple(patterns), kinds, events)
