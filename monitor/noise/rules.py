"""Suppressions, custom and disabled rules, apply principals and the `unmanaged` scope, as
one immutable snapshot that detection reads (`NoiseRules`) and a holder that swaps it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from monitor.noise.driftignore import DriftIgnore
from monitor.noise.match import Getter, Match, MatchError, MatchIndex, parse_match
from monitor.types import Drift, DriftKind, Severity, SkipReason
from rules.catalogue import CATEGORIES

CUSTOM_KEYS = ("event_name", "resource_type", "field", "account", "tag")
DISABLED_KEYS = ("event_name", "resource_type")
SCOPES = ("account", "state")  # unmanaged creates: reported account-wide, or not at all
SEVERITIES = tuple(s.value for s in Severity)


def rfc3339(value: Any, name: str) -> str | None:
    """An RFC 3339 time as the clock writes it (UTC, milliseconds, Z); None stays None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise MatchError(f"{name} must be an RFC 3339 time or null")
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise MatchError(f"{name}: not an RFC 3339 time: {value!r}") from None
    if t.tzinfo is None:
        raise MatchError(f"{name}: needs a time zone (Z or +hh:mm)")
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _text(body: Mapping[str, Any], name: str, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 2000:
        raise MatchError(f"{name} must be a non-empty string (at most 2000 characters)")
    return value


@dataclass(frozen=True, slots=True)
class Suppression:
    id: str
    match: Match
    reason: str
    created_by: str
    created_at: str
    expires_at: str | None = None

    def live(self, now: str) -> bool:
        return self.expires_at is None or self.expires_at > now

    def view(self, now: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "match": self.match.as_dict(),
            "reason": self.reason,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "active": self.live(now),
        }

    def stored(self) -> dict[str, Any]:
        return {k: v for k, v in self.view("").items() if k != "active"}

    @staticmethod
    def of(body: Mapping[str, Any]) -> Suppression:
        """From a stored or a validated body (MatchError when it cannot work)."""
        return Suppression(
            id=str(body["id"]),
            match=parse_match(body.get("match")),
            reason=_text(body, "reason", required=True) or "",
            created_by=str(body["created_by"]),
            created_at=str(body["created_at"]),
            expires_at=rfc3339(body.get("expires_at"), "expires_at"),
        )

    def patched(self, body: Mapping[str, Any]) -> Suppression:
        """This suppression with `match`, `reason` and/or `expires_at` replaced."""
        unknown = sorted(set(body) - {"match", "reason", "expires_at"})
        if unknown:
            raise MatchError(f"unknown field(s): {', '.join(unknown)}")
        return Suppression.of({**self.stored(), **body})


@dataclass(frozen=True, slots=True)
class CustomRule:
    id: str
    match: Match
    severity: str | None
    category: str | None
    created_by: str
    created_at: str

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "match": self.match.as_dict(),
            "severity": self.severity,
            "category": self.category,
            "created_by": self.created_by,
            "created_at": self.created_at,
        }

    @staticmethod
    def of(body: Mapping[str, Any]) -> CustomRule:
        severity, category = body.get("severity"), body.get("category")
        if severity is None and category is None:
            raise MatchError("a custom rule sets severity, category or both")
        if severity is not None and severity not in SEVERITIES:
            raise MatchError(f"severity must be one of {', '.join(SEVERITIES)}")
        if category is not None and category not in CATEGORIES:
            raise MatchError(f"category must be one of {', '.join(sorted(CATEGORIES))}")
        return CustomRule(
            id=str(body["id"]),
            match=parse_match(body.get("match"), CUSTOM_KEYS),
            severity=severity,
            category=category,
            created_by=str(body["created_by"]),
            created_at=str(body["created_at"]),
        )

    def patched(self, body: Mapping[str, Any]) -> CustomRule:
        unknown = sorted(set(body) - {"match", "severity", "category"})
        if unknown:
            raise MatchError(f"unknown field(s): {', '.join(unknown)}")
        return CustomRule.of({**self.view(), **body})


@dataclass(frozen=True, slots=True)
class DisabledRule:
    id: str
    match: Match
    reason: str | None
    created_by: str
    created_at: str

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "match": self.match.as_dict(),
            "reason": self.reason,
            "created_by": self.created_by,
            "created_at": self.created_at,
        }

    @staticmethod
    def of(body: Mapping[str, Any]) -> DisabledRule:
        return DisabledRule(
            id=str(body["id"]),
            match=parse_match(body.get("match"), DISABLED_KEYS),
            reason=_text(body, "reason"),
            created_by=str(body["created_by"]),
            created_at=str(body["created_at"]),
        )


