"""Load and validate the event catalogue (rules/catalogue/<provider>/<service>.yaml)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from rules.paths import WILDCARD, PathError, RecordPath, Template, parse_path, parse_template
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
}
_TARGET_KEYS = {"type", "id", "match", "when", "change", "attributes", "note"}
ANY = "*"  # a `when:` value: the path reaches something
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
    path: RecordPath | None  # None: the call always sets `const` (or builds a block from `fields`)
    transform: str
    mapping: tuple[tuple[str, Any], ...] | None
    const: Any = None
    fields: tuple[tuple[str, RecordPath], ...] = ()  # `from: {name: path, ...}`: a block


@dataclass(frozen=True, slots=True)
class Target:
    """One resource an event may change; an event's targets are tried in order against the
    state and the first one the state declares is the one the drift is about."""

    resource_type: str
    change: Change
    # How the event names it: its own id templates (first rendered wins), or state attributes
    # matched against templates; with neither, the entry's id paths (which may fan out).
    ids: tuple[Template, ...]
    match: tuple[tuple[str, Template], ...]
    attributes: tuple[AttributeRule, ...]
    # Record values the call must carry for this target to apply (SetTopicAttributes' Policy).
    when: tuple[tuple[RecordPath, Any], ...] = ()

    @property
    def shared(self) -> bool:
        """Named by the entry's id paths rather than its own."""
        return not self.ids and not self.match


@dataclass(frozen=True, slots=True)
class Unmanaged:
    """What a call creates when the state declares none of its targets."""

    resource_type: str
    ids: tuple[Template, ...]  # the first one the record fills; none: the id the event names


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
    pairs = tuple(sorted((str(k), v) for k, v in mapping.items())) if mapping else None
    source = aspec["from"]
    try:
        if isinstance(source, dict):
            fields = tuple((str(k), parse_path(v)) for k, v in source.items())
            return AttributeRule(field, None, transform, pairs, None, fields)
        path = parse_path(source)
    except PathError as exc:
        raise CatalogueError(f"{where}: {exc}") from None
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


def _check_type(where: str, provider: str, rtype: Any) -> str:
    if (
        not isinstance(rtype, str)
        or not _TYPE.match(rtype)
        or not rtype.startswith(PROVIDER_PREFIX[provider])
    ):
        raise CatalogueError(f"{where}: bad resource type {rtype!r}")
    return rtype


def _parse_change(where: str, raw: Any) -> Change:
    try:
        return Change(str(raw))
    except ValueError:
        raise CatalogueError(f"{where}: change must be modify, create or delete") from None


def _parse_attributes(where: str, raw: Any, change: Change) -> tuple[AttributeRule, ...]:
    raw = raw or {}
    if not isinstance(raw, dict):
        raise CatalogueError(f"{where}: attributes must be a mapping")
    if raw and change is not Change.MODIFY:
        raise CatalogueError(f"{where}: attributes only apply to change: modify")
    return tuple(_parse_attribute(where, f, a) for f, a in raw.items())


def _templates(where: str, raw: Any) -> tuple[Template, ...]:
    try:
        return tuple(parse_template(t) for t in _as_tuple(raw))
    except PathError as exc:
        raise CatalogueError(f"{where}: {exc}") from None


def _parse_target(where: str, provider: str, spec: Any, change: Change) -> Target:
    """One mapping of a `resource:` list: a type with its own id or match, change, attributes."""
    if not isinstance(spec, dict):
        raise CatalogueError(f"{where}: a resource is a type or a mapping with type")
    unknown = set(spec) - _TARGET_KEYS
    if unknown:
        raise CatalogueError(f"{where}: unknown keys {sorted(unknown)}")
    rtype = _check_type(where, provider, spec.get("type"))
    where = f"{where}: {rtype}"
    own_change = _parse_change(where, spec["change"]) if "change" in spec else change
    raw_match = spec.get("match") or {}
    if not isinstance(raw_match, dict) or not all(
        isinstance(k, str) and _FIELD.match(k) for k in raw_match
    ):
        raise CatalogueError(f"{where}: match maps state attribute names to templates")
    match = tuple((k, _templates(where, v)[0]) for k, v in raw_match.items())
    ids = _templates(where, spec.get("id"))
    if ids and match:
        raise CatalogueError(f"{where}: give id or match, not both")
    attrs = _parse_attributes(where, spec.get("attributes"), own_change)
    raw_when = spec.get("when") or {}
    if not isinstance(raw_when, dict):
        raise CatalogueError(f"{where}: when maps record paths to values")
    try:
        when = tuple((parse_path(k), v) for k, v in raw_when.items())
    except PathError as exc:
        raise CatalogueError(f"{where}: when: {exc}") from None
    return Target(rtype, own_change, ids, match, attrs, when)


def _parse_unmanaged(where: str, provider: str, raw: Any, change: Change) -> Unmanaged | None:
    if raw is None:
        return None
    if change is Change.DELETE:
        raise CatalogueError(f"{where}: unmanaged does not apply to change: delete")
    spec = {"type": raw} if isinstance(raw, str) else raw
    if not isinstance(spec, dict) or set(spec) - {"type", "id"}:
        raise CatalogueError(f"{where}: unmanaged is a type or {{type, id}}")
    rtype = _check_type(f"{where}: unmanaged", provider, spec.get("type"))
    return Unmanaged(rtype, _templates(f"{where}: unmanaged", spec.get("id")))


def _parse_event(
    where: str, provider: str, source: str, category: str, name: str, spec: dict[str, Any]
) -> EventRule:
    where = f"{where}: event {name}"
    unknown = set(spec) - _EVENT_KEYS
    if unknown:
        raise CatalogueError(f"{where}: unknown keys {sorted(unknown)}")
    change = _parse_change(where, spec.get("change"))
    listed = _as_tuple(spec.get("resource"))
    if not listed:
        raise CatalogueError(f"{where}: resource is required")
    attrs = _parse_attributes(where, spec.get("attributes"), change)
    targets = tuple(
        _parse_target(where, provider, t, change)
        if isinstance(t, dict)
        else Target(_check_type(where, provider, t), change, (), (), attrs)
        for t in listed
    )
    shared = tuple(t.resource_type for t in targets if t.shared)
    try:
        id_paths = tuple(parse_path(p) for p in _as_tuple(spec.get("id")))
    except PathError as exc:
        raise CatalogueError(f"{where}: id: {exc}") from None
    if shared and not id_paths:
        raise CatalogueError(f"{where}: id (one or more paths) is required")
    if len(shared) < len(targets) and any(WILDCARD in p for p in id_paths):
        # A target with its own id names one resource; a fan-out would pair it with many.
        raise CatalogueError(f"{where}: id cannot fan out ([*]) next to targets with their own id")
    cat = spec.get("category", category)
    if cat not in CATEGORIES:
        raise CatalogueError(f"{where}: unknown category {cat!r}")
    sev = spec.get("severity")
    if sev is not None and sev not in SEVERITIES:
        raise CatalogueError(f"{where}: unknown severity {sev!r}")
    peers = _peer_names(where, spec)
    unmanaged = _parse_unmanaged(where, provider, spec.get("unmanaged"), change)
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
    )


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
