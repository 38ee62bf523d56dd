"""Kubernetes audit, GCP Cloud Audit Log and Azure Activity Log decoders.

Kubernetes cases read the real audit events in ../shared/realdata/k8s_audit. The GCP and Azure
fixtures under tests/data/ are hand-written from the documented formats (there is no real
GCP/Azure audit data in the shared set); each says so in its `_note`.
"""

from __future__ import annotations

import base64
import copy
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.redact import REDACTED, redact
from monitor.types import ChangeEvent, DecodeError
from streams.azure_activity import (
    NOT_ACTIVITY,
    arm_parent,
    decode_azure_activity,
    is_azure_activity_record,
)
from streams.azure_activity import NOT_COMPLETED as AZURE_NOT_COMPLETED
from streams.azure_activity import decode_record as decode_azure_record
from streams.documents import parse_documents
from streams.files import read_documents
from streams.gcp_audit import (
    NOT_AUDIT as GCP_NOT_AUDIT,
)
from streams.gcp_audit import (
    OPERATION_CONTINUATION,
    decode_entry,
    decode_gcp_audit,
    is_gcp_audit_entry,
    resource_names,
)
from streams.k8s_audit import (
    NOT_AUDIT as K8S_NOT_AUDIT,
)
from streams.k8s_audit import (
    NOT_COMPLETED,
    decode_event,
    decode_k8s_audit,
    is_k8s_audit_event,
)
from tests.support.realdata import K8S

DATA = Path(__file__).parent / "data"
GCP_FILE = DATA / "gcp_audit_entries.json"
AZURE_EVENTDATA = DATA / "azure_activity_eventdata.json"
AZURE_EXPORT = DATA / "azure_activity_export.json"


