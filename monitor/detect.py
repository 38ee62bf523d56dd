"""Detection: a pure function of (event, state index, rules, clock) -> drifts."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from monitor.clock import utc_now
from monitor.redact import REDACTED, is_secret_name, redact
from monitor.tfstate import ResourceInstance, StateIndex
from monitor.types import ChangeEvent, Clock, Drift, DriftKind, SkipReason
from rules.catalogue import Catalogue, Change, EventRule
from rules.paths import WILDCARD, extract
from rules.severity import SeverityRules
from rules.transforms import STATE_PARSERS, TRANSFORMS, TransformError

READ_PREFIXES = (
    "Get",
    "List",
    "Describe",
    "Head",
    "Lookup",
    "Search",
    "Check",
    "Batch Get",
    "Query",
    "Scan",
    "Select",
    "View",
    "Preview",
    "Estimate",
    "Validate",
    "Test",
    "Simulate",
    "Generate",
    "Decrypt",
    "Encrypt",
    "Assume",
    "Download",
    "Poll",
)
MUTATING_PREFIXES = (
    "Put",
    "Update",
    "Modify",
    "Set",
    "Attach",
    "Detach",
    "Associate",
    "Disassociate",
    "Add",
    "Remove",
    "Enable",
    "Disable",
    "Authorize",
    "Revoke",
    "Replace",
    "Change",
    "Tag",
    "Untag",
    "Start",
    "Stop",
    "Reset",
    "Restore",
    "Register",
    "Deregister",
    "Apply",
    "Create",
    "Delete",
    "Terminate",
)
# Platform identities acting on their own behalf (the k8s and GCP decoders use the last two).
SERVICE_ACTORS = frozenset({"AWSService", "KubernetesSystem", "ServiceAgent"})
SERVICE_ROLE_PATH = "/aws-service-role/"
# Service-linked roles are always named so; Falco's ct.* fields lose the role's path.
SERVICE_ROLE_NAME = "/AWSServiceRoleFor"


@dataclass(frozen=True, slots=True)
class Detection:
    drifts: tuple[Drift, ...]
    skipped: str | None = None


def drift_id(event_id: str, resource_id: str, field: str | None) -> str:
    key = f"{event_id}|{resource_id}|{field or ''}".encode()
    return "drift-" + hashlib.blake2b(key, digest_size=10).hexdigest()


class Detector:
    """Judges change events against the declared state. Holds no mutable state."""

    def __init__(
        self,
        catalogue: Catalogue,
        severity: SeverityRules,
        index: StateIndex,
        apply_principals: Iterable[str] = (),
        clock: Clock = utc_now,
    ) -> None:
        self.catalogue = catalogue
        self.severity = severity
        self.index = index
        self.apply_principals = frozenset(apply_principals)
        self.clock = clock

    def with_index(self, index: StateIndex) -> Detector:
        """The same rules over a new state (after a reload)."""
        return Detector(self.catalogue, self.severity, index, self.apply_principals, self.clock)

    def skip_reason(self, event: ChangeEvent) -> str | None:
        """Why this event cannot be drift whatever the state says, or None."""
        if event.error_code:
            return SkipReason.FAILED
        if event.read_only:
            return SkipReason.READ_ONLY
        ua = event.user_agent
        if ua and "Terraform/" in ua:
            return SkipReason.TERRAFORM
        actor = event.actor
        role = actor.role
        if actor.type in SERVICE_ACTORS or (
            role and (SERVICE_ROLE_PATH in role or SERVICE_ROLE_NAME in role)
        ):
            return SkipReason.SERVICE
        if self.apply_principals and (
            actor.arn in self.apply_principals
            or actor.role in self.apply_principals
            or actor.user_name in self.apply_principals
        ):
            return SkipReason.TERRAFORM
        return None

    def detect(self, event: ChangeEvent) -> Detection:
        skip = self.skip_reason(event)
        if skip:
            return Detection((), skip)
        rule = self.catalogue.lookup(event.event_source, event.event_name)
        if rule is None:
            return self._unmapped(event)
        root = event.root()
        ids: list[Any] = []
        for path in rule.id_paths:
            ids = extract(root, path)
            if ids:
                break
        if not ids:
            return Detection((), SkipReason.NO_ID)
        detected_at = self.clock()
        drifts: list[Drift] = []
        reason = SkipReason.NO_ID
        for raw_id in ids:
            if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool):
                continue
            rid = str(raw_id)
            inst = None
            for rtype in rule.resource_types:
                inst = self.index.find(rtype, rid)
                if inst is not None:
                    break
            if rule.change is Change.CREATE:
                if inst is None:
                    drifts.append(
                        self._drift(
                            event,
                            rule,
                            DriftKind.UNMANAGED,
                            rule.resource_types[0],
                            rid,
                            None,
                            None,
                            None,
                            None,
                            detected_at,
                        )
                    )
                else:
                    reason = SkipReason.IN_STATE
            elif inst is None:
                reason = SkipReason.NOT_IN_STATE
            elif rule.change is Change.DELETE:
                drifts.append(
                    self._drift(
                        event,
                        rule,
                        DriftKind.MISSING,
                        inst.type,
                        inst.resource_id,
                        inst,
                        None,
                        None,
                        None,
                        detected_at,
                    )
                )
            else:
                found = self._modified(event, rule, root, inst, detected_at)
                if found:
                    drifts.extend(found)
                else:
                    reason = SkipReason.NO_CHANGE
        drifts.sort(key=lambda d: (d.resource_address or "", d.resource_id, d.field or ""))
        return Detection(tuple(drifts), None if drifts else reason)

    def _modified(
        self,
        event: ChangeEvent,
        rule: EventRule,
        root: dict[str, Any],
        inst: ResourceInstance,
        detected_at: str,
    ) -> list[Drift]:
        drifts: list[Drift] = []
        extracted = False
        attributes = inst.attributes
        for attr in rule.attributes:
            if attr.field.split(".", 1)[0] not in attributes:
                # This state (resource type or provider version) does not hold the
                # attribute: nothing to compare against, so no claim about it.
                continue
            if attr.path is None:
                new_raw: Any = attr.const
            else:
                values = extract(root, attr.path)
                if not values:
                    continue
                new_raw = values if WILDCARD in attr.path else values[0]
            if attr.mapping:
                table = dict(attr.mapping)
                new_raw = table.get(str(new_raw), new_raw)
            make, canon = TRANSFORMS[attr.transform]
            old = inst.value(attr.field)
            parser = STATE_PARSERS.get(attr.transform)
            if parser is not None:
                with contextlib.suppress(TransformError):
                    old = parser(old)
            try:
                new = make(new_raw, old)
                differs = canon(new) != canon(old)
            except TransformError:
                continue
            extracted = True
            if differs:
                drifts.append(
                    self._drift(
                        event,
                        rule,
                        DriftKind.MODIFIED,
                        inst.type,
                        inst.resource_id,
                        inst,
                        attr.field,
                        old,
                        new,
                        detected_at,
                    )
                )
        if not extracted:
            drifts.append(self._coarse(event, rule, inst, detected_at))
        return drifts

    def _unmapped(self, event: ChangeEvent) -> Detection:
        """A mutating call the catalogue does not know: a coarse drift per managed resource
        its request names."""
        name = event.event_name
        if event.read_only is None and name.startswith(READ_PREFIXES):
            return Detection((), SkipReason.READ_ONLY)
        if not name.startswith(MUTATING_PREFIXES) or not event.request:
            return Detection((), SkipReason.UNMAPPED)
        seen: dict[str, ResourceInstance] = {}
        # A resource reporting about itself (an instance's agent whose role session is
        # named after the instance) is telemetry, not a change to it.
        own = event.actor.user_name
        for value in event.request.values():
            if isinstance(value, str) and len(value) > 2 and value != own:
                for inst in self.index.find_any(value):
                    seen.setdefault(inst.address, inst)
        if not seen:
            return Detection((), SkipReason.UNMAPPED)
        detected_at = self.clock()
        drifts = [self._coarse(event, None, inst, detected_at) for _, inst in sorted(seen.items())]
        return Detection(tuple(drifts))

    def _coarse(
        self, event: ChangeEvent, rule: EventRule | None, inst: ResourceInstance, detected_at: str
    ) -> Drift:
        """A change to a managed resource known only coarsely: no field, no values."""
        kind = DriftKind.MODIFIED
        return self._drift(
            event, rule, kind, inst.type, inst.resource_id, inst, None, None, None, detected_at
        )

    def _drift(
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
        event_key = f"{event.event_source}:{event.event_name}"
        if rule and rule.severity and event_key not in self.severity.events:
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
        )
