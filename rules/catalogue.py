"""Load and validate the event catalogue (rules/catalogue/<provider>/<service>.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from rules.paths import WILDCARD, PathError, RecordPath, parse_path
from rules.targets import (
    FIELD,
    PROVIDER_PREFIX,
    AttributeRule,
    CatalogueError,
    Change,
    Target,
    Unmanaged,
    as_tuple,
    check_type,
    parse_attributes,
    parse_change,
    parse_target,
    parse_unmanaged,
)

# Re-exported: callers name the catalogue's errors, changes and prefixes from here.
__all__ = [
    "CATALOGUE_DIR",
    "CATEGORIES",
    "PROVIDER_PREFIX",
    "SEVERITIES",
    "Catalogue",
    "CatalogueError",
    "Change",
    "EventRule",
    "Severity",
    "SkipRule",
    "load_catalogue",
    "load_file",
    "read_yaml",
]

CATALOGUE_DIR = Path(__file__).parent / "catalogue"
CATEGORIES = frozenset(
    {
        "iam",
        "network",
        "encryption",
        "data",
        "logging",
        "compute",
        "container",
        "messaging",
        "dns",
        "serverless",
        "monitoring",
        "other",
    }
)
_EVENT_KEYS = {
    "change",
    "resource",
    "id",
    "attributes",
    "category",
    "severity",
    "note",
    "peer",
    "unmanaged",
    "each",
}
_SKIP_KEYS = {"skip", "note", "peer"}


class Severity(StrEnum):
    """How bad a drift is, lowest first: the order is the rank. `monitor.types` exports it."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


SEVERITIES = tuple(s.value for s in Severity)


@dataclass(frozen=True, slots=True)
class EventRule:
    provider: str
    event_source: str
    event_name: str
    change: Change
    resource_types: tuple[str, ...]  # the targets named by the entry's id paths
    id_paths: tuple[RecordPath, ...]
    attributes: tuple[AttributeRule, ...]  # those targets' attributes
    category: str
    severity: str | None
    peer_names: tuple[str, ...] = ()
    targets: tuple[Target, ...] = ()
    unmanaged: Unmanaged | None = None
    # Paths to the items one call changes several resources with (a change batch); the first
    # that reaches any is fanned out over, each item being the record's `each`.
    each: tuple[RecordPath, ...] = ()

    @property
    def all_types(self) -> tuple[str, ...]:
        """Every type the event may be reported on, most specific first."""
        types = [t.resource_type for t in self.targets]
        if self.unmanaged:
            types.append(self.unmanaged.resource_type)
        return tuple(dict.fromkeys(types))

    @property
    def has_attributes(self) -> bool:
        """Some target extracts attribute values."""
        return any(t.attributes for t in self.targets)


@dataclass(frozen=True, slots=True)
class SkipRule:
    """A call that is deliberately not drift (start/stop, executions, ...), with the reason."""

    provider: str
    event_source: str
    event_name: str
    reason: str
    peer_names: tuple[str, ...] = ()


class Catalogue:
    """All event rules, keyed by (event source, event name)."""

    def __init__(
        self,
        rules: list[EventRule],
        identifiers: dict[str, tuple[str, ...]],
        skipped: list[SkipRule] | None = None,
    ) -> None:
        self.skipped = {(s.event_source, s.event_name): s for s in skipped or ()}
        self.rules: dict[tuple[str, str], EventRule] = {}
        self.by_name: dict[str, list[EventRule]] = {}
        for rule in rules:
            self.rules[(rule.event_source, rule.event_name)] = rule
            self.by_name.setdefault(rule.event_name, []).append(rule)
        self.identifiers = identifiers

    def lookup(self, event_source: str, event_name: str) -> EventRule | None:
        return self.rules.get((event_source, event_name))

    def is_skipped(self, event_source: str, event_name: str) -> bool:
        """The call is listed as deliberately not drift."""
        return (event_source, event_name) in self.skipped

    def source_for(self, event_name: str) -> str | None:
        """The event source of a name that only one service uses (for alerts that omit it)."""
        found = self.by_name.get(event_name)
        if found and len(found) == 1:
            return found[0].event_source
        return None

    def resource_types(self) -> set[str]:
        return {t for r in self.rules.values() for t in r.all_types}

    def __len__(self) -> int:
        return len(self.rules)


def _peer_names(where: str, spec: dict[str, Any]) -> tuple[str, ...]:
    names = as_tuple(spec.get("peer"))
    if not all(isinstance(n, str) and n for n in names):
        raise CatalogueError(f"{where}: peer must be a name or a list of names")
    return names


def _parse_skip(
    where: str, provider: str, source: str, name: str, spec: dict[str, Any]
) -> SkipRule:
    unknown = set(spec) - _SKIP_KEYS
    if unknown:
        raise CatalogueError(
            f"{where}: skip entries take only skip, note and peer: {sorted(unknown)}"
        )
    reason = spec["skip"]
    if not isinstance(reason, str) or not reason.strip():
        raise CatalogueError(f"{where}: skip needs the reason the call is not drift")
    return SkipRule(provider, source, name, reason.strip(), _peer_names(where, spec))


def _parse_entry(
    where: str, provider: str, source: str, category: str, name: str, spec: Any
) -> EventRule | SkipRule:
    if not isinstance(spec, dict):
        raise CatalogueError(f"{where}: event {name}: expected a mapping")
    if "skip" in spec:
        return _parse_skip(f"{where}: event {name}", provider, source, name, spec)
    return _parse_event(where, provider, source, category, name, spec)