def _load(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def _k8s_items(folder: str) -> list[tuple[str, ChangeEvent | DecodeError]]:
    out: list[tuple[str, ChangeEvent | DecodeError]] = []
    for path in sorted((K8S / folder).iterdir()):
        for raw in read_documents(path):
            assert raw.error is None, raw.position
            out.extend((path.name, item) for item in decode_k8s_audit(raw.doc))
    return out


def _k8s_event(name: str) -> ChangeEvent:
    found = [i for n, i in _k8s_items("falco_trace_files") if n == name]
    assert len(found) == 1 and isinstance(found[0], ChangeEvent), name
    return found[0]


# ------------------------------------------------------------------ Kubernetes, real data


@pytest.mark.parametrize(
    ("folder", "files", "changes", "rejected"),
    [
        (
            "falco_trace_files",
            47,
            49,
            {NOT_COMPLETED: 2, K8S_NOT_AUDIT: 1},
        ),
        ("falco_trace_files_psp", 34, 34, {}),
    ],
)
def test_every_real_audit_file_decodes_or_is_rejected_with_a_reason(
    folder: str, files: int, changes: int, rejected: dict[str, int]
) -> None:
    assert len(list((K8S / folder).iterdir())) == files
    items = _k8s_items(folder)
    events = [i for _, i in items if isinstance(i, ChangeEvent)]
    reasons = Counter(i.reason for _, i in items if isinstance(i, DecodeError))
    assert len(events) == changes
    assert dict(reasons) == rejected
    for event in events:
        assert event.provider == "kubernetes"
        assert event.event_time.endswith("Z") and event.event_time[10] == "T"
        assert ":" in event.event_name and event.event_source
        assert event.record["eventID"] == event.event_id
    # The malformed file and the two streaming stages are the rejected ones.
    names = {n for n, i in items if isinstance(i, DecodeError)}
    if folder == "falco_trace_files":
        assert names == {"fal_01_003.json", "attach_pod.json", "exec_pod.json"}


@pytest.mark.parametrize(
    ("name", "source", "event_name", "rid", "actor_type", "read_only"),
    [
        (
            "create_deployment.json",
            "extensions",
            "create:deployments",
            "default/nginx-deployment",
            "KubernetesUser",
            False,
        ),
        (
            "delete_namespace_foo.json",
            "k8s.io",
            "delete:namespaces",
            "foo",
            "KubernetesUser",
            False,
        ),
        (
            "modify_cluster_role_node_problem_detector.json",
            "rbac.authorization.k8s.io",
            "patch:clusterroles",
            "system:node-problem-detector",
            "KubernetesUser",
            False,
        ),
        (
            "create_serviceaccount_kube_system_namespace.json",
            "k8s.io",
            "create:serviceaccounts",
            "kube-system/myacct",
            "KubernetesUser",
            False,
        ),
        (
            "create_service_account_token_secret.json",
            "k8s.io",
            "create:secrets",
            "test2/default-token-7v4pb",
            "KubernetesSystem",
            False,
        ),
        (
            "create_nginx_pod_unsensitive_mount.json",
            "k8s.io",
            "get:pods",
            None,  # a ReplicaSet's pod: its owner is what Terraform declares
            "KubernetesSystem",
            True,
        ),
    ],
)
def test_real_events_map_to_cloudtrail_shape(
    name: str, source: str, event_name: str, rid: str | None, actor_type: str, read_only: bool
) -> None:
    event = _k8s_event(name)
    assert (event.event_source, event.event_name) == (source, event_name)
    assert event.request is not None and event.request.get("id") == rid
    assert event.actor.type == actor_type
    assert event.read_only is read_only
    assert event.error_code is None


def test_real_event_fields() -> None:
    event = _k8s_event("create_secret.json")
    assert event.event_id == "55a81824-ab56-46c5-8b02-96336f5e78d7"
    assert event.event_time == "2020-04-21T17:57:05.541Z"
    assert event.actor.user_name == "minikube-user"
    assert event.record["userIdentity"]["groups"] == ["system:masters", "system:authenticated"]
    assert event.user_agent == "kubectl/v1.17.3 (darwin/amd64) kubernetes/06ad960"
    assert event.source_ip == "192.168.64.1"
    patch = _k8s_event("modify_cluster_role_node_problem_detector.json")
    assert patch.response is not None and patch.response["kind"] == "ClusterRole"
    assert patch.request is not None and patch.request["object"]["rules"][0]["verbs"] == ["get"]


def test_controller_created_pods_have_no_terraform_id() -> None:
    pods = [
        i
        for _, i in _k8s_items("falco_trace_files_psp")
        if isinstance(i, ChangeEvent) and i.event_name == "create:pods"
    ]
    assert len(pods) == 34
    for pod in pods:
        assert pod.request is not None and "id" not in pod.request
        owner = pod.record["additionalEventData"]["owner"]
        assert owner["kind"] == "ReplicaSet" and owner["name"].startswith("nginx-deployment-")
        assert pod.actor.type == "ServiceAccount"


# ------------------------------------------------------------------ Kubernetes, shapes

BASE_EVENT: dict[str, Any] = {
    "kind": "Event",
    "apiVersion": "audit.k8s.io/v1",
    "level": "RequestResponse",
    "auditID": "11111111-aaaa-bbbb-cccc-000000000001",
    "stage": "ResponseComplete",
    "requestURI": "/apis/apps/v1/namespaces/shop/deployments/web",
    "verb": "patch",
    "user": {"username": "jane@example.com", "uid": "u-1", "groups": ["devs"]},
    "sourceIPs": ["10.1.2.3", "10.0.0.1"],
    "userAgent": "kubectl/v1.29.0 (linux/amd64) kubernetes/abcdef",
    "objectRef": {
        "resource": "deployments",
        "namespace": "shop",
        "name": "web",
        "apiGroup": "apps",
        "apiVersion": "v1",
    },
    "responseStatus": {"metadata": {}, "code": 200},
    "requestObject": {"spec": {"replicas": 5}},
    "requestReceivedTimestamp": "2024-05-01T12:00:00.123456Z",
    "stageTimestamp": "2024-05-01T12:00:00.200000Z",
}


def _event(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE_EVENT)
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def test_event_list_and_stages() -> None:
    received = _event(stage="RequestReceived", auditID="a-0")
    complete = _event(auditID="a-1")
    bare = _event(auditID="a-2", stage=None, apiVersion=None)
    items = list(
        decode_k8s_audit(
            {
                "kind": "EventList",
                "apiVersion": "audit.k8s.io/v1",
                "items": [received, complete, bare],
            }
        )
    )
    assert isinstance(items[0], DecodeError) and items[0].reason == NOT_COMPLETED
    assert [i.event_id for i in items[1:] if isinstance(i, ChangeEvent)] == ["a-1", "a-2"]
    assert list(decode_k8s_audit([complete])) and is_k8s_audit_event(bare)
    assert not is_k8s_audit_event({"kind": "EventList", "items": []})


def test_patch_event_record() -> None:
    event = decode_event(_event(), cluster="prod-eu")
    assert (event.event_source, event.event_name) == ("apps", "patch:deployments")
    assert event.event_time == "2024-05-01T12:00:00.123Z"
    assert event.request is not None
    assert event.request["id"] == "shop/web"
    assert event.request["object"] == {"spec": {"replicas": 5}}
    assert event.source_ip == "10.1.2.3"
    assert event.account_id == "prod-eu"
    assert event.actor.principal_id == "u-1" and event.actor.user_name == "jane@example.com"
    assert event.read_only is False and event.error_code is None


@pytest.mark.parametrize(
    ("changes", "error_code", "read_only"),
    [
        (
            {"responseStatus": {"code": 403, "reason": "Forbidden", "status": "Failure"}},
            "Forbidden",
            False,
        ),
        ({"responseStatus": {"code": 409}}, "409", False),
        ({"responseStatus": {"code": 201}}, None, False),
        ({"verb": "get"}, None, True),
        ({"verb": "watch"}, None, True),
        ({"requestURI": "/apis/apps/v1/namespaces/shop/deployments/web?dryRun=All"}, None, True),
    ],
)
def test_errors_and_reads(changes: dict[str, Any], error_code: str | None, read_only: bool) -> None:
    event = decode_event(_event(**changes))
    assert event.error_code == error_code
    assert event.read_only is read_only


@pytest.mark.parametrize(
    ("username", "kind"),
    [
        ("system:serviceaccount:kube-system:horizontal-pod-autoscaler", "ServiceAccount"),
        ("system:kube-controller-manager", "KubernetesSystem"),
        ("system:node:ip-10-0-0-1", "KubernetesSystem"),
        ("system:anonymous", "KubernetesUser"),
        ("kubernetes-admin", "KubernetesUser"),
    ],
)
def test_identity_types(username: str, kind: str) -> None:
    assert decode_event(_event(user={"username": username})).actor.type == kind


def test_cluster_scoped_and_subresource_ids() -> None:
    ns = decode_event(
        _event(
            objectRef={"resource": "namespaces", "namespace": "team-a", "name": "team-a"},
            verb="delete",
        )
    )
    assert ns.event_source == "k8s.io" and ns.request and ns.request["id"] == "team-a"
    scale = decode_event(
        _event(
            objectRef={
                "resource": "deployments",
                "subresource": "scale",
                "namespace": "shop",
                "name": "web",
                "apiGroup": "apps",
            }
        )
    )
    assert scale.event_name == "patch:deployments/scale"
    assert scale.request and scale.request["id"] == "shop/web"
    created = decode_event(
        _event(
            verb="create",
            objectRef={"resource": "configmaps", "namespace": "shop"},
            requestObject={"metadata": {"name": "cfg"}, "data": {"a": "1"}},
        )
    )
    assert created.request and created.request["id"] == "shop/cfg"


def test_secret_values_never_kept() -> None:
    last_applied = '{"data":{"password":"aHVudGVyMg=="}}'
    secret = {
        "kind": "Secret",
        "metadata": {
            "name": "db",
            "namespace": "shop",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied},
        },
        "data": {"password": "aHVudGVyMg=="},
        "stringData": {"token": "plain-token"},
        "type": "Opaque",
    }
    doc = _event(
        verb="update",
        objectRef={"resource": "secrets", "namespace": "shop", "name": "db"},
        requestObject=secret,
        responseObject=secret,
    )
    event = decode_event(doc)
    text = orjson.dumps(event.record).decode()
    assert "aHVudGVyMg" not in text and "plain-token" not in text
    assert event.request and event.request["object"]["data"] == {"password": REDACTED}
    assert event.request["object"]["stringData"] == {"token": REDACTED}
    assert event.response and event.response["data"] == {"password": REDACTED}
    # the caller's document is not modified
    assert doc["requestObject"]["data"]["password"] == "aHVudGVyMg=="


