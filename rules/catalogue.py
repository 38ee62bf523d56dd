"""Load and validate the event catalogue (rules/catalogue/<provider>/<service>.yaml)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from rules.paths import PathError, parse_path
from rules.transforms import TRANSFORMS

CATALOGUE_DIR = Path(__file__).parent / "catalogue"
PROVIDER_PREFIX = {
    "aws": "aws_",
    "gcp": "google_",
    "azure": "azurerm_",
    "kubernetes": "kubernetes_",
}
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
_FIELD = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")
_TYPE = re.compile(r"^[a-z][a-z0-9]*_[a-z0-9_]+$")
_EVENT_KEYS = {"change", "resource", "id", "attributes", "category", "severity", "note", "peer"}
_SKIP_KEYS = {"skip", "note", "peer"}


class CatalogueError(ValueError):
    """A catalogue file is malformed; the message names the file and the entry."""


class Severity(StrEnum):
    """How bad a drift is, lowest first: the order is the rank. `monitor.types` exports it."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


SEVERITIES = tuple(s.value for s in Severity)


class Change(StrEnum):
    MODIFY = "modify"
    CREATE = "create"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class AttributeRule:
    field: str
    path: tuple[str | int | None, ...] | None  # None: the call always sets `const`
    transform: str
    mapping: tuple[tuple[str, Any], ...] | None
    const: Any = None


@dataclass(frozen=True, slots=True)
class EventRule:
    provider: str
    event_source: str
    event_name: str
    change: Change
    resource_types: tuple[str, ...]
    id_paths: tuple[tuple[str | int | None, ...], ...]
    attributes: tuple[AttributeRule, ...]
    category: str
    severity: str | None
    peer_names: tuple[str, ...] = ()


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
        return {t for r in self.rules.values() for t in r.resource_types}

    def __len__(self) -> int:
        return len(self.rules)


def _as_tuple(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, list) else (value,)


def _parse_attribute(where: str, field: Any, aspec: Any) -> AttributeRule:
    """One entry of an event's `attributes`: `field: <path>` or `field: {from|const, as, map}`."""
    if not isinstance(field, str) or not _FIELD.match(field):
        raise CatalogueError(f"{where}: bad attribute name {field!r}")
    where = f"{where}.{field}"
    if isinstance(aspec, str):
        aspec = {"from": aspec}
    if not isinstance(aspec, dict) or ("from" in aspec) == ("const" in aspec):
        raise CatalogueError(f"{where}: needs 'from: <path>' or 'const: <value>'")
    extra = set(aspec) - {"from", "as", "map", "const"}
    if extra:
        raise CatalogueError(f"{where}: unknown keys {sorted(extra)}")
    transform = aspec.get("as", "value")
    if transform not in TRANSFORMS:
        raise CatalogueError(
            f"{where}: unknown transform {transform!r} (one of {sorted(TRANSFORMS)})"
        )
    mapping = aspec.get("map")
    if mapping is not None and not isinstance(mapping, dict):
        raise CatalogueError(f"{where}: map must be a mapping")
    if "const" in aspec:
        return AttributeRule(field, None, transform, None, aspec["const"])
    try:
        path = parse_path(aspec["from"])
    except PathError as exc:
        raise CatalogueError(f"{where}: {exc}") from None
    pairs = tuple(sorted((str(k), v) for k, v in mapping.items())) if mapping else None
    return AttributeRule(field, path, transform, pairs)


def _peer_names(where: str, spec: dict[str, Any]) -> tuple[str, ...]:
    names = _as_tuple(spec.get("peer"))
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
    unknown = set(spec) - _EVENT_KEYS
    if unknown:
        raise CatalogueError(f"{where}: event {name}: unknown keys {sorted(unknown)}")
    try:
        change = Change(str(spec.get("change")))
    except ValueError:
        raise CatalogueError(
            f"{where}: event {name}: change must be modify, create or delete"
        ) from None
    types = _as_tuple(spec.get("resource"))
    if not types:
        raise CatalogueError(f"{where}: event {name}: resource is required")
    prefix = PROVIDER_PREFIX[provider]
    for t in types:
        if not isinstance(t, str) or not _TYPE.match(t) or not t.startswith(prefix):
            raise CatalogueError(f"{where}: event {name}: bad resource type {t!r}")
    ids = _as_tuple(spec.get("id"))
    if not ids:
        raise CatalogueError(f"{where}: event {name}: id (one or more paths) is required")
    try:
        id_paths = tuple(parse_path(p) for p in ids)
    except PathError as exc:
        raise CatalogueError(f"{where}: event {name}: id: {exc}") from None
    raw_attrs = spec.get("attributes") or {}
    if not isinstance(raw_attrs, dict):
        raise CatalogueError(f"{where}: event {name}: attributes must be a mapping")
    if raw_attrs and change is not Change.MODIFY:
        raise CatalogueError(f"{where}: event {name}: attributes only apply to change: modify")
    attrs = [_parse_attribute(f"{where}: event {name}", f, a) for f, a in raw_attrs.items()]
    cat = spec.get("category", category)
    if cat not in CATEGORIES:
        raise CatalogueError(f"{where}: event {name}: unknown category {cat!r}")
    sev = spec.get("severity")
    if sev is not None and sev not in SEVERITIES:
        raise CatalogueError(f"{where}: event {name}: unknown severity {sev!r}")
    peers = _peer_names(f"{where}: event {name}", spec)
    return EventRule(provider, source, name, change, types, id_paths, tuple(attrs), cat, sev, peers)


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
        keys_t = _as_tuple(keys)
        if not all(isinstance(k, str) and _FIELD.match(k) for k in keys_t):
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
