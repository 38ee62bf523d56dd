"""The drift lifecycle policy, pure: status moves, flood control and accepted baselines.

The store runs the SQL and asks this module what to do; nothing here touches a database.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from monitor.types import Drift, Status

# Forward moves only: detected -> investigating -> resolved (or straight to resolved).
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.DETECTED: frozenset({Status.INVESTIGATING, Status.RESOLVED}),
    Status.INVESTIGATING: frozenset({Status.RESOLVED}),
    Status.RESOLVED: frozenset(),
}
STATUSES = tuple(s.value for s in Status)
DRIFT_TYPES = ("configuration", "security", "compliance")
_SECURITY = frozenset({"iam", "network", "encryption"})
_COMPLIANCE = frozenset({"logging", "monitoring"})


class LifecycleError(Exception):
    """A refused status change; `code` is the API error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def not_found(drift_id: str) -> LifecycleError:
    return LifecycleError("NOT_FOUND", f"Drift with ID '{drift_id}' not found")


def check_move(drift_id: str, current: str, to: str) -> None:
    """Raise LifecycleError unless drift `drift_id` may move from `current` to `to`."""
    if to not in STATUSES:
        raise LifecycleError("VALIDATION_ERROR", f"status must be one of {', '.join(STATUSES)}")
    allowed = TRANSITIONS[Status(current)]
    if to not in allowed:
        names = ", ".join(sorted(allowed)) or "none (resolved is final)"
        raise LifecycleError(
            "CONFLICT", f"cannot move drift {drift_id} from {current} to {to}; allowed: {names}"
        )


def drift_type(category: str | None) -> str:
    """configuration | security | compliance, from the rule category."""
    if category in _SECURITY:
        return "security"
    if category in _COMPLIANCE:
        return "compliance"
    return "configuration"


def canon(value: Any) -> bytes:
    """The canonical bytes of a JSON value (baselines compare these)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def target_key(
    provider: str | None,
    resource_type: str | None,
    resource_id: str | None,
    field: str | None,
    event_name: str,
) -> str:
    """What a baseline is kept for: one field of one resource (or one kind of call on it)."""
    target = field if field is not None else f"event:{event_name}"
    return f"{provider}|{resource_type}|{resource_id}|{target}"


def baseline_key(d: Drift) -> str:
    return target_key(d.provider, d.resource_type, d.resource_id, d.field, d.event_name)


def dedup_key(d: Drift) -> str:
    """Repeats of the same change to the same target share this key (flood control)."""
    digest = hashlib.blake2b(canon(d.new_value), digest_size=12).hexdigest()
    return f"{d.kind.value}|{baseline_key(d)}|{digest}"


def suppressed(d: Drift, baseline: tuple[bytes, bytes] | None) -> bool:
    """True when an accepted baseline (value, state value) covers exactly this change."""
    return (
        baseline is not None
        and baseline[0] == canon(d.new_value)
        and baseline[1] == canon(d.old_value)
    )


# A drift lists at most this many distinct actors; `actor_count` keeps counting past it.
MAX_ACTORS = 10


def actor_entry(d: Drift) -> dict[str, Any]:
    """Who made change `d`, as a drift's `actors` lists them."""
    a = d.actor
    return {
        "type": a.type,
        "user_name": a.user_name,
        "arn": a.arn,
        "principal_id": a.principal_id,
        "source_ip": d.source_ip,
        "first_seen": d.event_time,
    }


def actor_key(entry: dict[str, Any]) -> str:
    """The identity two sightings of one actor share (as `Actor.key`)."""
    return str(entry.get("arn") or entry.get("principal_id") or entry.get("user_name") or "")


@dataclass(frozen=True, slots=True)
class Merge:
    """A repeat folded into an open drift: its new occurrence count, last sighting and actors.

    `new_actor` is the repeat's actor when nobody had made this change as them before.
    """

    parent: str
    occurrences: int
    last_seen: str
    event_id: str
    actors: tuple[dict[str, Any], ...] = ()
    actor_count: int = 1
    new_actor: dict[str, Any] | None = None


def merge(
    d: Drift,
    parent: str,
    occurrences: int,
    last_seen: str | None,
    actors: list[dict[str, Any]],
    actor_count: int,
    seen_before: bool = False,
) -> Merge:
    """How repeat `d` changes the open drift `parent` it repeats.

    `seen_before`: the repeat's actor made an earlier occurrence not in the bounded list.
    """
    kept = tuple(actors)
    entry = actor_entry(d)
    key = actor_key(entry)
    known = seen_before or any(actor_key(a) == key for a in kept)
    new_actor = None if known else entry
    if new_actor is not None:
        actor_count += 1
        if len(kept) < MAX_ACTORS:
            kept = (*kept, entry)
    return Merge(
        parent,
        occurrences + 1,
        max(last_seen or "", d.event_time),
        d.event_id,
        kept,
        actor_count,
        new_actor,
    )