def test_secret_lists_and_tokens_never_kept() -> None:
    listed = decode_event(
        _event(
            verb="list",
            objectRef={"resource": "secrets", "namespace": "shop"},
            requestObject=None,
            responseObject={
                "kind": "SecretList",
                "items": [{"metadata": {"name": "a"}, "data": {"key": "c2VjcmV0LWE="}}],
            },
        )
    )
    token = decode_event(
        _event(
            verb="create",
            objectRef={
                "resource": "serviceaccounts",
                "subresource": "token",
                "namespace": "shop",
                "name": "builder",
            },
            requestObject={"kind": "TokenRequest", "spec": {"expirationSeconds": 600}},
            responseObject={"kind": "TokenRequest", "status": {"token": "eyJhbGciOi.secret"}},
        )
    )
    text = orjson.dumps([listed.record, token.record]).decode()
    assert "c2VjcmV0LWE=" not in text and "eyJhbGciOi" not in text
    assert listed.response and listed.response["items"][0]["data"] == {"key": REDACTED}
    assert token.response and token.response["status"]["token"] == REDACTED
    assert token.request and token.request["object"]["spec"]["expirationSeconds"] == 600
    # flags are not secrets, and a ConfigMap's data is compared with the state: both stay
    account = decode_event(
        _event(
            objectRef={"resource": "serviceaccounts", "namespace": "shop", "name": "builder"},
            requestObject={"automountServiceAccountToken": False},
        )
    )
    assert account.request and account.request["object"] == {"automountServiceAccountToken": False}
    config = decode_event(
        _event(
            objectRef={"resource": "configmaps", "namespace": "shop", "name": "cfg"},
            requestObject={"data": {"api_token": "not-a-secret-by-contract"}},
        )
    )
    assert config.request and config.request["object"]["data"]["api_token"].startswith("not-a")


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"kind": 0}, K8S_NOT_AUDIT),
        ([1], K8S_NOT_AUDIT),
        (_event(verb=None), "no verb"),
        (_event(objectRef="deployments"), "bad objectRef"),
        (_event(objectRef=None, requestURI="/healthz"), "no object"),
        (_event(requestReceivedTimestamp=None, stageTimestamp=None), "no timestamp"),
        (_event(requestReceivedTimestamp="yesterday"), "bad timestamp"),
    ],
)
def test_bad_events_are_named(doc: Any, reason: str) -> None:
    items = list(decode_k8s_audit([_event(auditID="before"), doc, _event(auditID="after")]))
    assert [i.reason for i in items if isinstance(i, DecodeError)] == [reason]
    assert [i.event_id for i in items if isinstance(i, ChangeEvent)] == ["before", "after"]


