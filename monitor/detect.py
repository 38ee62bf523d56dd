"""Detection: a pure function of (event, state index, rules, clock) -> drifts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from monitor.clock import utc_now
from monitor.drifts import DriftFactory
from monitor.noise import Noise, NoiseRules
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


# A skip carries no drifts and nothing of the event: one shared value per reason (building a
# frozen dataclass per dismissed record was a tenth of the detection time).
_SKIPPED = {reason: Detection((), reason) for reason in SkipReason}


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
        noise: Noise | None = None,
    ) -> None:
        """`noise` is shared with whoever changes it at runtime (else one is made holding
        `apply_principals`)."""
        self.catalogue = catalogue
        self.severity = severity
        self.index = index
        self.clock = clock
        self.noise = noise or Noise(NoiseRules(apply_principals=frozenset(apply_principals)))
        self.drifts = DriftFactory(severity, index.declared_by, self.noise)
        self.targets = TargetResolver(index, self.drifts)

    def with_index(self, index: StateIndex) -> Detector:
        """The same rules over a new state (after a reload)."""
        return Detector(self.catalogue, self.severity, index, (), self.clock, self.noise)

    def skip_reason(
        self, event: ChangeEvent, apply_principals: frozenset[str] = frozenset()
    ) -> SkipReason | None:
        """Why this event cannot be drift whatever the state says, or None."""
        # Asked of every record and most are dismissed here: the error code and the user
        # agent are read from the record itself rather than through properties (the same
        # fields; the user_agent property only strips S3's brackets, which cannot hide
        # "Terraform/").
        record = event.record
        if record.get("errorCode"):
            return SkipReason.FAILED
        if event.read_only:
            return SkipReason.READ_ONLY
        ua = record.get("userAgent")
        if ua.__class__ is str and "Terraform/" in ua:
            return SkipReason.TERRAFORM
        actor = event.actor
        role = actor.role
        if actor.type in SERVICE_ACTORS or (
            role and (SERVICE_ROLE_PATH in role or SERVICE_ROLE_NAME in role)
        ):
            return SkipReason.SERVICE
        if apply_principals and (
            actor.arn in apply_principals
            or actor.role in apply_principals
            or actor.user_name in apply_principals
        ):
            return SkipReason.TERRAFORM
        return None

    def detect(self, event: ChangeEvent) -> Detection:
        """The event's drifts, after noise control (the rules current when it starts)."""
        rules = self.noise.current
        found = self._detect(event, rules.apply_principals)
        if not found.drifts or not rules.active:
            return found
        now = found.drifts[0].detected_at  # one clock reading decides every expiry
        kept: list[Drift] = []
        reason: str | None = None
        for d in found.drifts:
            judged = rules.judge(d, now)
            if isinstance(judged, str):
                reason = judged
            else:
                kept.append(judged)
        return Detection(tuple(kept), None if kept else reason)

    def _detect(self, event: ChangeEvent, apply_principals: frozenset[str]) -> Detection:
        skip = self.skip_reason(event, apply_principals)
        if skip:
            return _SKIPPED[skip]
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
            return _SKIPPED[SkipReason.NOT_DRIFT]
        name = event.event_name
        if event.read_only is None and name.startswith(READ_PREFIXES):
            return _SKIPPED[SkipReason.READ_ONLY]
        if not name.startswith(MUTATING_PREFIXES) or not event.request:
            return _SKIPPED[SkipReason.UNMAPPED]
        seen: dict[str, ResourceInstance] = {}
        # A resource reporting about itself (an instance's agent whose role session is
        # named after the instance) is telemetry, not a change to it.
        own = event.actor.user_name
        for value in event.request.values():
            if isinstance(value, str) and len(value) > 2 and value != own:
                for inst in self.index.find_any(value):
                    seen.setdefault(inst.address, inst)
        if not seen:
            return _SKIPPED[SkipReason.UNMAPPED]
        detected_at = self.clock()
        drifts = [
            self.drifts.coarse(event, None, inst, detected_at) for _, inst in sorted(seen.items())
        ]
        return Detection(tuple(drifts))
