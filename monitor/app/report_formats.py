"""`driftline detect` output formats: JSON lines, a table, SARIF 2.1.0 and JUnit XML.

JSON lines stream as drifts are found; the others describe the whole run, so they are
rendered once at the end from every drift and where it was read (file, or file:line).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree as ET

import orjson

from monitor.types import Drift
from rules.severity import RANK

FORMATS = ("jsonl", "table", "sarif", "junit")
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
# Code-scanning UIs know three levels; critical and high both stop a merge.
SARIF_LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note"}


@dataclass(frozen=True, slots=True)
class Found:
    """A drift and the input position it came from (`path` or `path:line`)."""

    drift: Drift
    position: str


def at_least(severity: str, floor: str | None) -> bool:
    """True when `severity` is at or above `floor` (no floor: every severity)."""
    return floor is None or RANK[severity] >= RANK[floor]


def jsonl(found: Found) -> bytes:
    return orjson.dumps(found.drift.as_dict()) + b"\n"


def _value(v: Any) -> str:
    text = v if isinstance(v, str) else orjson.dumps(v).decode()
    return text if len(text) <= 40 else text[:37] + "..."


def _what(d: Drift) -> str:
    return d.resource_address or f"{d.resource_type} {d.resource_id}"


def table(found: Sequence[Found]) -> bytes:
    """Aligned columns for a terminal, most severe first."""
    header = ("SEVERITY", "KIND", "RESOURCE", "FIELD", "CHANGE", "ACTOR", "EVENT")
    rows = [header]
    for f in sorted(found, key=lambda f: (-RANK[f.drift.severity], _what(f.drift))):
        d = f.drift
        change = f"{_value(d.old_value)} -> {_value(d.new_value)}" if d.field else ""
        actor = d.actor.user_name or d.actor.key
        rows.append(
            (d.severity, d.kind.value, _what(d), d.field or "", change, actor, d.event_name)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if not found:
        lines.append("no drift")
    return ("\n".join(lines) + "\n").encode()


def _rule_id(d: Drift) -> str:
    return f"drift/{d.kind.value}/{d.resource_type}"


def _message(d: Drift) -> str:
    who = d.actor.user_name or d.actor.key
    if d.field:
        change = f"{d.field} changed from {_value(d.old_value)} to {_value(d.new_value)}"
    else:
        change = f"{d.kind.value} ({d.event_name})"
    return f"{_what(d)}: {change} by {who} at {d.event_time} ({d.event_name})"


def _location(f: Found) -> dict[str, Any]:
    path, _, line = f.position.rpartition(":")
    physical: dict[str, Any] = {"artifactLocation": {"uri": path if line.isdigit() else f.position}}
    if line.isdigit():
        physical["region"] = {"startLine": int(line)}
    logical = {"name": _what(f.drift), "kind": "resource"}
    return {"physicalLocation": physical, "logicalLocations": [logical]}


def sarif(found: Sequence[Found], version: str) -> bytes:
    """A SARIF 2.1.0 log: one run, one rule per drift kind and resource type."""
    rules: dict[str, dict[str, Any]] = {}
    results = []
    for f in found:
        d = f.drift
        rule = _rule_id(d)
        rules.setdefault(
            rule,
            {
                "id": rule,
                "shortDescription": {"text": f"{d.resource_type}: {d.kind.value} drift from state"},
            },
        )
        results.append(
            {
                "ruleId": rule,
                "level": SARIF_LEVEL[d.severity],
                "message": {"text": _message(d)},
                "locations": [_location(f)],
                "partialFingerprints": {"driftId": d.id},
                "properties": {"severity": d.severity, "drift": d.as_dict()},
            }
        )
    driver = {
        "name": "driftline",
        "version": version,
        "rules": list(rules.values()),
    }
    log = {
        "version": "2.1.0",
        "$schema": SARIF_SCHEMA,
        "runs": [{"tool": {"driver": driver}, "results": results}],
    }
    return orjson.dumps(log, option=orjson.OPT_INDENT_2) + b"\n"


def junit(found: Sequence[Found], fail_on: str | None) -> bytes:
    """JUnit XML: a test case per drift, failed when at or above `fail_on` (any, if None)."""
    failures = [f for f in found if at_least(f.drift.severity, fail_on)]
    suite = ET.Element(
        "testsuite",
        name="driftline detect",
        tests=str(max(len(found), 1)),
        failures=str(len(failures)),
        errors="0",
        skipped="0",
    )
    if not found:
        ET.SubElement(suite, "testcase", classname="driftline", name="no drift")
    for f in found:
        d = f.drift
        case = ET.SubElement(
            suite,
            "testcase",
            classname=d.resource_type,
            name=f"{_what(d)} {d.field or d.kind.value}",
        )
        if at_least(d.severity, fail_on):
            failure = ET.SubElement(case, "failure", message=_message(d), type=d.severity)
            failure.text = orjson.dumps(d.as_dict(), option=orjson.OPT_INDENT_2).decode()
        else:
            ET.SubElement(case, "system-out").text = _message(d)
    root = ET.Element("testsuites", tests=suite.get("tests", "0"), failures=str(len(failures)))
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
