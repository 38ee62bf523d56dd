"""A catalogue entry's targets: the resources a call may change, how the record names each
one, and the attributes it sets; their values and how they are read from YAML."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from rules.paths import PathError, RecordPath, Template, parse_path, parse_template
from rules.transforms import TRANSFORMS

PROVIDER_PREFIX = {
    "aws": "aws_",
    "gcp": "google_",
    "azure": "azurerm_",
    "kubernetes": "kubernetes_",
}


FIELD = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")
_TYPE = re.compile(r"^[a-z][a-z0-9]*_[a-z0-9_]+$")


_TARGET_KEYS = {"type", "id", "match", "when", "change", "attributes", "creates", "note"}
ANY = "*"  # a `when:` value: the path reaches something


class CatalogueError(ValueError):
    """A catalogue file is malformed; the message names the file and the entry."""


class Change(StrEnum):
    MODIFY = "modify"
    CREATE = "create"
    DELETE = "delete"


# `when:` conditions: a record path and the value it must hold (ANY: any value; a tuple: one
# of those values).
When = tuple[tuple[RecordPath, Any], ...]


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
    when: When = ()
    # Declared, this target says the call made one more of its type next to it (a rule added
    # to a group whose rules are standalone resources): the new one's id templates.
    creates: tuple[Template, ...] = ()

    @property
    def shared(self) -> bool:
        """Named by the entry's id paths rather than its own."""
        return not self.ids and not self.match


@dataclass(frozen=True, slots=True)
class Unmanaged:
    """What a call creates when the state declares none of its targets."""

    resource_type: str
    ids: tuple[Template, ...]  # the first one the record fills; none: the id the event names
    when: When = ()  # record values the call must carry to create it (not a DELETE change)


def as_tuple(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, list) else (value,)


def _parse_attribute(where: str, field: Any, aspec: Any) -> AttributeRule:
    """One entry of an event's `attributes`: `field: <path>` or `field: {from|const, as, map}`."""
    if not isinstance(field, str) or not FIELD.match(field):
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


def check_type(where: str, provider: str, rtype: Any) -> str:
    if (
        not isinstance(rtype, str)
        or not _TYPE.match(rtype)
        or not rtype.startswith(PROVIDER_PREFIX[provider])
    ):
        raise CatalogueError(f"{where}: bad resource type {rtype!r}")
    return rtype


def parse_change(where: str, raw: Any) -> Change:
    try:
        return Change(str(raw))
    except ValueError:
        raise CatalogueError(f"{where}: change must be modify, create or delete") from None


def parse_attributes(where: str, raw: Any, change: Change) -> tuple[AttributeRule, ...]:
    raw = raw or {}
    if not isinstance(raw, dict):
        raise CatalogueError(f"{where}: attributes must be a mapping")
    if raw and change is not Change.MODIFY:
        raise CatalogueError(f"{where}: attributes only apply to change: modify")
    return tuple(_parse_attribute(where, f, a) for f, a in raw.items())


def _templates(where: str, raw: Any) -> tuple[Template, ...]:
    """Id templates; `{const: text}` is an id that is always the same (a per-account singleton
    such as aws_iam_account_password_policy)."""
    try:
        return tuple(
            _match_value(where, t) if isinstance(t, dict) else parse_template(t)
            for t in as_tuple(raw)
        )
    except PathError as exc:
        raise CatalogueError(f"{where}: {exc}") from None


def parse_target(where: str, provider: str, spec: Any, change: Change) -> Target:
    """One mapping of a `resource:` list: a type with its own id or match, change, attributes."""
    if not isinstance(spec, dict):
        raise CatalogueError(f"{where}: a resource is a type or a mapping with type")
    unknown = set(spec) - _TARGET_KEYS
    if unknown:
        raise CatalogueError(f"{where}: unknown keys {sorted(unknown)}")
    rtype = check_type(where, provider, spec.get("type"))
    where = f"{where}: {rtype}"
    own_change = parse_change(where, spec["change"]) if "change" in spec else change
    raw_match = spec.get("match") or {}
    if not isinstance(raw_match, dict) or not all(
        isinstance(k, str) and FIELD.match(k) for k in raw_match
    ):
        raise CatalogueError(f"{where}: match maps state attribute names to templates")
    match = tuple((k, _match_value(where, v)) for k, v in raw_match.items())
    ids = _templates(where, spec.get("id"))
    if ids and match:
        raise CatalogueError(f"{where}: give id or match, not both")
    attrs = parse_attributes(where, spec.get("attributes"), own_change)
    creates = _templates(f"{where}: creates", spec.get("creates"))
    if creates and (attrs or own_change is Change.DELETE or not (ids or match)):
        raise CatalogueError(
            f"{where}: creates needs the target's own id or match, no attributes, no delete"
        )
    return Target(rtype, own_change, ids, match, attrs, _parse_when(where, spec), creates)


def _match_value(where: str, raw: Any) -> Template:
    """A `match:` value: a template, or `{const: text}` for a value the state must hold."""
    if isinstance(raw, dict):
        if set(raw) != {"const"} or isinstance(raw["const"], (dict, list)):
            raise CatalogueError(f"{where}: a match value is a template or {{const: value}}")
        return (str(raw["const"]).lower() if isinstance(raw["const"], bool) else str(raw["const"]),)
    return _templates(where, raw)[0]


def _parse_when(where: str, spec: dict[str, Any]) -> When:
    raw_when = spec.get("when") or {}
    if not isinstance(raw_when, dict):
        raise CatalogueError(f"{where}: when maps record paths to values")
    try:
        return tuple(
            (parse_path(k), tuple(v) if isinstance(v, list) else v) for k, v in raw_when.items()
        )
    except PathError as exc:
        raise CatalogueError(f"{where}: when: {exc}") from None


def parse_unmanaged(where: str, provider: str, raw: Any, change: Change) -> Unmanaged | None:
    if raw is None:
        return None
    if change is Change.DELETE:
        raise CatalogueError(f"{where}: unmanaged does not apply to change: delete")
    spec = {"type": raw} if isinstance(raw, str) else raw
    if not isinstance(spec, dict) or set(spec) - {"type", "id", "when"}:
        raise CatalogueError(f"{where}: unmanaged is a type or {{type, id, when}}")
    where = f"{where}: unmanaged"
    rtype = check_type(where, provider, spec.get("type"))
    return Unmanaged(rtype, _templates(where, spec.get("id")), _parse_when(where, spec))
