"""An output's configuration: validated from an API body or the YAML config, viewed without
its secrets."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from monitor.filters import NO_FILTER, Filter, FilterError, parse_filter
from rules.severity import RANK

TYPES = ("webhook", "slack", "pagerduty", "kafka", "email")
# What a drift message is to an output: a new drift, a repeat or other update, a drift
# resolved, a state change.
EVENTS = ("new", "update", "resolved", "state")
DEFAULT_EVENTS = ("new", "resolved")
PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
SECRETS = ("secret", "routing_key", "password")
# Type-specific settings (email: the SMTP envelope and login; kafka: where to produce).
EXTRAS = ("username", "from", "to", "starttls", "ca_file", "brokers", "topic")
_LIMITS: dict[str, tuple[float, float]] = {
    "max_attempts": (1, 1000),
    "max_age_seconds": (1, 30 * 86400),
    "timeout_seconds": (0.1, 300),
    "rate_limit_per_minute": (1, 100_000),
    "backoff_seconds": (0.01, 3600),
    "max_backoff_seconds": (0.01, 86400),
}
FIELDS = frozenset(
    {"name", "type", "url", "enabled", "min_severity", "filter", "events"}
    | {*SECRETS, *EXTRAS, *_LIMITS}
)


class SpecError(ValueError):
    """A configuration that cannot work; `field` names the setting."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class OutputSpec:
    """One output: where it sends, what it wants, how hard it tries."""

    id: str
    name: str
    type: str
    url: str
    secret: str | None = None  # webhook HMAC key
    routing_key: str | None = None  # PagerDuty integration key
    password: str | None = None  # SMTP login
    username: str | None = None
    mail_from: str | None = None
    mail_to: tuple[str, ...] = ()
    starttls: bool = True
    ca_file: str | None = None  # PEM file of CAs the SMTP server's certificate must chain to
    brokers: str | None = None  # Kafka bootstrap servers, "host:port,host:port"
    topic: str | None = None
    enabled: bool = True
    min_severity: str | None = None
    filter: Filter = NO_FILTER
    events: tuple[str, ...] = DEFAULT_EVENTS
    max_attempts: int = 12
    max_age_seconds: float = 86400.0
    timeout_seconds: float = 10.0
    rate_limit_per_minute: int | None = None
    backoff_seconds: float = 1.0  # the first retry's delay, doubled per attempt ...
    max_backoff_seconds: float = 300.0  # ... up to this
    raw_filter: dict[str, Any] = field(default_factory=dict)

    def stored(self) -> dict[str, Any]:
        """Everything, secrets included (the store keeps this; nothing else sees it)."""
        out = self.view(secrets=True)
        del out["id"], out["secret_set"]
        return out

    def view(self, secrets: bool = False) -> dict[str, Any]:
        """What the API shows: secrets never, the URL without credentials."""
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "url": (self.url if secrets else redact_url(self.url, self.type)) or None,
            "enabled": self.enabled,
            "min_severity": self.min_severity,
            "filter": self.raw_filter,
            "events": list(self.events),
            "max_attempts": self.max_attempts,
            "max_age_seconds": self.max_age_seconds,
            "timeout_seconds": self.timeout_seconds,
            "rate_limit_per_minute": self.rate_limit_per_minute,
            "backoff_seconds": self.backoff_seconds,
            "max_backoff_seconds": self.max_backoff_seconds,
            "secret_set": bool(self.secret or self.routing_key or self.password),
        }
        if self.type == "email":
            out |= {"username": self.username, "from": self.mail_from, "to": list(self.mail_to)}
            out |= {"starttls": self.starttls, "ca_file": self.ca_file}
        if self.type == "kafka":
            out |= {"brokers": self.brokers, "topic": self.topic}
        if secrets:
            out |= {"secret": self.secret, "routing_key": self.routing_key}
            out |= {"password": self.password}
        return out


