"""Azure Activity Log records to ChangeEvents.

Accepted shapes: the diagnostic-settings export (`{"records": [...]}`, what a storage account
or an Event Hub receives: time, resourceId, operationName, resultType, resultSignature,
callerIpAddress, identity.claims, properties), the EventData / REST shape (eventTimestamp,
operationName.value, status.value, subStatus.value, caller, claims, eventDataId,
httpRequest), a REST list answer (`{"value": [...]}`) and JSON lists of either.

The record is normalised to CloudTrail's shape:

- event_source: the resource provider namespace, event_name: the operation name, both
  lowercased (`microsoft.compute`, `microsoft.compute/virtualmachines/write`). ARM names are
  case-insensitive and the shapes disagree (the REST API says
  `Microsoft.Compute/virtualMachines/write`, exports often `MICROSOFT.COMPUTE/...`), so one
  spelling is needed for the catalogue to match every shape; the record keeps the original.
- A `.../write` whose result says the resource was created (HTTP 201, subStatus / statusCode
  `Created`, resultSignature `Succeeded.Created`) is named `.../write:created`: ARM's PUT is
  create-or-update, and the catalogue needs to tell a new resource (unmanaged) from a change
  to a declared one (modified). A create answered with 200 OK reads as an update.
- requestParameters: `resourceId` (the ARM id as logged; when the export upper-cases it,
  properties.entity, which keeps ARM's casing, is used: Terraform's azurerm ids are
  case-sensitive ARM ids), `parentId` (the parent resource of a child such as a security rule
  or subnet), `resourceIds` (both), `resourceGroup`, `name`, `requestBody` (properties.
  requestbody parsed; Azure truncates long bodies, which are then left out), `properties`;
  responseElements: properties.responseBody parsed.
- userIdentity: type `User`, `ServicePrincipal` or `ManagedIdentity`; userName = caller (a UPN,
  or the application id of a service principal), principalId = the object id.
- Only a terminal status is a change: Succeeded (no error) or Failed / Canceled (errorCode).
  Started / Accepted / In Progress events of the same operation are rejected with the reason
  `not a completed operation` (NOT_COMPLETED); such rejections are expected and are not poison
  records. readOnly for `/read` operations and list/get actions.

The Activity Log carries no user agent, so Terraform's own calls cannot be recognised by it:
configure the principal Terraform applies as (its application id, as `caller` shows it) as an
apply principal. Values of secret-named fields in request/response bodies are hidden.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson

from monitor.redact import redact
from monitor.types import ChangeEvent, DecodeError
from streams.cloudtrail import content_id
from streams.fields import decode_each, text
from streams.timefmt import normalise_time

PROVIDER = "azure"
NOT_ACTIVITY = "not an Azure Activity Log record"
NOT_COMPLETED = "not a completed operation"
CREATED_SUFFIX = ":created"
_SUCCEEDED = frozenset({"succeeded", "success"})
_FAILED = frozenset({"failed", "failure", "canceled", "cancelled"})
_PENDING = frozenset(
    {"started", "start", "accepted", "accept", "active", "inprogress", "in progress"}
)
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_CLAIM_OID = "http://schemas.microsoft.com/identity/claims/objectidentifier"
_CLAIM_TENANT = "http://schemas.microsoft.com/identity/claims/tenantid"
_CLAIM_UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
_CLAIM_NAME = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
_MAX_MESSAGE = 500


def _value(value: Any) -> str | None:
    """Azure's `{"value": ..., "localizedValue": ...}` pairs, or a plain string."""
    if isinstance(value, dict):
        value = value.get("value")
    return value if isinstance(value, str) and value else None


def is_azure_activity_record(doc: Any) -> bool:
    """An Activity Log record in the export or the EventData shape."""
    return (
        isinstance(doc, dict)
        and _value(doc.get("operationName")) is not None
        and ("eventTimestamp" in doc or "time" in doc)
        and ("resourceId" in doc or "category" in doc or "eventDataId" in doc)
    )