# ------------------------------------------------------------------ GCP


def test_gcp_fixture_decodes() -> None:
    items = list(decode_gcp_audit(_load(GCP_FILE)))
    errors = [i for i in items if isinstance(i, DecodeError)]
    events = [i for i in items if isinstance(i, ChangeEvent)]
    assert [e.reason for e in errors] == [OPERATION_CONTINUATION]
    assert len(events) == 11
    assert all(e.provider == "gcp" and e.account_id == "cloudskiff-dev-elie" for e in events)
    by_id = {e.event_id: e for e in events}
    fw = by_id["fw-patch-first"]
    assert (fw.event_source, fw.event_name) == (
        "compute.googleapis.com",
        "v1.compute.firewalls.patch",
    )
    assert fw.event_time == "2024-03-05T10:15:02.117Z"
    assert fw.request and fw.request["sourceRanges"] == ["0.0.0.0/0"]
    assert (
        fw.request["resourceName"] == "projects/cloudskiff-dev-elie/global/firewalls/test-firewall"
    )
    assert fw.actor.type == "User" and fw.actor.user_name == "alice@example.com"
    assert fw.source_ip == "203.0.113.10" and fw.user_agent and "gcloud" in fw.user_agent
    assert fw.record["additionalEventData"]["operation"]["first"] is True
    assert by_id["vm-setmetadata"].region == "us-central1-a"
    assert by_id["bucket-delete"].record["additionalEventData"]["name"] == "tf-state-archive"
    assert by_id["fw-delete-denied"].error_code == "PERMISSION_DENIED"
    assert by_id["fw-delete-denied"].record["errorMessage"].startswith("Required")
    assert by_id["vm-get"].read_only is True
    assert by_id["fw-patch-first"].read_only is False
    assert by_id["fw-patch-by-terraform"].actor.type == "ServiceAccount"
    pool = by_id["gke-pool-size"].record["additionalEventData"]
    assert pool["compactName"] == "cloudskiff-dev-elie/us-central1-a/prod/default-pool"


