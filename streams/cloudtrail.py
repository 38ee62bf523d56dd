"""CloudTrail records (and their envelopes) to ChangeEvents."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import orjson

from monitor.model import Actor, ChangeEvent
from streams.errors import DecodeError
from streams.timefmt import normalise_time

EVENTBRIDGE_DETAIL = "AWS API Call via CloudTrail"


def content_id(prefix: str, doc: Any) -> str:
    """A stable id for a record that carries none (same content, same id)."""
    digest = hashlib.blake2b(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS), digest_size=16)
    return f"{prefix}-{digest.hexdigest()}"


def is_cloudtrail_record(doc: Any) -> bool:
    return isinstance(doc, dict) and "eventName" in doc


def iter_records(doc: Any) -> Iterator[Any]:
    """Unwrap `{"Records": [...]}`, JSON arrays and EventBridge envelopes into records."""
    if isinstance(doc, list):
        for item in doc:
            yield from iter_records(item)
        return
    if isinstance(doc, dict):
        records = doc.get("Records")
        if isinstance(records, list):
            yield from records
            return
        if doc.get("detail-type") == EVENTBRIDGE_DETAIL and isinstance(doc.get("detail"), dict):
            yield doc["detail"]
            return
    yield doc


def _str(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def actor_from_identity(uid: Any) -> Actor:
    """The actor of a userIdentity: IAMUser, AssumedRole (issuer role + session name),
    federated and Identity Center users, AWSService, Root."""
    if not isinstance(uid, dict):
        return Actor(type="Unknown")
    kind = uid.get("type") or "Unknown"
    arn = _str(uid.get("arn"))
    principal = _str(uid.get("principalId"))
    account = _str(uid.get("accountId"))
    invoked_by = _str(uid.get("invokedBy"))
    if kind == "IAMUser":
        return Actor(kind, principal, arn, account, _str(uid.get("userName")), None, invoked_by)
    if kind == "Root":
        return Actor(
            kind, principal, arn, account, _str(uid.get("userName")) or "root", None, invoked_by
        )
    if kind == "AWSService" or (kind == "AWSAccount" and invoked_by):
        return Actor(kind, principal, arn, account, invoked_by, None, invoked_by)
    if kind in ("AssumedRole", "FederatedUser"):
        ctx = uid.get("sessionContext") or {}
        issuer = ctx.get("sessionIssuer") or {} if isinstance(ctx, dict) else {}
        role_arn = _str(issuer.get("arn")) if isinstance(issuer, dict) else None
        session = None
        if arn and "/" in arn:
            session = arn.rsplit("/", 1)[-1]
        elif principal and ":" in principal:
            session = principal.split(":", 1)[1]
        if role_arn and "/AWSReservedSSO_" in role_arn:
            kind = "IdentityCenterUser"
        return Actor(kind, principal, arn, account, session, role_arn, invoked_by)
    # SAMLUser, WebIdentityUser, IdentityCenterUser, Unknown ...
    name = _str(uid.get("userName")) or (
        principal.split(":", 1)[1] if principal and ":" in principal else principal
    )
    return Actor(kind, principal, arn, account, name, None, invoked_by)


def _user_agent(value: Any) -> str | None:
    if not isinstance(value, str):
        return _str(value)
    if value.startswith("[") and value.endswith("]"):
        return value[1:-1]
    return value


def _read_only(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.lower()
        if low in ("true", "false"):
            return low == "true"
    return None


def _mapping(value: Any, what: str) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, str):
        # Some pipelines (Logstash, Falco's ct.request) stringify nested JSON.
        if value in ("", "null", "<NA>"):
            return None
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise DecodeError(f"bad {what}", "not a JSON object") from None
        if parsed is None or isinstance(parsed, dict):
            return parsed
    raise DecodeError(f"bad {what}", f"expected an object, got {type(value).__name__}")


def decode_record(rec: Any) -> ChangeEvent:
    """One CloudTrail record to a ChangeEvent; DecodeError names what is wrong."""
    if not isinstance(rec, dict):
        raise DecodeError("not a record", f"expected an object, got {type(rec).__name__}")
    name = rec.get("eventName")
    if not isinstance(name, str) or not name:
        raise DecodeError("not a CloudTrail record", "no eventName")
    source = rec.get("eventSource")
    if not isinstance(source, str) or not source:
        raise DecodeError("not a CloudTrail record", "no eventSource")
    when = rec.get("eventTime")
    if when is None:
        when = rec.get("@timestamp")
        if when is None:
            raise DecodeError("no timestamp", "neither eventTime nor @timestamp")
    event_id = rec.get("eventID")
    if not isinstance(event_id, str) or not event_id:
        event_id = content_id("ct", rec)
    uid = rec.get("userIdentity")
    actor = actor_from_identity(uid)
    account = rec.get("recipientAccountId") or actor.account_id
    session = None
    if isinstance(uid, dict):
        session = uid.get("accessKeyId") or actor.principal_id
    resources = rec.get("resources")
    additional = rec.get("additionalEventData")
    return ChangeEvent(
        event_id=event_id,
        provider="aws",
        event_source=source,
        event_name=name,
        event_time=normalise_time(when),
        region=_str(rec.get("awsRegion")),
        account_id=_str(account),
        actor=actor,
        source_ip=_str(rec.get("sourceIPAddress")),
        user_agent=_user_agent(rec.get("userAgent")),
        request=_mapping(rec.get("requestParameters"), "requestParameters"),
        response=_mapping(rec.get("responseElements"), "responseElements"),
        error_code=_str(rec.get("errorCode")),
        read_only=_read_only(rec.get("readOnly")),
        resources=resources if isinstance(resources, list) else None,
        additional=additional if isinstance(additional, dict) else None,
        session=_str(session),
    )