def iter_records(doc: Any) -> Iterator[Any]:
    """Unwrap `{"records": [...]}`, `{"value": [...]}` and JSON lists into records."""
    if isinstance(doc, list):
        for item in doc:
            yield from iter_records(item)
        return
    if isinstance(doc, dict) and "operationName" not in doc:
        for key in ("records", "value"):
            items = doc.get(key)
            if isinstance(items, list):
                yield from items
                return
    yield doc


def decode_azure_activity(doc: Any) -> Iterator[ChangeEvent | DecodeError]:
    """Every record of a document; a bad record yields its DecodeError and decoding goes on."""
    return decode_each(iter_records(doc), decode_record)


def _body(value: Any) -> tuple[Any, bool]:
    """A request/response body as logged (JSON text or object); (None, True) if truncated."""
    if value is None or isinstance(value, (dict, list)):
        return value, False
    if isinstance(value, str):
        if not value.strip():
            return None, False
        try:
            return orjson.loads(value), False
        except orjson.JSONDecodeError:
            return None, True
    return None, False


def _prop(props: dict[str, Any], *names: str) -> Any:
    """A property by any of its spellings (the shapes differ: requestbody / requestBody)."""
    lowered = {k.lower(): v for k, v in props.items() if isinstance(k, str)}
    for name in names:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return None


def arm_parent(resource_id: str | None) -> str | None:
    """The parent of a child resource (`.../networkSecurityGroups/n/securityRules/r` -> the
    security group); None for a top-level resource, a resource group or a subscription."""
    if not resource_id:
        return None
    parts = resource_id.strip("/").split("/")
    lowered = [p.lower() for p in parts]
    if "providers" not in lowered:
        return None
    start = len(lowered) - 1 - lowered[::-1].index("providers")
    # providers/<namespace>/<type>/<name>[/<child type>/<child name>...]
    if len(parts) - (start + 2) < 4:
        return None
    return "/" + "/".join(parts[:-2])


def _subscription(resource_id: str | None) -> str | None:
    if resource_id:
        parts = resource_id.strip("/").split("/")
        if len(parts) >= 2 and parts[0].lower() == "subscriptions":
            return parts[1].lower()
    return None


def _resource_group(resource_id: str | None) -> str | None:
    if resource_id:
        parts = resource_id.strip("/").split("/")
        for i, part in enumerate(parts[:-1]):
            if part.lower() == "resourcegroups":
                return parts[i + 1]
    return None


def _identity(rec: dict[str, Any]) -> dict[str, Any]:
    claims = rec.get("claims")
    if not isinstance(claims, dict):
        identity = rec.get("identity")
        claims = identity.get("claims") if isinstance(identity, dict) else None
    claims = claims if isinstance(claims, dict) else {}
    caller = text(rec.get("caller"))
    upn = text(claims.get(_CLAIM_UPN)) or text(claims.get("upn"))
    app_id = text(claims.get("appid")) or text(claims.get("azp"))
    oid = text(claims.get(_CLAIM_OID)) or text(claims.get("oid"))
    if text(claims.get("xms_mirid")):
        kind = "ManagedIdentity"
    elif claims.get("idtyp") == "app" or (
        upn is None and app_id is not None and (caller is None or _GUID.match(caller))
    ):
        kind = "ServicePrincipal"
    else:
        kind = "User"
    return {
        "type": kind,
        "userName": caller or upn or text(claims.get(_CLAIM_NAME)) or app_id or oid,
        "principalId": oid or caller,
        "arn": None,
        "accountId": text(claims.get(_CLAIM_TENANT))
        or text(claims.get("tid"))
        or text(rec.get("tenantId")),
        "appId": app_id,
    }


def _created(rec: dict[str, Any], props: dict[str, Any]) -> bool:
    for value in (
        _value(rec.get("subStatus")),
        text(_prop(props, "statusCode")),
        text(rec.get("resultSignature")),
    ):
        if value and (value.lower().endswith("created") or value == "201"):
            return True
    http = rec.get("httpRequest")
    return isinstance(http, dict) and http.get("statusCode") in (201, "201")


def _read_only(operation: str) -> bool:
    parts = operation.lower().split("/")
    if parts[-1] == "read":
        return True
    return parts[-1] == "action" and len(parts) > 1 and parts[-2].startswith(("list", "get"))


