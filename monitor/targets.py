"""Which of an event's targets the state declares, and what the call did to it."""

from __future__ import annotations

import contextlib
from typing import Any

from monitor.drifts import DriftFactory
from monitor.tfstate import ResourceInstance, StateIndex
from monitor.types import ChangeEvent, Drift, DriftKind, SkipReason
from rules.catalogue import EventRule
from rules.paths import WILDCARD, Template, extract, render
from rules.targets import ANY, AttributeRule, Change, Target, When
from rules.transforms import STATE_PARSERS, TRANSFORMS, TransformError, canon_scalar

Outcome = tuple[list[Drift], str | None]  # the drifts, or why there are none


def _request_value(root: dict[str, Any], attr: AttributeRule) -> Any:
    """What the call sets the attribute to, as the record has it; None when it does not say."""
    if attr.fields:
        block = {}
        for name, path in attr.fields:
            found = extract(root, path)
            if found:
                block[name] = found[0]
        return block or None
    if attr.path is None:
        return attr.const
    values = extract(root, attr.path)
    if not values:
        return None
    return values if WILDCARD in attr.path else values[0]


def _applies(root: dict[str, Any], when: When) -> bool:
    """The record carries the values a `when:` asks for."""
    for path, want in when:
        found = extract(root, path)
        if not found:
            return False
        if want == ANY:
            continue
        have = canon_scalar(found[0])
        if isinstance(want, tuple):
            if have not in {canon_scalar(w) for w in want}:
                return False
        elif have != canon_scalar(want):
            return False
    return True


def _first_rendered(root: dict[str, Any], templates: tuple[Template, ...]) -> str | None:
    for template in templates:
        text = render(root, template)
        if text is not None:
            return text
    return None


class TargetResolver:
    """Tries an entry's targets in order against one state index."""

    __slots__ = ("drifts", "index")

    def __init__(self, index: StateIndex, drifts: DriftFactory) -> None:
        self.index = index
        self.drifts = drifts

    def resolve(
        self,
        event: ChangeEvent,
        rule: EventRule,
        root: dict[str, Any],
        rid: str | None,
        detected_at: str,
    ) -> Outcome:
        """The first target the state declares for the resource `rid` (or the targets' own
        ids) names, and what the call did to it; else what it created, or why nothing."""
        named = rid
        for target in rule.targets:
            if target.when and not _applies(root, target.when):
                continue
            if target.shared:
                key = rid
                inst = None if rid is None else self.index.find(target.resource_type, rid)
            else:
                key, inst = self._find_own(target, root)
            if key is None:
                continue
            named = named or key
            if inst is not None:
                return self._outcome(event, rule, target, root, inst, detected_at)
        unmanaged = rule.unmanaged
        if unmanaged is not None and (not unmanaged.when or _applies(root, unmanaged.when)):
            rid_out = _first_rendered(root, unmanaged.ids) or named
            if rid_out is not None:
                return self._unmanaged(event, rule, unmanaged.resource_type, rid_out, detected_at)
        if named is None:
            return [], SkipReason.NO_ID
        if rule.change is Change.CREATE and unmanaged is None:
            return self._unmanaged(event, rule, rule.targets[0].resource_type, named, detected_at)
        return [], SkipReason.NOT_IN_STATE

    def _unmanaged(
        self, event: ChangeEvent, rule: EventRule, rtype: str, rid: str, detected_at: str
    ) -> Outcome:
        kind = DriftKind.UNMANAGED
        return [
            self.drifts.make(event, rule, kind, rtype, rid, None, None, None, None, detected_at)
        ], None

    def _find_own(
        self, target: Target, root: dict[str, Any]
    ) -> tuple[str | None, ResourceInstance | None]:
        """A target's own key in this event (its id, or its match values) and the instance."""
        if target.ids:
            for template in target.ids:
                key = render(root, template)
                if key is not None:
                    return key, self.index.find(target.resource_type, key)
            return None, None
        values = tuple(render(root, template) for _, template in target.match)
        if None in values:
            return None, None
        names = tuple(name for name, _ in target.match)
        found = self.index.find_match(target.resource_type, names, values)  # type: ignore[arg-type]
        return "/".join(values), found  # type: ignore[arg-type]

    def _outcome(
        self,
        event: ChangeEvent,
        rule: EventRule,
        target: Target,
        root: dict[str, Any],
        inst: ResourceInstance,
        detected_at: str,
    ) -> Outcome:
        if target.creates:
            # The declared sibling shows how this resource's kind is managed; the call added
            # one more that no state declares.
            rid = _first_rendered(root, target.creates)
            if rid is None:
                return [], SkipReason.NO_ID
            return self._unmanaged(event, rule, target.resource_type, rid, detected_at)
        if target.change is Change.CREATE:
            return [], SkipReason.IN_STATE
        if target.change is Change.DELETE:
            kind = DriftKind.MISSING
            return [
                self.drifts.make(
                    event,
                    rule,
                    kind,
                    inst.type,
                    inst.resource_id,
                    inst,
                    None,
                    None,
                    None,
                    detected_at,
                )
            ], None
        found = self._modified(event, rule, target.attributes, root, inst, detected_at)
        return found, None if found else SkipReason.NO_CHANGE

    def _modified(
        self,
        event: ChangeEvent,
        rule: EventRule,
        attributes: tuple[AttributeRule, ...],
        root: dict[str, Any],
        inst: ResourceInstance,
        detected_at: str,
    ) -> list[Drift]:
        drifts: list[Drift] = []
        extracted = False
        state = inst.attributes
        for attr in attributes:
            if attr.field.split(".", 1)[0] not in state:
                # This state (resource type or provider version) does not hold the
                # attribute: nothing to compare against, so no claim about it.
                continue
            new_raw = _request_value(root, attr)
            if new_raw is None:
                continue
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
                    self.drifts.make(
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
            drifts.append(self.drifts.coarse(event, rule, inst, detected_at))
        return drifts
