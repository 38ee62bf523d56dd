"""Kubernetes audit events (`audit.k8s.io` Event / EventList) to ChangeEvents.

Accepted shapes: one Event, an EventList (`{"kind": "EventList", "items": [...]}`, what the
API server's webhook backend POSTs), or a JSON list of Events. `audit.k8s.io/v1`, `v1beta1`
and events without `apiVersion` (older log backends) are read alike.

The record is normalised to CloudTrail's shape so detection needs nothing Kubernetes-specific:

- event_source: the API group, `k8s.io` for the core group (`apps`,
  `rbac.authorization.k8s.io`, ...); event_name: `<verb>:<resource>[/<subresource>]`, e.g.
  `create:deployments`, `patch:configmaps`, `update:deployments/scale`. These are the keys of
  rules/catalogue/kubernetes/*.yaml.
- requestParameters: `name`, `namespace`, `id` (`<namespace>/<name>`, or `<name>` for
  cluster-scoped objects: the `id` the Terraform kubernetes provider stores), `object` (the
  requestObject), `resource`, `subresource`; responseElements: the responseObject.
- userIdentity: type `ServiceAccount` (system:serviceaccount:*), `KubernetesSystem` (other
  system: identities of the control plane and nodes) or `KubernetesUser`; userName, principalId
  (uid), groups.
- errorCode when responseStatus.code >= 400; readOnly for get/list/watch and dry runs.

Only completed requests are changes: an event whose stage is not `ResponseComplete` (the
RequestReceived / ResponseStarted / Panic stages of the same request) is rejected with the
reason `not a completed request` (NOT_COMPLETED), so a webhook that sends every stage does not
double-count. Such rejections are expected and are not poison records.

An object created on behalf of another by a controller (metadata.ownerReferences with
`controller: true`, e.g. Pods of a ReplicaSet) gets no `id`: its owner is what Terraform
declares, so it can be neither unmanaged nor drifted; the owner is kept in
additionalEventData.owner. Secret `data` / `stringData` values (and the last-applied
annotation that repeats them), and values under secret-named keys in any object (a
TokenRequest's token, a password field), are replaced by "(sensitive)" before the record is
kept; ConfigMap data is kept whole, as it is compared with the state.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from monitor.redact import REDACTED, redact
from monitor.types import ChangeEvent, DecodeError
from streams.cloudtrail import content_id
from streams.fields import decode_each, text
from streams.timefmt import normalise_time

PROVIDER = "kubernetes"
CORE_GROUP = "k8s.io"
COMPLETED_STAGE = "ResponseComplete"
NOT_COMPLETED = "not a completed request"
NOT_AUDIT = "not a Kubernetes audit event"
READ_VERBS = frozenset({"get", "list", "watch"})
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# Resources without a namespace: Terraform ids them by name alone. (The API server puts the
# namespace's own name in objectRef.namespace for `namespaces`, so a table is needed.)
CLUSTER_SCOPED = frozenset(
    {
        "namespaces",
        "nodes",
        "persistentvolumes",
        "clusterroles",
        "clusterrolebindings",
        "storageclasses",
        "ingressclasses",
        "priorityclasses",
        "runtimeclasses",
        "csidrivers",
        "csinodes",
        "volumeattachments",
        "customresourcedefinitions",
        "apiservices",
        "certificatesigningrequests",
        "podsecuritypolicies",
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
        "validatingadmissionpolicies",
        "validatingadmissionpolicybindings",
        "flowschemas",
        "prioritylevelconfigurations",
    }
)
_EVENT_KINDS = ("Event", None)


def is_k8s_audit_event(doc: Any) -> bool:
    """An audit.k8s.io Event (by apiVersion, or by the fields every Event has)."""
    if not isinstance(doc, dict):
        return False
    api = doc.get("apiVersion")
    if isinstance(api, str) and api.startswith("audit.k8s.io/"):
        return doc.get("kind") in _EVENT_KINDS
    return "auditID" in doc and "verb" in doc and doc.get("kind") in _EVENT_KINDS


def iter_events(doc: Any) -> Iterator[Any]:
    """Unwrap an EventList or a JSON list into single events (anything else as is)."""
    if isinstance(doc, list):
        for item in doc:
            yield from iter_events(item)
        return
    if isinstance(doc, dict) and doc.get("kind") == "EventList":
        items = doc.get("items")
        if isinstance(items, list):
            yield from items
            return
    yield doc


def decode_k8s_audit(doc: Any, cluster: str | None = None) -> Iterator[ChangeEvent | DecodeError]:
    """Every event of an Event / EventList / list; a bad event yields its DecodeError.

    `cluster` names the cluster the events come from (kept as recipientAccountId, shown as a
    drift's account_id) for deployments that watch several clusters.
    """
    return decode_each(iter_events(doc), lambda event: decode_event(event, cluster))


def _identity(user: Any) -> dict[str, Any]:
    if not isinstance(user, dict):
        return {"type": "KubernetesUser", "userName": None, "principalId": None, "arn": None}
    name = text(user.get("username"))
    if name and name.startswith("system:serviceaccount:"):
        kind = "ServiceAccount"
    elif name and name.startswith("system:") and name not in ("system:anonymous",):
        kind = "KubernetesSystem"
    else:
        kind = "KubernetesUser"
    out: dict[str, Any] = {
        "type": kind,
        "userName": name,
        "principalId": text(user.get("uid")) or name,
        "arn": None,
    }
    groups = user.get("groups")
    if isinstance(groups, list):
        out["groups"] = [g for g in groups if isinstance(g, str)]
    return out


def _metadata(obj: Any) -> dict[str, Any]:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return meta if isinstance(meta, dict) else {}


def _controller_owner(*objects: Any) -> dict[str, Any] | None:
    for obj in objects:
        refs = _metadata(obj).get("ownerReferences")
        if isinstance(refs, list):
            for ref in refs:
                if isinstance(ref, dict) and ref.get("controller") is True:
                    return {"kind": ref.get("kind"), "name": ref.get("name"), "uid": ref.get("uid")}
    return None


def _redact_secret(obj: Any) -> Any:
    """A Secret (or SecretList) with its values replaced; keys stay: they say what changed."""
    if not isinstance(obj, dict):
        return obj
    out = dict(obj)
    items = out.get("items")
    if isinstance(items, list):
        out["items"] = [_redact_secret(item) for item in items]
    for key in ("data", "stringData"):
        values = out.get(key)
        if isinstance(values, dict):
            out[key] = {k: REDACTED for k in values}
    meta = out.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("annotations"), dict):
        annotations = dict(meta["annotations"])
        if LAST_APPLIED in annotations:
            annotations[LAST_APPLIED] = REDACTED
            out["metadata"] = {**meta, "annotations": annotations}
    return out


def _redact(obj: Any, resource: str) -> Any:
    """Secrets' values, and what any object keeps under secret-named keys (a TokenRequest's
    status.token, a password field), never reach the record. A ConfigMap's data stays whole:
    it is compared with the state's, and it is not secret by contract."""
    if not isinstance(obj, dict):
        return obj
    if resource == "secrets" or obj.get("kind") in ("Secret", "SecretList"):
        obj = _redact_secret(obj)
    if resource == "configmaps" or obj.get("kind") == "ConfigMap":
        keep = {k: obj[k] for k in ("data", "binaryData") if k in obj}
        rest = redact({k: v for k, v in obj.items() if k not in keep})
        return {**rest, **keep}
    redacted: dict[str, Any] = redact(obj)
    return redacted


