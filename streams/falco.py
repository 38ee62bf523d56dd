"""Falco alerts (json_output, http_output, falcosidekick webhook) to FalcoAlert or ChangeEvent.

Alerts from the `aws_cloudtrail` plugin source carry the CloudTrail call in their `ct.*` output
fields; they become ChangeEvents and go through detection like any CloudTrail record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from monitor.types import ChangeEvent, DecodeError, FalcoAlert
from streams.cloudtrail import content_id, decode_record
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

SourceFor = Callable[[str], str | None]
"""The event source (e.g. `ec2.amazonaws.com`) of an event name, or None if unknown."""


def no_source(event_name: str) -> str | None:
    """The SourceFor that knows no event name."""
    return None


# The cloudtrail plugin's fields this decoder reads (rules/falco/ must output all of them).
CT_FIELDS = frozenset(
    {
        "ct.id",
        "ct.time",
        "ct.src",
        "ct.name",
        "ct.region",
        "ct.user",
        "ct.user.arn",
        "ct.user.accountid",
        "ct.user.identitytype",
        "ct.user.principalid",
        "ct.recipientaccountid",
        "ct.srcip",
        "ct.useragent",
        "ct.readonly",
        "ct.error",
        "ct.request",
        "ct.response",
        "ct.resources",
        "ct.additionaleventdata",
    }
)
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


def _cloudtrail_change(
    doc: dict[str, Any],
    fields: dict[str, Any],
    when: str,
    source_for: SourceFor,
) -> ChangeEvent:
    """The ct.* output fields as a CloudTrail record, decoded like any other."""
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
    identity: dict[str, Any] = {
        "type": kind,
        "arn": arn,
        "accountId": _field(fields, "ct.user.accountid"),
        "principalId": _field(fields, "ct.user.principalid"),
        "userName": _field(fields, "ct.user"),
    }
    if arn and ":assumed-role/" in arn:
        head, _, rest = arn.partition(":assumed-role/")
        parts = head.split(":")
        if len(parts) >= 5:
            role = rest.split("/", 1)[0]
            identity["sessionContext"] = {
                "sessionIssuer": {
                    "type": "Role",
                    "userName": role,
                    "arn": f"arn:{parts[1]}:iam::{parts[4]}:role/{role}",
                }
            }
    record: dict[str, Any] = {
        "eventID": _field(fields, "ct.id") or content_id("falco-ct", doc),
        "eventName": name,
        "eventSource": source,
        "eventTime": fields["ct.time"] if fields.get("ct.time") not in _NA else when,
        "awsRegion": _field(fields, "ct.region"),
        "recipientAccountId": _field(fields, "ct.recipientaccountid")
        or _field(fields, "ct.user.accountid"),
        "userIdentity": identity,
        "sourceIPAddress": _field(fields, "ct.srcip"),
        "userAgent": _field(fields, "ct.useragent"),
        "requestParameters": fields.get("ct.request"),
        "responseElements": fields.get("ct.response"),
        "additionalEventData": fields.get("ct.additionaleventdata"),
        "errorCode": _field(fields, "ct.error"),
        "readOnly": fields.get("ct.readonly"),
    }
    for key in ("requestParameters", "responseElements", "additionalEventData"):
        if record[key] in _NA:
            record[key] = None
    resources = fields.get("ct.resources")
    if isinstance(resources, str) and resources not in _NA:
        try:
            record["resources"] = orjson.loads(resources)
        except orjson.JSONDecodeError:
            raise DecodeError("bad cloudtrail alert", "ct.resources is not JSON") from None
    elif isinstance(resources, list):
        record["resources"] = resources
    return decode_record(record)


def decode_alert(doc: Any, source_for: SourceFor = no_source) -> FalcoAlert | ChangeEvent:
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
