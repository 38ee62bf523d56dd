"""Falco alerts (json_output, http_output, falcosidekick webhook) to FalcoAlert or ChangeEvent.

Alerts from the `aws_cloudtrail` plugin source carry the CloudTrail call in their `ct.*` output
fields; they become ChangeEvents and go through detection like any CloudTrail record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from monitor.model import Actor, ChangeEvent, FalcoAlert
from streams.cloudtrail import _mapping, _read_only, _user_agent, content_id
from streams.errors import DecodeError
from streams.timefmt import normalise_time

PRIORITY_SEVERITY = {
    "emergency": "critical",
    "alert": "critical",
    "critical": "critical",
    "error": "high",
    "warning": "medium",
    "notice": "low",
    "informational": "low",
    "info": "low",
    "debug": "low",
}
CLOUDTRAIL_SOURCE = "aws_cloudtrail"
_NA = (None, "", "<NA>")


def is_falco_alert(doc: Any) -> bool:
    return isinstance(doc, dict) and "rule" in doc and ("output" in doc or "output_fields" in doc)


def _field(fields: dict[str, Any], key: str) -> str | None:
    value = fields.get(key)
    if value in _NA:
        return None
    return value if isinstance(value, str) else str(value)


def _alert_time(doc: dict[str, Any], fields: dict[str, Any]) -> str:
    for value in (
        doc.get("time"),
        fields.get("evt.time"),
        fields.get("evt.time.iso8601"),
        fields.get("ct.time"),
    ):
        if value not in _NA:
            return normalise_time(value)
    raise DecodeError("no timestamp", "alert has neither time nor evt.time")


def _issuer_role(arn: str) -> tuple[str | None, str | None]:
    """`arn:aws:sts::1:assumed-role/Admin/alice` -> (`arn:aws:iam::1:role/Admin`, `alice`)."""
    head, _, rest = arn.partition(":assumed-role/")
    role, _, session = rest.partition("/")
    parts = head.split(":")
    if len(parts) < 5 or not role:
        return None, None
    return f"arn:{parts[1]}:iam::{parts[4]}:role/{role}", session or None


def _cloudtrail_change(
    doc: dict[str, Any],
    fields: dict[str, Any],
    when: str,
    source_for: Callable[[str], str | None],
) -> ChangeEvent:
    name = _field(fields, "ct.name")
    if not name:
        raise DecodeError("bad cloudtrail alert", "no ct.name output field")
    source = _field(fields, "ct.src") or source_for(name)
    if not source:
        raise DecodeError(
            "bad cloudtrail alert",
            f"no ct.src and {name} is used by several services; add ct.src to the rule output",
        )
    arn = _field(fields, "ct.user.arn")
    kind = _field(fields, "ct.user.identitytype") or (
        "AssumedRole"
        if arn and ":assumed-role/" in arn
        else "IAMUser"
        if arn and ":user/" in arn
        else "Root"
        if arn and arn.endswith(":root")
        else "Unknown"
    )
    user = _field(fields, "ct.user")
    role = None
    if arn and ":assumed-role/" in arn:
        role, session = _issuer_role(arn)
        user = user or session
    actor = Actor(
        kind,
        _field(fields, "ct.user.principalid"),
        arn,
        _field(fields, "ct.user.accountid"),
        user,
        role,
    )
    event_id = _field(fields, "ct.id") or content_id("falco-ct", doc)
    return ChangeEvent(
        event_id=event_id,
        provider="aws",
        event_source=source,
        event_name=name,
        event_time=normalise_time(fields["ct.time"]) if fields.get("ct.time") not in _NA else when,
        region=_field(fields, "ct.region"),
        account_id=_field(fields, "ct.user.accountid"),
        actor=actor,
        source_ip=_field(fields, "ct.srcip"),
        user_agent=_user_agent(_field(fields, "ct.useragent")),
        request=_mapping(fields.get("ct.request"), "ct.request"),
        response=_mapping(fields.get("ct.response"), "ct.response"),
        error_code=_field(fields, "ct.error"),
        read_only=_read_only(fields.get("ct.readonly")),
        additional=_mapping(fields.get("ct.additionaleventdata"), "ct.additionaleventdata"),
        session=arn,
    )


def decode_alert(
    doc: Any, source_for: Callable[[str], str | None] = lambda name: None
) -> FalcoAlert | ChangeEvent:
    """One Falco alert; `source_for` names the event source of a ct.name when ct.src is absent."""
    if not isinstance(doc, dict):
        raise DecodeError("not an alert", f"expected an object, got {type(doc).__name__}")
    rule = doc.get("rule")
    if not isinstance(rule, str) or not rule:
        raise DecodeError("not a Falco alert", "no rule")
    fields = doc.get("output_fields") or {}
    if not isinstance(fields, dict):
        raise DecodeError("bad Falco alert", "output_fields must be an object")
    when = _alert_time(doc, fields)
    source = doc.get("source")
    if source == CLOUDTRAIL_SOURCE or (source is None and "ct.name" in fields):
        return _cloudtrail_change(doc, fields, when, source_for)
    priority = str(doc.get("priority") or "Notice")
    severity = PRIORITY_SEVERITY.get(priority.lower())
    if severity is None:
        raise DecodeError("bad Falco alert", f"unknown priority {priority!r}")
    tags = doc.get("tags") or ()
    alert_id = doc.get("uuid")
    if not isinstance(alert_id, str) or not alert_id:
        alert_id = content_id("falco", doc)
    return FalcoAlert(
        id=alert_id,
        time=when,
        priority=priority,
        severity=severity,
        rule=rule,
        output=str(doc.get("output") or ""),
        source=str(source) if source else None,
        hostname=str(doc["hostname"]) if doc.get("hostname") else None,
        tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
        output_fields=fields,
    )
