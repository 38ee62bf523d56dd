"""Subscription filters: validated from a client's request, matched against a message's facets.

A filter is a set of keys, each with the values it accepts; a message matches when, for every
key, one of its values for that key is accepted. Messages about no drift, change or alert
(state changes, stats, graph deltas) have no facets and always pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from monitor.types import DriftKind, Severity, Status

MAX_VALUES = 50
MAX_VALUE_LEN = 512
# Key -> the values it allows (None: any non-empty text).
KEYS: dict[str, frozenset[str] | None] = {
    "severity": frozenset(s.value for s in Severity) | {"info"},
    "kind": frozenset(k.value for k in DriftKind),
    "resource_type": None,
    "provider": None,
    "account_id": None,
    "region": None,
    "actor": None,
    "field": None,
    "status": frozenset(s.value for s in Status),
}

Facets = dict[str, tuple[str, ...]]


class FilterError(ValueError):
    """A filter that cannot be used; `field` names the offending key (`filter.severity`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Filter:
    """Accepted values per key; an empty filter passes everything."""

    terms: tuple[tuple[str, frozenset[str]], ...] = ()

    def matches(self, facets: Facets | None) -> bool:
        if facets is None:
            return True
        for key, allowed in self.terms:
            values = facets.get(key)
            if not values or allowed.isdisjoint(values):
                return False
        return True

    def as_dict(self) -> dict[str, list[str]]:
        """The effective filter, as the welcome / connected message echoes it."""
        return {key: sorted(allowed) for key, allowed in self.terms}

    def __bool__(self) -> bool:
        return bool(self.terms)


NO_FILTER = Filter()


def _values(key: str, raw: Any) -> frozenset[str]:
    name = f"filter.{key}"
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        raise FilterError(name, f"{name} must be a string or a non-empty list of strings")
    if len(items) > MAX_VALUES:
        raise FilterError(name, f"{name} takes at most {MAX_VALUES} values")
    allowed = KEYS[key]
    out: set[str] = set()
    for v in items:
        if not isinstance(v, str) or not v or len(v) > MAX_VALUE_LEN:
            raise FilterError(name, f"{name} values must be non-empty strings")
        if allowed is not None and v not in allowed:
            raise FilterError(name, f"{name}: {v!r} is not one of {', '.join(sorted(allowed))}")
        out.add(v)
    return frozenset(out)


def parse_filter(raw: Any) -> Filter:
    """A WebSocket `filter` object (`{"severity": ["critical"], "account_id": "1234"}`)."""
    if raw is None:
        return NO_FILTER
    if not isinstance(raw, dict):
        raise FilterError("filter", "filter must be an object")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise FilterError(
            f"filter.{unknown[0]}",
            f"unknown filter key {unknown[0]!r}; use {', '.join(KEYS)}",
        )
    return Filter(tuple((key, _values(key, raw[key])) for key in KEYS if key in raw))


def parse_query_filter(params: Mapping[str, str], others: Iterable[str]) -> Filter:
    """SSE query parameters: every key but `others` is a filter key, values comma-separated."""
    raw: dict[str, Any] = {}
    skip = set(others)
    for key, value in params.items():
        if key in skip:
            continue
        raw[key] = [v.strip() for v in value.split(",") if v.strip()]
    try:
        return parse_filter(raw)
    except FilterError as exc:
        # The same rules, named as the query parameter a client wrote.
        raise FilterError(exc.field.removeprefix("filter."), exc.message) from None


def _text(*values: Any) -> tuple[str, ...]:
    return tuple(v for v in values if isinstance(v, str) and v)


def _actor_names(actor: Any) -> tuple[str, ...]:
    if not isinstance(actor, dict):
        return ()
    return _text(actor.get("user_name"), actor.get("arn"), actor.get("principal_id"))


def _drift_facets(p: dict[str, Any]) -> Facets:
    names = list(_actor_names(p.get("actor")))
    for a in p.get("actors") or ():
        names.extend(_actor_names(a))
    return {
        "severity": _text(p.get("severity")),
        "kind": _text(p.get("kind")),
        "resource_type": _text(p.get("resource_type")),
        "provider": _text(p.get("provider")),
        "account_id": _text(p.get("account_id")),
        "region": _text(p.get("region")),
        "actor": tuple(names),
        "field": _text(p.get("field")),
        "status": _text(p.get("status")),
    }


def _event_facets(p: dict[str, Any]) -> Facets:
    return {
        "severity": _text(p.get("severity")),
        "provider": _text(p.get("provider")),
        "account_id": _text(p.get("account_id")),
        "region": _text(p.get("region")),
        "actor": _actor_names(p.get("actor")),
    }


def _falco_facets(p: dict[str, Any]) -> Facets:
    fields = p.get("output_fields")
    f = fields if isinstance(fields, dict) else {}
    return {
        "severity": _text(p.get("severity")),
        "provider": _text(p.get("provider")),
        "account_id": _text(f.get("ct.user.accountid")),
        "region": _text(f.get("ct.region")),
        "actor": _text(f.get("ct.user.arn"), f.get("ct.user"), f.get("user.name")),
    }


def message_facets(type_: str, payload: dict[str, Any]) -> Facets | None:
    """What filters see of a message; None for messages no filter applies to."""
    if type_ in ("drift", "drift_update"):
        return _drift_facets(payload)
    if type_ == "event":
        return _event_facets(payload)
    if type_ == "falco":
        return _falco_facets(payload)
    return None