def decode_record(rec: Any) -> ChangeEvent:
    """One Activity Log record to a ChangeEvent; DecodeError names what is wrong."""
    if not is_azure_activity_record(rec):
        what = type(rec).__name__
        if isinstance(rec, dict):
            what = ", ".join(sorted(str(k) for k in rec)[:5]) or "empty object"
        raise DecodeError(NOT_ACTIVITY, f"expected an Activity Log record ({what})")
    operation = _value(rec.get("operationName"))
    if operation is None:
        raise DecodeError(NOT_ACTIVITY, "no operationName")
    props = rec.get("properties")
    props = props if isinstance(props, dict) else {}
    status = _value(rec.get("status")) or text(rec.get("resultType")) or text(props.get("status"))
    state = (status or "succeeded").lower()
    if state in _PENDING:
        raise DecodeError(NOT_COMPLETED, f"status {status}")
    when = rec.get("eventTimestamp") or rec.get("time")
    if when is None:
        raise DecodeError("no timestamp", "neither eventTimestamp nor time")
    event_time = normalise_time(when)
    resource_id = text(rec.get("resourceId"))
    entity = text(props.get("entity"))
    if entity and (resource_id is None or resource_id.lower() == entity.lower()):
        resource_id = entity
    if resource_id is None:
        auth = rec.get("authorization")
        resource_id = text(auth.get("scope")) if isinstance(auth, dict) else None
    parent_id = arm_parent(resource_id)
    name = operation.lower()
    if name.endswith("/write") and state in _SUCCEEDED and _created(rec, props):
        name += CREATED_SUFFIX
    source = name.split("/", 1)[0]
    request_body, request_truncated = _body(_prop(props, "requestbody"))
    response_body, response_truncated = _body(_prop(props, "responseBody"))
    rest = {
        k: v
        for k, v in props.items()
        if not (isinstance(k, str) and k.lower() in ("requestbody", "responsebody"))
    }
    request: dict[str, Any] = {
        "resourceId": resource_id,
        "parentId": parent_id,
        "resourceIds": [i for i in (resource_id, parent_id) if i],
        "resourceGroup": text(rec.get("resourceGroupName")) or _resource_group(resource_id),
        "name": resource_id.rstrip("/").rsplit("/", 1)[-1] if resource_id else None,
        "requestBody": redact(request_body),
        "properties": redact(rest),
    }
    http = rec.get("httpRequest")
    http = http if isinstance(http, dict) else {}
    category = _value(rec.get("category"))
    extra: dict[str, Any] = {
        "operationName": operation,
        "category": category,
        "status": status,
        "subStatus": _value(rec.get("subStatus")) or text(rec.get("resultSignature")),
        "correlationId": text(rec.get("correlationId")),
        "operationId": text(rec.get("operationId")),
        "resourceType": _value(rec.get("resourceType")),
        "httpMethod": text(http.get("method")),
    }
    if request_truncated or response_truncated:
        extra["truncatedBody"] = True
    event_id = text(rec.get("eventDataId")) or content_id("azure", rec)
    record: dict[str, Any] = {
        "eventVersion": "azure.activity",
        "eventID": event_id,
        "eventTime": event_time,
        "eventSource": source,
        "eventName": name,
        "userIdentity": _identity(rec),
        "sourceIPAddress": text(rec.get("callerIpAddress")) or text(http.get("clientIpAddress")),
        "userAgent": None,
        "requestParameters": request,
        "responseElements": redact(response_body) if isinstance(response_body, dict) else None,
        "additionalEventData": extra,
        "readOnly": _read_only(operation),
        "recipientAccountId": text(rec.get("subscriptionId")) or _subscription(resource_id),
        "awsRegion": text(rec.get("location")),
    }
    if state in _FAILED:
        record["errorCode"] = (
            _value(rec.get("subStatus"))
            or text(_prop(props, "statusCode"))
            or text(rec.get("resultSignature"))
            or status
        )
        message = text(_prop(props, "statusMessage")) or text(rec.get("resultDescription"))
        record["errorMessage"] = message[:_MAX_MESSAGE] if message else None
    return ChangeEvent(event_id, source, name, event_time, record, provider=PROVIDER)