def redact_url(url: str, type_: str) -> str:
    """Scheme, host and port; a webhook keeps its path (Slack's path is its token)."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    path = "/…" if type_ == "slack" and parts.path not in ("", "/") else parts.path
    query = "…" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, path, query, ""))


def _text(body: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise SpecError(name, "is required")
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 4096:
        raise SpecError(name, "must be a non-empty string")
    return value.strip()


def _url(raw: str | None, type_: str) -> str:
    if type_ == "kafka":
        if raw is not None:
            raise SpecError("url", "a kafka output takes brokers and topic instead")
        return ""
    if raw is None:
        if type_ == "pagerduty":
            return PAGERDUTY_URL
        raise SpecError("url", "is required")
    parts = urlsplit(raw)
    schemes = ("smtp",) if type_ == "email" else ("http", "https")
    if parts.scheme not in schemes or not parts.hostname:
        kind = "an smtp://host:port" if type_ == "email" else "an http(s)"
        raise SpecError("url", f"{redact_url(raw, type_)!r} is not {kind} URL")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise SpecError("url", "has an invalid port") from None
    return raw


def _number(body: dict[str, Any], name: str, default: float | None) -> float | None:
    value = body.get(name, default)
    if value is None:
        return None
    low, high = _LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise SpecError(name, f"must be a number from {low:g} to {high:g}")
    return value


def _events(raw: Any, type_: str) -> tuple[str, ...]:
    if raw is None:
        return DEFAULT_EVENTS
    if not isinstance(raw, list) or not raw or not all(isinstance(e, str) for e in raw):
        raise SpecError("events", f"must be a non-empty list of {', '.join(EVENTS)}")
    unknown = sorted(set(raw) - set(EVENTS))
    if unknown:
        raise SpecError("events", f"{unknown[0]!r} is not one of {', '.join(EVENTS)}")
    if type_ == "pagerduty" and "state" in raw:
        raise SpecError("events", "a pagerduty output takes new, update and resolved")
    return tuple(e for e in EVENTS if e in raw)


_OWN_EXTRAS = {
    "email": {"username", "from", "to", "starttls", "ca_file", "password"},
    "kafka": {"brokers", "topic"},
}
_ADDRESS = re.compile(r"^[^@\s<>,]+@[^@\s<>,]+$")


def _addresses(raw: Any) -> tuple[str, ...]:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        raise SpecError("to", "is required: an address or a list of them")
    if not all(isinstance(a, str) and _ADDRESS.match(a) for a in items):
        raise SpecError("to", "must be e-mail addresses (name@domain)")
    return tuple(items)


def _brokers(raw: str | None) -> str:
    if raw is None:
        raise SpecError("brokers", "is required: host:port[,host:port...]")
    for broker in raw.split(","):
        host, _, port = broker.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SpecError("brokers", f"{broker.strip()!r} is not host:port")
    return raw


def _extras(body: dict[str, Any], type_: str) -> dict[str, Any]:
    """The settings only an email or kafka output takes, as OutputSpec fields."""
    given = {k for k, v in body.items() if v is not None}
    foreign = sorted(given & (set(EXTRAS) | {"password"}) - _OWN_EXTRAS.get(type_, set()))
    if foreign:
        raise SpecError(foreign[0], f"is not a setting of a {type_} output")
    if type_ == "kafka":
        topic = _text(body, "topic", required=True)
        return {"brokers": _brokers(_text(body, "brokers")), "topic": topic}
    if type_ != "email":
        return {}
    sender = _text(body, "from", required=True) or ""
    if not _ADDRESS.match(sender):
        raise SpecError("from", "must be an e-mail address (name@domain)")
    starttls = body.get("starttls", True)
    if not isinstance(starttls, bool):
        raise SpecError("starttls", "must be true or false")
    username, password = _text(body, "username"), _text(body, "password")
    if (username is None) != (password is None):
        raise SpecError("password", "username and password go together")
    if password is not None and not starttls:
        raise SpecError("password", "is never sent in the clear: keep starttls on")
    return {
        "mail_from": sender,
        "mail_to": _addresses(body.get("to")),
        "starttls": starttls,
        "ca_file": _text(body, "ca_file"),
        "username": username,
        "password": password,
    }


def parse_spec(body: dict[str, Any], output_id: str) -> OutputSpec:
    """An output from its JSON/YAML form; SpecError names the first bad setting."""
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise SpecError(unknown[0], f"unknown setting; use {', '.join(sorted(FIELDS))}")
    type_ = _text(body, "type", required=True)
    if type_ not in TYPES:
        raise SpecError("type", f"{type_!r} is not one of {', '.join(TYPES)}")
    severity = _text(body, "min_severity")
    if severity is not None and severity not in RANK:
        raise SpecError("min_severity", f"{severity!r} is not one of {', '.join(RANK)}")
    raw_filter = body.get("filter") or {}
    try:
        filt = parse_filter(raw_filter)
    except FilterError as exc:
        raise SpecError(exc.field, exc.message) from None
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise SpecError("enabled", "must be true or false")
    routing_key = _text(body, "routing_key")
    if type_ == "pagerduty" and routing_key is None:
        raise SpecError("routing_key", "is required for a pagerduty output")
    rate = _number(body, "rate_limit_per_minute", None)
    return OutputSpec(
        id=output_id,
        name=_text(body, "name", required=True) or "",
        type=type_,
        url=_url(_text(body, "url"), type_),
        secret=_text(body, "secret"),
        routing_key=routing_key,
        enabled=enabled,
        min_severity=severity,
        filter=filt,
        events=_events(body.get("events"), type_),
        max_attempts=int(_number(body, "max_attempts", 12) or 12),
        max_age_seconds=float(_number(body, "max_age_seconds", 86400.0) or 86400.0),
        timeout_seconds=float(_number(body, "timeout_seconds", 10.0) or 10.0),
        rate_limit_per_minute=None if rate is None else int(rate),
        backoff_seconds=float(_number(body, "backoff_seconds", 1.0) or 1.0),
        max_backoff_seconds=float(_number(body, "max_backoff_seconds", 300.0) or 300.0),
        raw_filter=filt.as_dict(),
        **_extras(body, type_),
    )


def patched(spec: OutputSpec, changes: dict[str, Any]) -> OutputSpec:
    """`spec` with `changes` applied (secrets left out of `changes` are kept)."""
    if "type" in changes and changes["type"] != spec.type:
        raise SpecError("type", "cannot change; create a new output instead")
    body = {k: v for k, v in spec.stored().items() if v is not None}
    body |= changes
    return parse_spec({k: v for k, v in body.items() if v is not None}, spec.id)
