"""Drift records as detection builds them: the stable id, severity and secret redaction."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from monitor.noise import CustomRule, Noise
from monitor.redact import REDACTED, is_secret_name, redact
from monitor.tfstate import ResourceInstance, StateLabel
from monitor.types import ChangeEvent, Drift, DriftKind
from rules.catalogue import EventRule
from rules.severity import SeverityRules


def drift_id(event_id: str, resource_id: str, field: str | None) -> str:
    key = f"{event_id}|{resource_id}|{field or ''}".encode()
    return "drift-" + hashlib.blake2b(key, digest_size=10).hexdigest()


class DriftFactory:
    """Builds the drifts of one detector: rated by its custom rules, then its severity
    rules; secrets redacted."""

    __slots__ = ("declared_by", "noise", "severity")

    def __init__(
        self,
        severity: SeverityRules,
        declared_by: Callable[[ResourceInstance], tuple[StateLabel, ...]] = lambda inst: (),
        noise: Noise | None = None,
    ) -> None:
        self.severity = severity
        self.declared_by = declared_by  # the states (source, workspace) declaring a resource
        self.noise = noise or Noise()

    def coarse(
        self, event: ChangeEvent, rule: EventRule | None, inst: ResourceInstance, detected_at: str
    ) -> Drift:
        """A change to a managed resource known only coarsely: no field, no values."""
        kind = DriftKind.MODIFIED
        return self.make(
            event, rule, kind, inst.type, inst.resource_id, inst, None, None, None, detected_at
        )

    def make(
        self,
        event: ChangeEvent,
        rule: EventRule | None,
        kind: DriftKind,
        rtype: str,
        rid: str,
        inst: ResourceInstance | None,
        field: str | None,
        old: Any,
        new: Any,
        detected_at: str,
    ) -> Drift:
        """One drift of `kind` on (`rtype`, `rid`), declared as `inst` (None: unmanaged)."""
        # The one boundary: the store, the hub, the graph and the API all see these values.
        if field is not None and (
            any(is_secret_name(part) for part in field.split("."))
            or (inst is not None and inst.is_sensitive(field))
        ):
            old = REDACTED if old is not None else None
            new = REDACTED if new is not None else None
        else:
            old, new = redact(old), redact(new)
        category = rule.category if rule else "other"
        custom = self._custom(event, rtype, field, inst)
        if custom is not None and custom.category:
            category = custom.category
        event_key = f"{event.event_source}:{event.event_name}"
        if custom is not None and custom.severity:
            severity = custom.severity
        elif rule and rule.severity and event_key not in self.severity.events:
            severity = rule.severity
        else:
            severity = self.severity.rate(category, field, kind.value, event_key)
        return Drift(
            id=drift_id(event.event_id, rid, field),
            kind=kind,
            severity=severity,
            category=category,
            provider=rule.provider if rule else event.provider,
            account_id=event.account_id,
            region=event.region,
            resource_type=rtype,
            resource_id=rid,
            resource_address=inst.address if inst else None,
            field=field,
            old_value=old,
            new_value=new,
            event_id=event.event_id,
            event_name=event.event_name,
            event_source=event.event_source,
            event_time=event.event_time,
            detected_at=detected_at,
            actor=event.actor,
            source_ip=event.source_ip,
            user_agent=event.user_agent,
            states=self.declared_by(inst) if inst else (),
        )

    def _custom(
        self, event: ChangeEvent, rtype: str, field: str | None, inst: ResourceInstance | None
    ) -> CustomRule | None:
        rules = self.noise.current
        if not rules.by_custom:
            return None
        tags = None
        if inst is not None:
            tags = inst.attributes.get("tags_all") or inst.attributes.get("tags")
        return rules.rate(event.event_name, rtype, field, event.account_id, tags)
