"""The contract: the values every package passes across its boundaries, and nothing else.

Events, alerts, actors and drifts; the Severity / Status / DriftKind / SkipReason enums (the
only lists of them); what a decoder yields (`Decoded`); what a source is and what it calls
(`Source`, `OnItems`); the injectable `Clock`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Protocol

from monitor.actors import UNKNOWN_ACTOR, Actor, actor_from_identity, text
from monitor.redact import redact
from monitor.tfstate import StateLabel
from rules.catalogue import Severity

__all__ = [
    "UNKNOWN_ACTOR",
    "Actor",
    "ChangeEvent",
    "Clock",
    "DecodeError",
    "Decoded",
    "Drift",
    "DriftKind",
    "FalcoAlert",
    "Observer",
    "OnItems",
    "Severity",
    "SkipReason",
    "SkippedChange",
    "Source",
    "Status",
]

Clock = Callable[[], str]
"""Now, as ISO 8601 UTC text (`monitor.clock.utc_now`; tests inject a fixed one)."""


class DriftKind(StrEnum):
    """What kind of departure: a declared attribute changed, or a resource outside or gone."""

    MODIFIED = "modified"
    UNMANAGED = "unmanaged"
    MISSING = "missing"


class Status(StrEnum):
    """Where a drift is in its lifecycle (the lifecycle policy says which moves are allowed)."""

    DETECTED = "detected"
    INVESTIGATING = "investigating"
    RESOLVED = "resolved"


class SkipReason(StrEnum):
    """Why a change produced no drift (counted in summaries and /stats)."""

    FAILED = "failed call"
    READ_ONLY = "read-only call"
    TERRAFORM = "made by Terraform"
    SERVICE = "service-internal call"
    UNMAPPED = "not in the catalogue"
    NOT_DRIFT = "operational call (listed as not drift)"
    NO_ID = "no resource identifier in the record"
    NOT_IN_STATE = "resource not in state"
    IN_STATE = "created resource is in state"
    NO_CHANGE = "matches state"
    DISABLED = "disabled rule"
    OUT_OF_SCOPE = "unmanaged outside the watched scope"


class _Unread:
    """The type of a lazily parsed field not read yet."""


_UNREAD = _Unread()


def _read_only(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


class ChangeEvent:
    """One cloud API call (or audit event), decoded but not yet judged.

    The record is kept in CloudTrail's shape (the decoders normalise other sources to it);
    fields other than the identifying ones are read from it on first use, so a call that is
    dismissed early (read-only, failed, made by Terraform) costs almost nothing. It is frozen:
    its fields are `Final` (mypy refuses assignment; a runtime guard measured 0.75 us more per
    event to build) and the record is never changed after decoding.
    """

    __slots__ = (
        "_actor",
        "_read_only",
        "event_id",
        "event_name",
        "event_source",
        "event_time",
        "provider",
        "record",
    )

    def __init__(
        self,
        event_id: str,
        event_source: str,
        event_name: str,
        event_time: str,
        record: dict[str, Any],
        provider: str = "aws",
    ) -> None:
        self.event_id: Final = event_id
        self.event_source: Final = event_source
        self.event_name: Final = event_name
        self.event_time: Final = event_time
        self.record: Final = record
        self.provider: Final = provider
        self._actor: Actor | None = None
        self._read_only: bool | _Unread | None = _UNREAD

    def __repr__(self) -> str:
        return f"ChangeEvent({self.event_id!r}, {self.event_source!r}, {self.event_name!r})"

    @property
    def actor(self) -> Actor:
        if self._actor is None:
            self._actor = actor_from_identity(self.record.get("userIdentity"))
        return self._actor

    @property
    def actor_key(self) -> str:
        """`actor.key`, without building the Actor when the record names an ARN or principal
        (the graph asks this of every call it sees, detection builds the Actor of most)."""
        actor = self._actor
        if actor is not None:
            return actor.key
        uid = self.record.get("userIdentity")
        if uid.__class__ is dict:
            key = uid.get("arn") or uid.get("principalId")
            if key and key.__class__ is str:
                return key
        return self.actor.key

    @property
    def region(self) -> str | None:
        value = self.record.get("awsRegion")
        return value if value.__class__ is str or value is None else text(value)

    @property
    def account_id(self) -> str | None:
        value = self.record.get("recipientAccountId")
        if value.__class__ is not str and value is not None:
            value = text(value)
        return value or self.actor.account_id

    @property
    def source_ip(self) -> str | None:
        value = self.record.get("sourceIPAddress")
        return value if value.__class__ is str or value is None else text(value)

    @property
    def user_agent(self) -> str | None:
        ua = self.record.get("userAgent")
        if ua.__class__ is not str:
            return None if ua is None else text(ua)
        if ua.startswith("[") and ua.endswith("]"):
            return ua[1:-1]  # S3 data events wrap it in brackets
        return ua

    @property
    def request(self) -> dict[str, Any] | None:
        return self.record.get("requestParameters")

    @property
    def response(self) -> dict[str, Any] | None:
        return self.record.get("responseElements")

    @property
    def error_code(self) -> str | None:
        value = self.record.get("errorCode")
        return value if value.__class__ is str or value is None else text(value)

    @property
    def read_only(self) -> bool | None:
        # Detection asks first and the graph asks again: parsed once.
        value = self._read_only
        if value is _UNREAD:
            value = self.record.get("readOnly")
            if value is not True and value is not False and value is not None:
                value = _read_only(value)  # "true" from pipelines that stringify it
            self._read_only = value
        return value  # type: ignore[return-value]

    @property
    def session(self) -> str | None:
        uid = self.record.get("userIdentity")
        key = text(uid.get("accessKeyId")) if isinstance(uid, dict) else None
        return key or self.actor.principal_id

    def root(self) -> dict[str, Any]:
        """The record as catalogue paths see it (requestParameters, awsRegion, ...)."""
        return self.record

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.event_id,
            "provider": self.provider,
            "event_source": self.event_source,
            "event_name": self.event_name,
            "event_time": self.event_time,
            "region": self.region,
            "account_id": self.account_id,
            "actor": self.actor.as_dict(),
            "source_ip": self.source_ip,
            "user_agent": self.user_agent,
            "error_code": self.error_code,
            "read_only": self.read_only,
        }


@dataclass(frozen=True, slots=True)
class FalcoAlert:
    """A Falco runtime alert (any source other than a CloudTrail change)."""

    id: str
    time: str
    priority: str
    severity: str
    rule: str
    output: str
    source: str | None
    hostname: str | None
    tags: tuple[str, ...] = ()
    output_fields: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "timestamp": self.time,
            "priority": self.priority,
            "severity": self.severity,
            "rule": self.rule,
            "output": self.output,
            "source": self.source,
            "hostname": self.hostname,
            "tags": list(self.tags),
            # Every way an alert leaves the process goes through here.
            "output_fields": redact(self.output_fields),
        }


@dataclass(frozen=True, slots=True)
class Drift:
    """A departure of reality from the declared state, with its evidence."""

    id: str
    kind: DriftKind
    severity: str
    category: str
    provider: str
    account_id: str | None
    region: str | None
    resource_type: str
    resource_id: str
    resource_address: str | None
    field: str | None
    old_value: Any
    new_value: Any
    event_id: str
    event_name: str
    event_source: str
    event_time: str
    detected_at: str
    actor: Actor
    source_ip: str | None
    user_agent: str | None
    status: str = "detected"
    # The states declaring the resource (source URL, workspace, lineage); empty if unmanaged.
    states: tuple[StateLabel, ...] = ()
    # The suppression (or `.driftignore:LINE`) that keeps this drift off the `drifts` topic.
    suppressed_by: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind.value,
            "severity": self.severity,
            "category": self.category,
            "provider": self.provider,
            "account_id": self.account_id,
            "region": self.region,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "resource_address": self.resource_address,
            "field": self.field,
            "old_value": self.old_value,
            "new_value": self.new_value,
            "event_id": self.event_id,
            "event_name": self.event_name,
            "event_source": self.event_source,
            "event_time": self.event_time,
            "detected_at": self.detected_at,
            "actor": self.actor.as_dict(),
            "source_ip": self.source_ip,
            "user_agent": self.user_agent,
            "status": self.status,
            "states": [s.as_dict() for s in self.states],
            "workspace": self.states[0].workspace if self.states else None,
        }
        if self.suppressed_by is not None:
            out["suppressed_by"] = self.suppressed_by
        return out


class DecodeError(ValueError):
    """A record that cannot be decoded; `reason` is a short, stable, countable phrase."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class SkippedChange:
    """A change found, without decoding it in full, to be one that cannot be drift and is not
    stored (a read-only call, failed or not); `reason` is the detector's skip reason."""

    reason: SkipReason


Decoded = ChangeEvent | FalcoAlert | DecodeError | SkippedChange
"""What a decoder yields for one record."""

Observer = Callable[[list[ChangeEvent], list[Drift], list[FalcoAlert]], None]
"""Told of each committed batch: its changes, new drifts and new alerts (the graph)."""

OnItems = Callable[[list[Decoded]], Awaitable[Any]]
"""What a source hands its decoded records to; it returns once they are stored."""


class Source(Protocol):
    """A live input: started and stopped by the app, reporting its state on /health."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def status(self) -> dict[str, Any]: ...
