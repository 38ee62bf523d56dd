"""GCP Cloud Audit Logs (LogEntry with an AuditLog protoPayload) to ChangeEvents.

Accepted shapes: one LogEntry; a JSON list of them; `{"entries": [...]}` (the Logging API's
entries.list answer and entries.write body); a Pub/Sub push body
(`{"message": {"data": <base64 LogEntry>}, "subscription": ...}`), a pull answer
(`{"receivedMessages": [...]}`) or a bare Pub/Sub message (`{"data": <base64>}`), which is
how a Logging sink delivers to Pub/Sub; NDJSON files of a sink to Cloud Storage give one
LogEntry per line.

The record is normalised to CloudTrail's shape:

- event_source: protoPayload.serviceName (`compute.googleapis.com`); event_name:
  protoPayload.methodName as logged (`v1.compute.instances.setMetadata`,
  `google.iam.admin.v1.CreateServiceAccount`, `SetIamPolicy`).
- eventID: insertId; eventTime: timestamp; recipientAccountId: the project id (from
  resource.labels.project_id or logName); awsRegion: resource.labels zone / region /
  location (or protoPayload.resourceLocation).
- requestParameters: protoPayload.request plus `resourceName`; responseElements:
  protoPayload.response. additionalEventData holds resource names in the forms Terraform ids
  use: `resourceName` (as logged), `relativeName` (without the host of full names and self
  links: `projects/p/zones/z/instances/i`), `name` (its last segment), `locationsName`
  (zones/X and regions/X spelled locations/X), `compactName` (the values of locationsName
  only: `projects/p/locations/l/clusters/c/nodePools/n` -> `p/l/c/n`), `parentName`.
- userIdentity: type `ServiceAccount`, `ServiceAgent` (Google-managed service agents) or
  `User`, userName = principalEmail; errorCode: the google.rpc code name when status.code != 0.
- readOnly for get / list / search / testIamPermissions / ... methods.

A long-running operation logs a first entry (with the request) and a last one (the outcome).
The first carries the change; a later entry of the same operation is rejected with the
reason `not the first entry of an operation` (OPERATION_CONTINUATION) so one change is not
reported twice. Such rejections are expected and are not poison records. Values of fields
named like secrets (password, secret, private key, token, ...) are replaced by "(sensitive)".
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from typing import Any

import orjson

from monitor.redact import redact
from monitor.types import ChangeEvent, DecodeError
from streams.cloudtrail import content_id
from streams.fields import decode_each, text
from streams.timefmt import normalise_time

PROVIDER = "gcp"
AUDIT_LOG_TYPE = "type.googleapis.com/google.cloud.audit.AuditLog"
NOT_AUDIT = "not a Cloud Audit Log entry"
OPERATION_CONTINUATION = "not the first entry of an operation"
# google.rpc.Code
RPC_CODES = {
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}
_READ_VERBS = (
    "get",
    "list",
    "aggregatedlist",
    "search",
    "lookup",
    "testiampermissions",
    "batchget",
    "query",
    "watch",
    "read",
    "fetch",
    "check",
)
_RELATIVE_START = re.compile(r"(?:^|/)(projects|organizations|folders|namespaces|locations)/")
_SERVICE_AGENT_DOMAINS = (
    "cloudservices.gserviceaccount.com",
    "system.gserviceaccount.com",
    "containerregistry.gserviceaccount.com",
)


def is_gcp_audit_entry(doc: Any) -> bool:
    """A LogEntry whose protoPayload is an AuditLog."""
    if not isinstance(doc, dict):
        return False
    payload = doc.get("protoPayload")
    return isinstance(payload, dict) and (
        payload.get("@type") == AUDIT_LOG_TYPE
        or ("methodName" in payload and "serviceName" in payload)
    )


def _pubsub_data(message: dict[str, Any]) -> Any:
    data = message.get("data")
    if not isinstance(data, str):
        raise DecodeError("bad Pub/Sub message", "no base64 data")
    try:
        raw = base64.b64decode(data, validate=True)
        return orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise DecodeError("bad Pub/Sub message", "data is not base64 JSON") from None


def iter_entries(doc: Any) -> Iterator[Any]:
    """Unwrap lists, `{"entries": [...]}` and Pub/Sub envelopes into LogEntries.

    A Pub/Sub message whose data cannot be read is yielded as its DecodeError.
    """
    if isinstance(doc, list):
        for item in doc:
            yield from iter_entries(item)
        return
    if isinstance(doc, dict) and "protoPayload" not in doc:
        entries = doc.get("entries")
        if isinstance(entries, list):
            yield from entries
            return
        received = doc.get("receivedMessages")
        if isinstance(received, list):
            for item in received:
                yield from iter_entries(item)
            return
        message = doc.get("message")
        if isinstance(message, dict) and "data" in message:
            doc = message
        if isinstance(doc.get("data"), str):
            try:
                yield from iter_entries(_pubsub_data(doc))
            except DecodeError as exc:
                yield exc
            return
    yield doc


def decode_gcp_audit(doc: Any) -> Iterator[ChangeEvent | DecodeError]:
    """Every LogEntry of a document; a bad entry yields its DecodeError and decoding goes on."""
    return decode_each(iter_entries(doc), decode_entry)


def _dict(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DecodeError(f"bad {what}", f"expected an object, got {type(value).__name__}")
    return value


def resource_names(resource_name: str | None) -> dict[str, str | None]:
    """The spellings of a resource name that Terraform's google ids use."""
    if not resource_name:
        return {
            "resourceName": None,
            "relativeName": None,
            "name": None,
            "locationsName": None,
            "compactName": None,
            "parentName": None,
        }
    path = resource_name
    # Full resource names (//compute.googleapis.com/projects/...) and self links carry a
    # host (and an API version) before the relative name Terraform uses.
    if path.startswith(("//", "https://", "http://")):
        path = path.split("//", 1)[1].split("/", 1)[-1]
        match = _RELATIVE_START.search(path)
        if match:
            path = path[match.start(1) :]
    parts = path.strip("/").split("/")
    located = [
        "locations" if i % 2 == 0 and p in ("zones", "regions") else p for i, p in enumerate(parts)
    ]
    return {
        "resourceName": resource_name,
        "relativeName": "/".join(parts),
        "name": parts[-1] or None,
        "locationsName": "/".join(located),
        "compactName": "/".join(located[1::2]) if len(located) % 2 == 0 else None,
        "parentName": "/".join(parts[:-2]) if len(parts) > 2 else None,
    }


