"""Domain values that cross boundaries: events, alerts, actors and drifts."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class DriftKind(StrEnum):
    MODIFIED = "modified"
    UNMANAGED = "unmanaged"
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change. `user_name` is the person-like name (session name for roles)."""

    type: str
    principal_id: str | None = None
    arn: str | None = None
    account_id: str | None = None
    user_name: str | None = None
    role: str | None = None
    invoked_by: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "principal_id": self.principal_id,
            "arn": self.arn,
            "account_id": self.account_id,
            "user_name": self.user_name,
        }
        if self.role is not None:
            out["role"] = self.role
        if self.invoked_by is not None:
            out["invoked_by"] = self.invoked_by
        return out

    @property
    def key(self) -> str:
        """A stable identity for grouping: the issuer role for sessions, else the ARN."""
        return self.arn or self.principal_id or self.user_name or self.type


UNKNOWN_ACTOR = Actor(type="Unknown")


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One cloud API call (or audit event), decoded but not yet judged."""

    event_id: str
    provider: str
    event_source: str
    event_name: str
    event_time: str
    region: str | None
    account_id: str | None
    actor: Actor
    source_ip: str | None
    user_agent: str | None
    request: dict[str, Any] | None
    response: dict[str, Any] | None
    error_code: str | None = None
    read_only: bool | None = None
    resources: list[Any] | None = None
    additional: dict[str, Any] | None = None
    session: str | None = None

    def root(self) -> dict[str, Any]:
        """The record as catalogue paths see it."""
        return {
            "requestParameters": self.request,
            "responseElements": self.response,
            "additionalEventData": self.additional,
            "resources": self.resources,
            # Account-wide settings (EBS encryption by default, account public access
            # block) are known to Terraform by region or account id.
            "awsRegion": self.region,
            "recipientAccountId": self.account_id,
        }

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
            "output_fields": self.output_fields,
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

    def as_dict(self) -> dict[str, Any]:
        return {
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
        }