def test_gcp_envelopes() -> None:
    entries = _load(GCP_FILE)["entries"]
    entry = entries[0]
    data = base64.b64encode(orjson.dumps(entry)).decode()
    push = {"message": {"data": data, "messageId": "1", "attributes": {}}, "subscription": "s"}
    pull = {"receivedMessages": [{"ackId": "a", "message": {"data": data}}]}
    bare = {"data": data, "messageId": "1"}
    for doc in (entry, [entry], {"entries": [entry]}, push, pull, bare):
        items = list(decode_gcp_audit(doc))
        assert [i.event_id for i in items if isinstance(i, ChangeEvent)] == ["fw-patch-first"]
    bad = list(decode_gcp_audit([{"message": {"data": "%%%"}}, entry]))
    assert isinstance(bad[0], DecodeError) and bad[0].reason == "bad Pub/Sub message"
    assert isinstance(bad[1], ChangeEvent)
    ndjson = b"\n".join(orjson.dumps(e) for e in entries)
    docs = list(parse_documents(ndjson, "sink.json"))
    assert len(docs) == len(entries)
    decoded = [i for d in docs for i in decode_gcp_audit(d.doc)]
    assert sum(isinstance(i, ChangeEvent) for i in decoded) == 11


@pytest.mark.parametrize(
    ("name", "relative", "leaf", "located", "compact"),
    [
        (
            "projects/p/zones/us-central1-a/instances/vm",
            "projects/p/zones/us-central1-a/instances/vm",
            "vm",
            "projects/p/locations/us-central1-a/instances/vm",
            "p/us-central1-a/vm",
        ),
        ("projects/_/buckets/b", "projects/_/buckets/b", "b", "projects/_/buckets/b", "_/b"),
        (
            "//container.googleapis.com/projects/p/locations/l/clusters/c/nodePools/n",
            "projects/p/locations/l/clusters/c/nodePools/n",
            "n",
            "projects/p/locations/l/clusters/c/nodePools/n",
            "p/l/c/n",
        ),
        (
            "https://www.googleapis.com/compute/v1/projects/p/global/firewalls/f",
            "projects/p/global/firewalls/f",
            "f",
            "projects/p/global/firewalls/f",
            None,
        ),
    ],
)
def test_resource_name_forms(
    name: str, relative: str, leaf: str, located: str, compact: str | None
) -> None:
    forms = resource_names(name)
    assert forms["relativeName"] == relative
    assert forms["name"] == leaf
    assert forms["locationsName"] == located
    assert forms["compactName"] == compact


@pytest.mark.parametrize(
    ("email", "kind"),
    [
        ("alice@example.com", "User"),
        ("deployer@p.iam.gserviceaccount.com", "ServiceAccount"),
        ("123-compute@developer.gserviceaccount.com", "ServiceAccount"),
        ("service-123@container-engine-robot.iam.gserviceaccount.com", "ServiceAgent"),
        ("123@cloudservices.gserviceaccount.com", "ServiceAgent"),
    ],
)
def test_gcp_identity_types(email: str, kind: str) -> None:
    entry = copy.deepcopy(_load(GCP_FILE)["entries"][0])
    entry["protoPayload"]["authenticationInfo"] = {"principalEmail": email}
    assert decode_entry(entry).actor.type == kind