def _error(status: Any) -> tuple[str | None, str | None]:
    if not isinstance(status, dict):
        return None, None
    code = status.get("code")
    failed = status.get("status") == "Failure"
    if isinstance(code, int) and not isinstance(code, bool) and code >= 400:
        failed = True
    if not failed:
        return None, None
    reason = text(status.get("reason")) or (str(code) if code is not None else "Failure")
    return reason, text(status.get("message"))


def decode_event(event: Any, cluster: str | None = None) -> ChangeEvent:
    """One audit Event to a ChangeEvent; DecodeError names what is wrong (or not a change)."""
    if not is_k8s_audit_event(event):
        what = type(event).__name__
        if isinstance(event, dict):
            what = ", ".join(sorted(str(k) for k in event)[:5]) or "empty object"
        raise DecodeError(NOT_AUDIT, f"expected an audit.k8s.io Event ({what})")
    get = event.get
    stage = get("stage")
    if stage is not None and stage != COMPLETED_STAGE:
        raise DecodeError(NOT_COMPLETED, f"stage {stage}")
    verb = text(get("verb"))
    if verb is None:
        raise DecodeError("no verb", "audit event without a verb")
    ref = get("objectRef")
    if ref is not None and not isinstance(ref, dict):
        raise DecodeError("bad objectRef", f"expected an object, got {type(ref).__name__}")
    ref = ref or {}
    resource = text(ref.get("resource"))
    if resource is None:
        # Non-resource URLs (/healthz, /version) and authentication reviews change nothing.
        raise DecodeError("no object", f"{verb} {get('requestURI') or ''}".strip())
    subresource = text(ref.get("subresource"))
    when = get("requestReceivedTimestamp") or get("stageTimestamp") or get("timestamp")
    if when is None:
        when = _metadata(event).get("creationTimestamp")
        if when is None:
            raise DecodeError("no timestamp", "no requestReceivedTimestamp or stageTimestamp")
    event_time = normalise_time(when)
    request_obj = get("requestObject")
    response_obj = get("responseObject")
    request_obj = _redact(request_obj, resource)
    response_obj = _redact(response_obj, resource)
    name = (
        text(ref.get("name"))
        or text(_metadata(request_obj).get("name"))
        or text(_metadata(response_obj).get("name"))
    )
    namespace = (
        text(ref.get("namespace"))
        or text(_metadata(request_obj).get("namespace"))
        or text(_metadata(response_obj).get("namespace"))
    )
    if resource in CLUSTER_SCOPED:
        namespace = None
    group = text(ref.get("apiGroup")) or CORE_GROUP
    event_name = f"{verb}:{resource}/{subresource}" if subresource else f"{verb}:{resource}"
    owner = _controller_owner(request_obj, response_obj) if subresource is None else None
    request: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "resource": resource,
        "subresource": subresource,
        "object": request_obj,
    }
    if name and owner is None:
        request["id"] = f"{namespace}/{name}" if namespace else name
    uri = text(get("requestURI")) or ""
    error_code, error_message = _error(get("responseStatus"))
    ips = get("sourceIPs")
    extra: dict[str, Any] = {
        "apiGroup": group,
        "apiVersion": text(ref.get("apiVersion")),
        "stage": stage,
        "level": get("level"),
        "requestURI": uri or None,
        "uid": text(ref.get("uid")),
    }
    if owner is not None:
        extra["owner"] = owner
    impersonated = get("impersonatedUser")
    if isinstance(impersonated, dict):
        extra["impersonatedUser"] = text(impersonated.get("username"))
    annotations = get("annotations")
    if isinstance(annotations, dict):
        extra["authorizationReason"] = annotations.get("authorization.k8s.io/reason")
    record: dict[str, Any] = {
        "eventVersion": get("apiVersion") or "audit.k8s.io",
        "eventID": text(get("auditID")) or content_id("k8s", event),
        "eventTime": event_time,
        "eventSource": group,
        "eventName": event_name,
        "userIdentity": _identity(get("user")),
        "sourceIPAddress": ips[0] if isinstance(ips, list) and ips else None,
        "userAgent": text(get("userAgent")),
        "requestParameters": request,
        "responseElements": response_obj if isinstance(response_obj, dict) else None,
        "additionalEventData": extra,
        "readOnly": verb in READ_VERBS or "dryRun=" in uri,
        "recipientAccountId": cluster,
        "awsRegion": None,
    }
    if error_code is not None:
        record["errorCode"] = error_code
        record["errorMessage"] = error_message
    return ChangeEvent(record["eventID"], group, event_name, event_time, record, provider=PROVIDER)
