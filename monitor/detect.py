"""Detection: a pure function of (event, state index, rules, clock) -> drifts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from monitor.clock import utc_now
from monitor.drifts import DriftFactory
from monitor.targets import TargetResolver
from monitor.tfstate import ResourceInstance, StateIndex
from monitor.types import ChangeEvent, Clock, Drift, SkipReason
from rules.catalogue import Catalogue, EventRule
from rules.paths import EACH, extract
from rules.severity import SeverityRules

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


def _fan_out(rule: EventRule, root: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """The record once, or once per item of the entry's `each:` (the item as `each`)."""
    for path in rule.each:
        items = extract(root, path)
        if items:
            return [{**root, EACH: item} for item in items]
    return (root,)


def _slots(rule: EventRule, root: dict[str, Any]) -> list[str | None]:
    """The resource ids the entry's id paths name (none: the targets' own ids name it)."""
    ids: list[Any] = []
    for path in rule.id_paths:
        ids = extract(root, path)
        if ids:
            break
    slots: list[str | None] = [
        str(i) for i in ids if isinstance(i, (str, int)) and not isinstance(i, bool)
    ]
    if len(rule.resource_types) < len(rule.targets):
        # Targets with their own id name one resource: one pass (per `each:` item) is about
        # one thing.
        return slots[:1] or [None]
    return slots


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
        self.drifts = DriftFactory(severity, index.declared_by)
        self.targets = TargetResolver(index, self.drifts)

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
        drifts: dict[str, Drift] = {}
        reason: str = SkipReason.NO_ID
        detected_at: str | None = None
        for item in _fan_out(rule, root):
            for rid in _slots(rule, item):
                if detected_at is None:
                    detected_at = self.clock()
                found, why = self.targets.resolve(event, rule, item, rid, detected_at)
                for d in found:
                    drifts.setdefault(d.id, d)
                if why:
                    reason = why
        out = sorted(
            drifts.values(), key=lambda d: (d.resource_address or "", d.resource_id, d.field or "")
        )
        return Detection(tuple(out), None if out else reason)

    def _unmapped(self, event: ChangeEvent) -> Detection:
        """A mutating call the catalogue does not know: a coarse drift per managed resource
        its request names."""
        if self.catalogue.is_skipped(event.event_source, event.event_name):
            return Detection((), SkipReason.NOT_DRIFT)
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
        drifts = [
            self.drifts.coarse(event, None, inst, detected_at) for _, inst in sorted(seen.items())
        ]
        return Detection(tuple(drifts))