def test_gcp_secret_fields_hidden() -> None:
    entry = copy.deepcopy(_load(GCP_FILE)["entries"][0])
    entry["protoPayload"]["request"] = {
        "user": {"name": "app", "password": "hunter2"},
        "privateKeyData": "LS0tLS1CRUdJTi",
        "tokenLifetime": "3600s",
        "kmsKeyName": "projects/p/locations/l/keyRings/r/cryptoKeys/k",
    }
    event = decode_entry(entry)
    text = orjson.dumps(event.record).decode()
    assert "hunter2" not in text and "LS0tLS1CRUdJTi" not in text
    assert event.request and event.request["tokenLifetime"] == "3600s"
    assert event.request["kmsKeyName"].endswith("cryptoKeys/k")
    assert redact([{"clientSecret": "x"}]) == [{"clientSecret": REDACTED}]


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (
            {"insertId": "t", "textPayload": "hello", "timestamp": "2024-01-01T00:00:00Z"},
            GCP_NOT_AUDIT,
        ),
        (
            {"protoPayload": {"@type": "type.googleapis.com/google.cloud.audit.AuditLog"}},
            GCP_NOT_AUDIT,
        ),
        (
            {"protoPayload": {"serviceName": "s", "methodName": "m"}, "insertId": "x"},
            "no timestamp",
        ),
        (
            {
                "protoPayload": {"serviceName": "s", "methodName": "m", "request": "text"},
                "timestamp": "2024-01-01T00:00:00Z",
            },
            "bad request",
        ),
    ],
)
def test_gcp_bad_entries_are_named(doc: Any, reason: str) -> None:
    good = _load(GCP_FILE)["entries"][0]
    items = list(decode_gcp_audit([good, doc, good]))
    assert [i.reason for i in items if isinstance(i, DecodeError)] == [reason]
    assert sum(isinstance(i, ChangeEvent) for i in items) == 2
    assert is_gcp_audit_entry(good) and not is_gcp_audit_entry([good])


# ------------------------------------------------------------------ Azure


def test_azure_eventdata_fixture() -> None:
    items = list(decode_azure_activity(_load(AZURE_EVENTDATA)))
    errors = [i for i in items if isinstance(i, DecodeError)]
    events = {i.event_id: i for i in items if isinstance(i, ChangeEvent)}
    assert [e.reason for e in errors] == [AZURE_NOT_COMPLETED]
    assert set(events) == {
        "evt-nsg-rule-end",
        "evt-hub-rule-end",
        "evt-role-assignment",
        "evt-vm-delete-failed",
    }
    rule = events["evt-nsg-rule-end"]
    assert rule.provider == "azure"
    assert rule.event_source == "microsoft.network"
    assert rule.event_name == "microsoft.network/networksecuritygroups/securityrules/write"
    assert rule.event_time == "2024-04-02T09:00:01.453Z"
    assert rule.account_id == "7bfb2c5c-7308-46ed-8ae4-fffa356eb406"
    assert rule.actor.type == "User" and rule.actor.user_name == "bob@contoso.example"
    assert rule.actor.principal_id == "11111111-2222-3333-4444-555555555555"
    assert rule.source_ip == "203.0.113.20" and rule.user_agent is None
    assert rule.request is not None
    assert rule.request["requestBody"]["properties"]["destinationPortRange"] == "22"
    nsg = (
        "/subscriptions/7bfb2c5c-7308-46ed-8ae4-fffa356eb406/resourceGroups/example-resources"
        "/providers/Microsoft.Network/networkSecurityGroups/acceptanceTestSecurityGroup1"
    )
    assert rule.request["parentId"] == nsg
    assert rule.request["resourceIds"] == [f"{nsg}/securityRules/test123", nsg]
    assert rule.record["additionalEventData"]["operationName"] == (
        "Microsoft.Network/networkSecurityGroups/securityRules/write"
    )
    assigned = events["evt-role-assignment"]
    assert assigned.event_name == "microsoft.authorization/roleassignments/write:created"
    failed = events["evt-vm-delete-failed"]
    assert failed.error_code == "Conflict" and "ScopeLocked" in failed.record["errorMessage"]