@dataclass(frozen=True, slots=True)
class UnmanagedScope:
    """Whether creates no state declares are reported: `account` (driftctl's view: all of
    the account is watched) or `state` (plan's view: only what the states declare). The most
    specific setting wins: resource type, then region, then account, then the default."""

    default: str = "account"
    accounts: Mapping[str, str] = field(default_factory=dict)
    regions: Mapping[str, str] = field(default_factory=dict)
    resource_types: Mapping[str, str] = field(default_factory=dict)

    def reports(self, drift: Drift) -> bool:
        for table, key in (
            (self.resource_types, drift.resource_type),
            (self.regions, drift.region),
            (self.accounts, drift.account_id),
        ):
            scope = table.get(key) if key else None
            if scope is not None:
                return scope == "account"
        return self.default == "account"

    @staticmethod
    def of(raw: Mapping[str, Any] | None) -> UnmanagedScope:
        """From the `unmanaged_scope` setting (ValueError names what is wrong)."""
        raw = raw or {}
        unknown = sorted(set(raw) - {"default", "accounts", "regions", "resource_types"})
        if unknown:
            raise ValueError(f"unmanaged_scope: unknown key(s): {', '.join(unknown)}")
        default = raw.get("default", "account")
        if default not in SCOPES:
            raise ValueError(f"unmanaged_scope.default: must be one of {', '.join(SCOPES)}")
        tables: dict[str, dict[str, str]] = {}
        for name in ("accounts", "regions", "resource_types"):
            table = raw.get(name) or {}
            if not isinstance(table, Mapping) or any(v not in SCOPES for v in table.values()):
                raise ValueError(f"unmanaged_scope.{name}: a mapping to account or state")
            tables[name] = {str(k): str(v) for k, v in table.items()}
        return UnmanagedScope(default, **tables)


def _values(v: str | None) -> tuple[str, ...]:
    return (v,) if v else ()


def drift_getter(d: Drift) -> Getter:
    """A drift's values for each match key."""

    def get(key: str) -> tuple[str, ...]:
        if key == "actor":
            a = d.actor
            return tuple(v for v in (a.user_name, a.arn, a.role) if v)
        if key == "account":
            return _values(d.account_id)
        if key == "kind":
            return (d.kind.value,)
        if key == "tag":
            return ()
        return _values(getattr(d, key))

    return get


def rating_getter(
    event_name: str, rtype: str, field_: str | None, account: str | None, tags: Any
) -> Getter:
    """The values a custom rule matches on, before the drift is built."""

    def get(key: str) -> tuple[str, ...]:
        if key == "event_name":
            return (event_name,)
        if key == "resource_type":
            return (rtype,)
        if key == "field":
            return _values(field_)
        if key == "account":
            return _values(account)
        if key == "tag" and isinstance(tags, Mapping):
            return tuple(f"{k}={v}" for k, v in tags.items())
        return ()

    return get


@dataclass(frozen=True)
class NoiseRules:
    """Everything noise control decides with, indexed once per change (not per event)."""

    suppressions: tuple[Suppression, ...] = ()
    custom_rules: tuple[CustomRule, ...] = ()
    disabled_rules: tuple[DisabledRule, ...] = ()
    apply_principals: frozenset[str] = frozenset()
    ignore: DriftIgnore = field(default_factory=DriftIgnore)
    unmanaged: UnmanagedScope = field(default_factory=UnmanagedScope)
    by_suppression: MatchIndex[Suppression] = field(init=False)
    by_custom: MatchIndex[CustomRule] = field(init=False)
    by_disabled: MatchIndex[DisabledRule] = field(init=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: the indexes are derived once, here
        set_(self, "by_suppression", MatchIndex((s.match, s) for s in self.suppressions))
        set_(self, "by_custom", MatchIndex((r.match, r) for r in self.custom_rules))
        set_(self, "by_disabled", MatchIndex((r.match, r) for r in self.disabled_rules))

    def replace(self, **changes: Any) -> NoiseRules:
        return dataclasses.replace(self, **changes)

    def rate(
        self, event_name: str, rtype: str, field_: str | None, account: str | None, tags: Any
    ) -> CustomRule | None:
        """The first custom rule for a drift about to be built (None: the built-in rules)."""
        if not self.by_custom:
            return None
        return self.by_custom.first(rating_getter(event_name, rtype, field_, account, tags))

    def judge(self, drift: Drift, now: str) -> Drift | str:
        """Why the drift is dropped (a disabled rule, the unmanaged scope), or the drift,
        marked `suppressed_by` when a live suppression or the ignore file covers it."""
        if drift.kind is DriftKind.UNMANAGED and not self.unmanaged.reports(drift):
            return SkipReason.OUT_OF_SCOPE
        get = drift_getter(drift)
        if self.by_disabled and self.by_disabled.first(get) is not None:
            return SkipReason.DISABLED
        by: str | None = None
        if self.by_suppression:
            found = self.by_suppression.first(get, lambda s: s.live(now))
            by = found.id if found else None
        if by is None and self.ignore.lines:
            by = self.ignore.ignored_by(drift)
        return drift if by is None else dataclasses.replace(drift, suppressed_by=by)

    @property
    def active(self) -> bool:
        """Anything here can drop or mark a drift (detection skips the work when not)."""
        return bool(
            self.suppressions
            or self.disabled_rules
            or self.ignore.lines
            or self.unmanaged != UnmanagedScope()
        )


class Noise:
    """The current NoiseRules; writers replace it whole, readers take it once per event."""

    __slots__ = ("current",)

    def __init__(self, rules: NoiseRules | None = None) -> None:
        self.current = rules or NoiseRules()

    def update(self, **changes: Any) -> NoiseRules:
        self.current = self.current.replace(**changes)
        return self.current