def _parse_event(
    where: str, provider: str, source: str, category: str, name: str, spec: dict[str, Any]
) -> EventRule:
    where = f"{where}: event {name}"
    unknown = set(spec) - _EVENT_KEYS
    if unknown:
        raise CatalogueError(f"{where}: unknown keys {sorted(unknown)}")
    change = parse_change(where, spec.get("change"))
    listed = as_tuple(spec.get("resource"))
    if not listed:
        raise CatalogueError(f"{where}: resource is required")
    attrs = parse_attributes(where, spec.get("attributes"), change)
    targets = tuple(
        parse_target(where, provider, t, change)
        if isinstance(t, dict)
        else Target(check_type(where, provider, t), change, (), (), attrs)
        for t in listed
    )
    shared = tuple(t.resource_type for t in targets if t.shared)
    try:
        id_paths = tuple(parse_path(p) for p in as_tuple(spec.get("id")))
    except PathError as exc:
        raise CatalogueError(f"{where}: id: {exc}") from None
    if shared and not id_paths:
        raise CatalogueError(f"{where}: id (one or more paths) is required")
    if len(shared) < len(targets) and any(WILDCARD in p for p in id_paths):
        # A target with its own id names one resource; a fan-out would pair it with many.
        raise CatalogueError(
            f"{where}: id cannot fan out ([*]) next to targets with their own id (use each:)"
        )
    cat = spec.get("category", category)
    if cat not in CATEGORIES:
        raise CatalogueError(f"{where}: unknown category {cat!r}")
    sev = spec.get("severity")
    if sev is not None and sev not in SEVERITIES:
        raise CatalogueError(f"{where}: unknown severity {sev!r}")
    peers = _peer_names(where, spec)
    unmanaged = parse_unmanaged(where, provider, spec.get("unmanaged"), change)
    each = _parse_each(where, spec.get("each"))
    return EventRule(
        provider,
        source,
        name,
        change,
        shared,
        id_paths,
        attrs,
        cat,
        sev,
        peers,
        targets,
        unmanaged,
        each,
    )


def _parse_each(where: str, raw: Any) -> tuple[RecordPath, ...]:
    try:
        paths = tuple(parse_path(p) for p in as_tuple(raw))
    except PathError as exc:
        raise CatalogueError(f"{where}: each: {exc}") from None
    if not all(WILDCARD in p for p in paths):
        raise CatalogueError(f"{where}: each: a path with [*] to the items to fan out over")
    return paths


# libyaml's loader, where PyYAML was built with it: it reads the catalogue many times faster
# than the pure-Python one (every `serve` and `detect` start reads all of it).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(text: str) -> Any:
    """YAML text to plain values, as yaml.safe_load would give them."""
    return yaml.load(text, Loader=_LOADER)


FileRules = tuple[list[EventRule | SkipRule], dict[str, tuple[str, ...]]]


def load_file(path: Path) -> FileRules:
    """Parse one catalogue file; every problem is a CatalogueError naming the file."""
    where = str(path)
    try:
        doc = read_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise CatalogueError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != 1:
        raise CatalogueError(f"{where}: expected a mapping with version: 1")
    provider = doc.get("provider")
    if provider not in PROVIDER_PREFIX:
        raise CatalogueError(f"{where}: provider must be one of {sorted(PROVIDER_PREFIX)}")
    source = doc.get("event_source")
    if not isinstance(source, str) or not source:
        raise CatalogueError(f"{where}: event_source is required")
    category = doc.get("category", "other")
    if category not in CATEGORIES:
        raise CatalogueError(f"{where}: unknown category {category!r}")
    identifiers: dict[str, tuple[str, ...]] = {}
    for rtype, keys in (doc.get("identifiers") or {}).items():
        keys_t = as_tuple(keys)
        if not all(isinstance(k, str) and FIELD.match(k) for k in keys_t):
            raise CatalogueError(f"{where}: identifiers of {rtype}: bad attribute names")
        identifiers[rtype] = keys_t
    events = doc.get("events")
    if not isinstance(events, dict) or not events:
        raise CatalogueError(f"{where}: events must be a non-empty mapping")
    entries = [
        _parse_entry(where, provider, source, category, name, spec) for name, spec in events.items()
    ]
    return entries, identifiers


def load_catalogue(directory: Path | None = None) -> Catalogue:
    """Every `*.yaml` below the catalogue directory; duplicate (source, name) pairs are errors."""
    root = directory or CATALOGUE_DIR
    rules: list[EventRule] = []
    skipped: list[SkipRule] = []
    identifiers: dict[str, tuple[str, ...]] = {}
    seen: dict[tuple[str, str], Path] = {}
    for path in sorted(root.rglob("*.yaml")):
        entries, file_ids = load_file(path)
        for entry in entries:
            key = (entry.event_source, entry.event_name)
            if key in seen:
                raise CatalogueError(f"{path}: {key[1]} of {key[0]} is also in {seen[key]}")
            seen[key] = path
            if isinstance(entry, SkipRule):
                skipped.append(entry)
            else:
                rules.append(entry)
        for rtype, keys in file_ids.items():
            merged = identifiers.get(rtype, ())
            identifiers[rtype] = merged + tuple(k for k in keys if k not in merged)
    return Catalogue(rules, identifiers, skipped)