def test_azure_export_fixture() -> None:
    items = list(decode_azure_activity(_load(AZURE_EXPORT)))
    errors = [i for i in items if isinstance(i, DecodeError)]
    events = [i for i in items if isinstance(i, ChangeEvent)]
    assert [e.reason for e in errors] == [AZURE_NOT_COMPLETED]
    assert [e.event_name for e in events] == [
        "microsoft.resources/subscriptions/resourcegroups/delete",
        "microsoft.storage/storageaccounts/write:created",
        "microsoft.keyvault/vaults/write",
        "microsoft.compute/virtualmachines/read",
    ]
    rg, account, vault, read = events
    # the export upper-cased the id; properties.entity keeps ARM's casing
    assert rg.request and rg.request["resourceId"] == (
        "/subscriptions/7bfb2c5c-7308-46ed-8ae4-fffa356eb406/resourceGroups/example-resources"
    )
    assert rg.request["parentId"] is None and rg.region == "global"
    assert account.actor.type == "ServicePrincipal"
    assert account.actor.user_name == "aaaaaaaa-1111-2222-3333-444444444444"
    assert (
        vault.request
        and vault.request["requestBody"]["properties"]["publicNetworkAccess"] == "Enabled"
    )
    assert vault.response and vault.response["properties"]["publicNetworkAccess"] == "Enabled"
    assert read.read_only is True and vault.read_only is False
    # no eventDataId in exports: a stable content id
    again = [i for i in decode_azure_activity(_load(AZURE_EXPORT)) if isinstance(i, ChangeEvent)]
    assert [e.event_id for e in again] == [e.event_id for e in events]
    assert all(e.event_id.startswith("azure-") for e in events)


def test_azure_bodies_and_identities() -> None:
    base = _load(AZURE_EVENTDATA)["value"][1]
    truncated = copy.deepcopy(base)
    truncated["properties"]["requestbody"] = '{"properties":{"protocol":"Tc'
    event = decode_azure_record(truncated)
    assert event.request and event.request["requestBody"] is None
    assert event.record["additionalEventData"]["truncatedBody"] is True
    secret = copy.deepcopy(base)
    secret["properties"]["requestbody"] = orjson.dumps(
        {"properties": {"administratorLoginPassword": "P@ssw0rd!", "version": "12.0"}}
    ).decode()
    text = orjson.dumps(decode_azure_record(secret).record).decode()
    assert "P@ssw0rd!" not in text and "12.0" in text
    managed = copy.deepcopy(base)
    managed["caller"] = "cccccccc-0000-0000-0000-00000000000c"
    managed["claims"] = {"appid": "cccccccc-0000-0000-0000-00000000000c", "xms_mirid": "/sub/x"}
    assert decode_azure_record(managed).actor.type == "ManagedIdentity"
    app = copy.deepcopy(base)
    app["caller"] = "dddddddd-0000-0000-0000-00000000000d"
    app["claims"] = {"appid": "dddddddd-0000-0000-0000-00000000000d"}
    assert decode_azure_record(app).actor.type == "ServicePrincipal"


@pytest.mark.parametrize(
    ("resource_id", "parent"),
    [
        (
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/a",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v",
        ),
        ("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v", None),
        ("/subscriptions/s/resourceGroups/rg", None),
        ("/subscriptions/s/providers/Microsoft.Authorization/roleAssignments/g", None),
        (None, None),
    ],
)
def test_arm_parent(resource_id: str | None, parent: str | None) -> None:
    assert arm_parent(resource_id) == parent


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"records": "nope"}, NOT_ACTIVITY),
        ({"operationName": {"value": "Microsoft.Compute/virtualMachines/write"}}, NOT_ACTIVITY),
        (
            {"operationName": "x/write", "time": "not a time", "resourceId": "/subscriptions/s"},
            "bad timestamp",
        ),
        (
            {
                "operationName": "x/write",
                "time": "2024-01-01T00:00:00Z",
                "resultType": "Accept",
                "category": "Administrative",
            },
            AZURE_NOT_COMPLETED,
        ),
    ],
)
def test_azure_bad_records_are_named(doc: Any, reason: str) -> None:
    good = _load(AZURE_EVENTDATA)["value"][1]
    items = list(decode_azure_activity([good, doc, good]))
    assert [i.reason for i in items if isinstance(i, DecodeError)] == [reason]
    assert sum(isinstance(i, ChangeEvent) for i in items) == 2
    assert is_azure_activity_record(good)
