"""The built-in rule catalogue as `GET /api/v1/rules` lists it, with what is disabled."""

from __future__ import annotations

from typing import Any

from monitor.noise.match import Getter
from monitor.noise.rules import NoiseRules
from rules.catalogue import Catalogue, EventRule
from rules.severity import SeverityRules


def _default_severity(rule: EventRule, severity: SeverityRules) -> str:
    key = f"{rule.event_source}:{rule.event_name}"
    if rule.severity and key not in severity.events:
        return rule.severity
    return severity.rate(rule.category, None, "modified", key)


def _getter(event_name: str, rtype: str) -> Getter:
    def get(key: str) -> tuple[str, ...]:
        if key == "event_name":
            return (event_name,)
        return (rtype,) if key == "resource_type" and rtype else ()

    return get


def catalogue_view(
    catalogue: Catalogue, severity: SeverityRules, noise: NoiseRules
) -> list[dict[str, Any]]:
    """Every entry: event, service, types, fields, default severity and category, and the
    disabled rule (if any) that stops it being reported for all its types."""
    out = []
    for (source, name), rule in sorted(catalogue.rules.items()):
        types = rule.all_types
        off = None
        if noise.by_disabled:
            found = [noise.by_disabled.first(_getter(name, t)) for t in types or ("",)]
            if all(found):
                off = found[0].id if found[0] else None
        out.append(
            {
                "event": name,
                "service": source,
                "provider": rule.provider,
                "types": list(types),
                "fields": sorted({a.field for t in rule.targets for a in t.attributes}),
                "change": rule.change.value,
                "default_severity": _default_severity(rule, severity),
                "category": rule.category,
                "disabled": off is not None,
                "disabled_by": off,
            }
        )
    return out