def _project(entry: dict[str, Any], labels: dict[str, Any], names: dict[str, Any]) -> str | None:
    project = text(labels.get("project_id"))
    if project:
        return project
    log_name = text(entry.get("logName"))
    if log_name and log_name.startswith("projects/"):
        return log_name.split("/", 2)[1]
    resource_name = names.get("resourceName")
    if resource_name and resource_name.startswith("projects/"):
        segment = resource_name.split("/", 2)[1]
        return segment if segment not in ("_", "-") else None
    return None


def _region(labels: dict[str, Any], payload: dict[str, Any]) -> str | None:
    for key in ("zone", "region", "location"):
        value = text(labels.get(key))
        if value:
            return value
    loc = payload.get("resourceLocation")
    if isinstance(loc, dict):
        current = loc.get("currentLocations")
        if isinstance(current, list) and current and isinstance(current[0], str):
            return current[0]
    return None


def _identity(payload: dict[str, Any], project: str | None) -> dict[str, Any]:
    auth = payload.get("authenticationInfo")
    auth = auth if isinstance(auth, dict) else {}
    email = text(auth.get("principalEmail"))
    subject = text(auth.get("principalSubject"))
    if email and email.endswith("gserviceaccount.com"):
        local, _, domain = email.partition("@")
        agent = local.startswith("service-") or domain in _SERVICE_AGENT_DOMAINS
        kind = "ServiceAgent" if agent else "ServiceAccount"
    else:
        kind = "User"
    out: dict[str, Any] = {
        "type": kind,
        "userName": email or subject,
        "principalId": subject or email,
        "arn": None,
        "accountId": project,
    }
    delegation = auth.get("serviceAccountDelegationInfo")
    if isinstance(delegation, list) and delegation:
        out["delegation"] = delegation
    return out


def _read_only(method: str) -> bool:
    return method.rsplit(".", 1)[-1].lower().startswith(_READ_VERBS)


def decode_entry(entry: Any) -> ChangeEvent:
    """One LogEntry to a ChangeEvent; DecodeError names what is wrong (or not a change)."""
    if not is_gcp_audit_entry(entry):
        what = type(entry).__name__
        if isinstance(entry, dict):
            what = ", ".join(sorted(str(k) for k in entry)[:5]) or "empty object"
        raise DecodeError(NOT_AUDIT, f"expected a LogEntry with an AuditLog protoPayload ({what})")
    payload: dict[str, Any] = entry["protoPayload"]
    service = text(payload.get("serviceName"))
    method = text(payload.get("methodName"))
    if service is None or method is None:
        raise DecodeError(NOT_AUDIT, "protoPayload without serviceName or methodName")
    operation = entry.get("operation")
    if (
        isinstance(operation, dict)
        and operation.get("first") is not True
        and (operation.get("last") is True)
    ):
        raise DecodeError(OPERATION_CONTINUATION, f"operation {operation.get('id')}")
    when = entry.get("timestamp") or entry.get("receiveTimestamp")
    if when is None:
        raise DecodeError("no timestamp", "LogEntry without timestamp")
    event_time = normalise_time(when)
    request = _dict(payload.get("request"), "request")
    response = _dict(payload.get("response"), "response")
    resource = _dict(entry.get("resource"), "resource")
    labels = _dict(resource.get("labels"), "resource labels")
    resource_name = text(payload.get("resourceName"))
    names = resource_names(resource_name)
    project = _project(entry, labels, names)
    status = _dict(payload.get("status"), "status")
    code = status.get("code")
    log_name = text(entry.get("logName"))
    metadata = payload.get("requestMetadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    extra: dict[str, Any] = {
        **names,
        "serviceName": service,
        "methodName": method,
        "logName": log_name,
        "resourceType": text(resource.get("type")),
    }
    for key in ("serviceData", "metadata"):
        if isinstance(payload.get(key), dict):
            extra[key] = redact(payload[key])
    if isinstance(operation, dict):
        extra["operation"] = {k: operation.get(k) for k in ("id", "producer", "first", "last")}
    record: dict[str, Any] = {
        "eventVersion": "gcp.audit",
        "eventID": text(entry.get("insertId")) or content_id("gcp", entry),
        "eventTime": event_time,
        "eventSource": service,
        "eventName": method,
        "userIdentity": _identity(payload, project),
        "sourceIPAddress": text(metadata.get("callerIp")),
        "userAgent": text(metadata.get("callerSuppliedUserAgent")),
        "requestParameters": {**redact(request), "resourceName": resource_name},
        "responseElements": redact(response) if response else None,
        "additionalEventData": extra,
        "readOnly": _read_only(method),
        "recipientAccountId": project,
        "awsRegion": _region(labels, payload),
    }
    if isinstance(code, int) and not isinstance(code, bool) and code != 0:
        record["errorCode"] = RPC_CODES.get(code, str(code))
        record["errorMessage"] = text(status.get("message"))
    return ChangeEvent(record["eventID"], service, method, event_time, record, provider=PROVIDER)
