"""Detection end to end over audit events: Kubernetes (real events), GCP and Azure (hand-written
fixtures from the documented formats, see tests/data/) against kubernetes_ / google_ / azurerm_
states (hand-built, and the real driftctl states in ../shared/realdata/tfstate)."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.detect import Detection, Detector
from monitor.tfstate import StateIndex, TfState, load_state_file, parse_state
from monitor.types import ChangeEvent, DecodeError, Drift, DriftKind, SkipReason
from rules import load_catalogue, load_severity
from rules.catalogue import Catalogue
from streams.azure_activity import decode_azure_activity
from streams.files import read_documents
from streams.gcp_audit import decode_gcp_audit
from streams.k8s_audit import decode_event, decode_k8s_audit
from tests.support.realdata import K8S, TFSTATE

DATA = Path(__file__).parent / "data"
DRIFTCTL = TFSTATE / "driftctl"
FIXED_NOW = "2024-06-01T00:00:00Z"
PROJECT = "cloudskiff-dev-elie"
SA_EMAIL = f"deployer@{PROJECT}.iam.gserviceaccount.com"
SUB = "/subscriptions/7bfb2c5c-7308-46ed-8ae4-fffa356eb406"


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


def _resource(rtype: str, name: str, attrs: dict[str, Any], provider: str) -> dict[str, Any]:
    return {
        "mode": "managed",
        "type": rtype,
        "name": name,
        "provider": f'provider["registry.terraform.io/hashicorp/{provider}"]',
        "instances": [{"schema_version": 0, "attributes": attrs}],
    }


def _state(path: str, *resources: dict[str, Any]) -> TfState:
    doc = {
        "version": 4,
        "terraform_version": "1.7.4",
        "serial": 3,
        "lineage": "audit-test",
        "outputs": {},
        "resources": list(resources),
    }
    return parse_state(doc, path)


def _detector(
    catalogue: Catalogue, states: Iterable[TfState], apply_principals: Iterable[str] = ()
) -> Detector:
    index = StateIndex(list(states), catalogue.identifiers)
    return Detector(catalogue, load_severity(), index, apply_principals, clock=lambda: FIXED_NOW)


def _run(
    detector: Detector, events: Iterable[ChangeEvent]
) -> tuple[dict[str, Detection], list[Drift]]:
    results: dict[str, Detection] = {}
    drifts: list[Drift] = []
    for event in events:
        found = detector.detect(event)
        results.setdefault(event.event_id, found)
        drifts.extend(found.drifts)
    return results, drifts


def _events(items: Iterable[ChangeEvent | DecodeError]) -> list[ChangeEvent]:
    return [i for i in items if isinstance(i, ChangeEvent)]


def _summary(d: Drift) -> tuple[str, str, str | None]:
    return (d.kind.value, d.resource_address or f"{d.resource_type}:{d.resource_id}", d.field)


# ------------------------------------------------------------------ Kubernetes


def _k8s_state() -> TfState:
    return _state(
        "cluster.tfstate",
        _resource(
            "kubernetes_namespace_v1",
            "foo",
            {"id": "foo", "metadata": [{"name": "foo"}]},
            "kubernetes",
        ),
        _resource(
            "kubernetes_config_map_v1",
            "my_config",
            {
                "id": "default/my-config",
                "metadata": [{"name": "my-config", "namespace": "default"}],
                "data": {"ui.properties": "color.good=purple\n"},
            },
            "kubernetes",
        ),
        _resource(
            "kubernetes_deployment",
            "nginx",
            {
                "id": "default/nginx-deployment",
                "metadata": [{"name": "nginx-deployment", "namespace": "default"}],
                "spec": [{"replicas": "1"}],
            },
            "kubernetes",
        ),
        _resource(
            "kubernetes_cluster_role_v1",
            "npd",
            {
                "id": "system:node-problem-detector",
                "metadata": [{"name": "system:node-problem-detector"}],
                "rule": [],
            },
            "kubernetes",
        ),
        _resource(
            "kubernetes_service_v1",
            "nginx",
            {
                "id": "default/nginx",
                "metadata": [{"name": "nginx", "namespace": "default"}],
                "spec": [{"type": "ClusterIP"}],
            },
            "kubernetes",
        ),
    )


def _real_k8s_events() -> list[ChangeEvent]:
    out: list[ChangeEvent] = []
    for path in sorted(K8S.rglob("*.json")):
        for raw in read_documents(path):
            if raw.error is None:
                out.extend(_events(decode_k8s_audit(raw.doc)))
    return out


def test_real_k8s_audit_events_against_a_cluster_state(catalogue: Catalogue) -> None:
    events = _real_k8s_events()
    assert len(events) == 83
    detector = _detector(catalogue, [_k8s_state()])
    skipped: Counter[str] = Counter()
    drifts: list[Drift] = []
    for event in events:
        found = detector.detect(event)
        drifts.extend(found.drifts)
        if found.skipped:
            skipped[found.skipped] += 1
    kinds = Counter(d.kind for d in drifts)
    assert kinds == {DriftKind.MODIFIED: 1, DriftKind.MISSING: 4, DriftKind.UNMANAGED: 12}
    modified = [d for d in drifts if d.kind is DriftKind.MODIFIED]
    assert [_summary(d) for d in modified] == [("modified", "kubernetes_cluster_role_v1.npd", None)]
    assert modified[0].actor.user_name == "minikube-user"
    assert modified[0].event_name == "patch:clusterroles"
    assert {d.resource_address for d in drifts if d.kind is DriftKind.MISSING} == {
        "kubernetes_config_map_v1.my_config",
        "kubernetes_deployment.nginx",
        "kubernetes_namespace_v1.foo",
        "kubernetes_service_v1.nginx",
    }
    unmanaged = Counter(
        (d.resource_type, d.resource_id) for d in drifts if d.kind is DriftKind.UNMANAGED
    )
    assert unmanaged == {
        ("kubernetes_cluster_role_binding_v1", "some-reader-binding"): 2,
        ("kubernetes_cluster_role_v1", "some-reader"): 5,
        ("kubernetes_secret_v1", "default/example-secret"): 1,
        ("kubernetes_secret_v1", "kube-system/bootstrap-token-ne7bxu"): 1,
        ("kubernetes_service_account_v1", "default/myacct"): 1,
        ("kubernetes_service_account_v1", "kube-public/myacct"): 1,
        ("kubernetes_service_account_v1", "kube-system/myacct"): 1,
    }
    assert all(
        d.severity == "critical"
        for d in drifts
        if d.resource_type.startswith("kubernetes_cluster_role_binding")
    )
    assert all(d.provider == "kubernetes" and d.detected_at == FIXED_NOW for d in drifts)
    assert skipped == {
        SkipReason.IN_STATE: 15,  # namespace foo x3, my-config x8, the deployment, service nginx x3
        SkipReason.NO_ID: 44,  # pods created by a ReplicaSet
        SkipReason.NOT_IN_STATE: 5,
        SkipReason.READ_ONLY: 1,
        SkipReason.SERVICE: 1,  # the control plane's token controller creating its own secret
    }


def test_terraforms_own_k8s_calls_are_not_drift(catalogue: Catalogue) -> None:
    path = K8S / "falco_trace_files" / "modify_cluster_role_node_problem_detector.json"
    doc = orjson.loads(path.read_bytes())
    detector = _detector(catalogue, [_k8s_state()])
    assert detector.detect(decode_event(doc)).drifts
    # The kubernetes provider's client sends "HashiCorp/1.0 Terraform/<version>".
    doc["userAgent"] = "HashiCorp/1.0 Terraform/1.7.4"
    assert detector.detect(decode_event(doc)).skipped == SkipReason.TERRAFORM


def _k8s_change(verb: str, ref: dict[str, Any], body: Any, **extra: Any) -> ChangeEvent:
    doc: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Request",
        "auditID": f"{verb}-{ref['resource']}-{ref.get('subresource', '')}",
        "stage": "ResponseComplete",
        "verb": verb,
        "user": {"username": "ops@example.com"},
        "sourceIPs": ["10.0.0.9"],
        "userAgent": "kubectl/v1.29.0",
        "objectRef": ref,
        "responseStatus": {"code": 200},
        "requestObject": body,
        "requestReceivedTimestamp": "2024-05-01T12:00:00Z",
        **extra,
    }
    return decode_event(doc)


def test_k8s_patches_compare_certain_attributes(catalogue: Catalogue) -> None:
    state = _state(
        "apps.tfstate",
        _resource(
            "kubernetes_deployment_v1",
            "web",
            {"id": "shop/web", "metadata": [{"name": "web"}], "spec": [{"replicas": "2"}]},
            "kubernetes",
        ),
        _resource(
            "kubernetes_service_v1",
            "web",
            {"id": "shop/web", "metadata": [{"name": "web"}], "spec": [{"type": "ClusterIP"}]},
            "kubernetes",
        ),
        _resource(
            "kubernetes_config_map_v1",
            "cfg",
            {"id": "shop/cfg", "metadata": [{"name": "cfg"}], "data": {"a": "1"}},
            "kubernetes",
        ),
        _resource(
            "kubernetes_service_account_v1",
            "builder",
            {
                "id": "shop/builder",
                "metadata": [{"name": "builder"}],
                "automount_service_account_token": False,
            },
            "kubernetes",
        ),
        _resource(
            "kubernetes_secret_v1",
            "db",
            {"id": "shop/db", "metadata": [{"name": "db"}], "data": {"password": "c2VjcmV0"}},
            "kubernetes",
        ),
    )
    detector = _detector(catalogue, [state])
    deploy = {"resource": "deployments", "namespace": "shop", "name": "web", "apiGroup": "apps"}

    def drifts_of(event: ChangeEvent) -> list[tuple[str | None, Any, Any]]:
        return [(d.field, d.old_value, d.new_value) for d in detector.detect(event).drifts]

    assert drifts_of(_k8s_change("patch", deploy, {"spec": {"replicas": 5}})) == [
        ("spec.0.replicas", "2", 5)
    ]
    assert drifts_of(_k8s_change("patch", deploy, {"spec": {"replicas": 2}})) == []
    # anything else in the patch: a coarse drift (the change is real, its attribute unknown)
    env = {"spec": {"template": {"spec": {"containers": [{"name": "web", "env": []}]}}}}
    assert drifts_of(_k8s_change("patch", deploy, env)) == [(None, None, None)]
    scale = {**deploy, "subresource": "scale"}
    assert drifts_of(_k8s_change("update", scale, {"kind": "Scale", "spec": {"replicas": 0}})) == [
        ("spec.0.replicas", "2", 0)
    ]
    svc = {"resource": "services", "namespace": "shop", "name": "web"}
    assert drifts_of(_k8s_change("patch", svc, {"spec": {"type": "NodePort"}})) == [
        ("spec.0.type", "ClusterIP", "NodePort")
    ]
    cfg = {"resource": "configmaps", "namespace": "shop", "name": "cfg"}
    assert drifts_of(_k8s_change("patch", cfg, {"data": {"b": "2"}})) == [
        ("data", {"a": "1"}, {"a": "1", "b": "2"})
    ]
    sa = {"resource": "serviceaccounts", "namespace": "shop", "name": "builder"}
    # a setting named after a secret is not one: its values are shown
    assert drifts_of(_k8s_change("patch", sa, {"automountServiceAccountToken": True})) == [
        ("automount_service_account_token", False, True)
    ]
    assert drifts_of(_k8s_change("patch", sa, {"automountServiceAccountToken": False})) == []
    secret = {"resource": "secrets", "namespace": "shop", "name": "db"}
    found = detector.detect(
        _k8s_change("update", secret, {"kind": "Secret", "data": {"password": "bmV3"}})
    )
    assert [_summary(d) for d in found.drifts] == [("modified", "kubernetes_secret_v1.db", None)]
    assert "bmV3" not in orjson.dumps([d.as_dict() for d in found.drifts]).decode()
    denied = _k8s_change("patch", deploy, {"spec": {"replicas": 9}}, responseStatus={"code": 403})
    assert detector.detect(denied).skipped == SkipReason.FAILED
    dry = _k8s_change(
        "patch", deploy, {"spec": {"replicas": 9}}, requestURI="/apis/apps/v1/x?dryRun=All"
    )
    assert detector.detect(dry).skipped == SkipReason.READ_ONLY


# ------------------------------------------------------------------ GCP


def _gcp_states() -> list[TfState]:
    hand = _state(
        "gcp.tfstate",
        _resource(
            "google_storage_bucket",
            "archive",
            {"id": "tf-state-archive", "name": "tf-state-archive", "project": PROJECT},
            "google",
        ),
        _resource(
            "google_project_iam_policy",
            "project",
            {"id": PROJECT, "project": PROJECT, "policy_data": '{"bindings":[]}'},
            "google",
        ),
        _resource(
            "google_service_account",
            "deployer",
            {
                "id": f"projects/{PROJECT}/serviceAccounts/{SA_EMAIL}",
                "email": SA_EMAIL,
                "unique_id": "1234567890",
                "account_id": "deployer",
                "disabled": False,
            },
            "google",
        ),
        _resource(
            "google_container_node_pool",
            "default",
            {
                "id": f"{PROJECT}/us-central1-a/prod/default-pool",
                "name": "default-pool",
                "node_count": 3,
            },
            "google",
        ),
    )
    real = [
        load_state_file(
            DRIFTCTL / "pkg_iac_terraform_state_test_google_compute_firewall_terraform.tfstate"
        ),
        load_state_file(
            DRIFTCTL / "pkg_iac_terraform_state_test_google_compute_instance_terraform.tfstate"
        ),
    ]
    return [hand, *real]


def test_gcp_audit_entries_against_google_states(catalogue: Catalogue) -> None:
    doc = orjson.loads((DATA / "gcp_audit_entries.json").read_bytes())
    events = _events(decode_gcp_audit(doc))
    results, drifts = _run(_detector(catalogue, _gcp_states()), events)
    summaries = {eid: [_summary(d) for d in det.drifts] for eid, det in results.items()}
    assert summaries == {
        "fw-patch-first": [("modified", "google_compute_firewall.default", "source_ranges")],
        "vm-setmetadata": [("modified", "google_compute_instance.default", "metadata")],
        "vm-insert-beta": [
            (
                "unmanaged",
                f"google_compute_instance:projects/{PROJECT}/zones/us-central1-a/instances/miner-1",
                None,
            )
        ],
        "bucket-delete": [("missing", "google_storage_bucket.archive", None)],
        "project-setiampolicy": [("modified", "google_project_iam_policy.project", None)],
        "sa-key-create": [
            (
                "unmanaged",
                "google_service_account_key:projects/cloudskiff-dev-elie/serviceAccounts/"
                "deployer@cloudskiff-dev-elie.iam.gserviceaccount.com/keys/0f1e2d3c4b5a",
                None,
            )
        ],
        "sa-disable": [("modified", "google_service_account.deployer", "disabled")],
        "fw-delete-denied": [],
        "vm-get": [],
        "fw-patch-by-terraform": [],
        "gke-pool-size": [("modified", "google_container_node_pool.default", None)],
    }
    assert results["fw-delete-denied"].skipped == SkipReason.FAILED
    assert results["vm-get"].skipped == SkipReason.READ_ONLY
    assert results["fw-patch-by-terraform"].skipped == SkipReason.TERRAFORM
    by = {(d.event_id, d.field): d for d in drifts}
    fw = by[("fw-patch-first", "source_ranges")]
    assert (fw.old_value, fw.new_value) == ([], ["0.0.0.0/0"])
    assert fw.provider == "gcp" and fw.account_id == PROJECT and fw.severity == "high"
    assert fw.actor.user_name == "alice@example.com" and fw.source_ip == "203.0.113.10"
    meta = by[("vm-setmetadata", "metadata")]
    assert (meta.old_value, meta.new_value) == (None, {"enable-oslogin": "FALSE"})
    assert meta.region == "us-central1-a"
    disabled = by[("sa-disable", "disabled")]
    assert (disabled.old_value, disabled.new_value) == (False, True)
    assert by[("project-setiampolicy", None)].severity == "critical"
    assert by[("sa-key-create", None)].severity == "critical"


# ------------------------------------------------------------------ Azure


def _azure_states() -> list[TfState]:
    hand = _state(
        "azure.tfstate",
        _resource(
            "azurerm_network_security_rule",
            "allow_https",
            {
                "id": f"{SUB}/resourceGroups/hub/providers/Microsoft.Network/"
                "networkSecurityGroups/nsg-hub/securityRules/allow-https",
                "name": "allow-https",
                "access": "Allow",
                "direction": "Inbound",
                "priority": 200,
                "protocol": "Tcp",
                "source_address_prefix": "*",
                "source_address_prefixes": [],
                "destination_address_prefix": "*",
                "source_port_range": "*",
                "destination_port_range": "443",
                "destination_port_ranges": [],
            },
            "azurerm",
        ),
        _resource(
            "azurerm_key_vault",
            "prod",
            {
                "id": f"{SUB}/resourceGroups/security/providers/Microsoft.KeyVault/vaults/kv-prod",
                "name": "kv-prod",
                "public_network_access_enabled": False,
                "purge_protection_enabled": True,
            },
            "azurerm",
        ),
    )
    real = load_state_file(
        DRIFTCTL / "pkg_iac_terraform_state_test_azurerm_network_security_group_terraform.tfstate"
    )
    return [hand, real]


def _azure_events() -> list[ChangeEvent]:
    out: list[ChangeEvent] = []
    for name in ("azure_activity_eventdata.json", "azure_activity_export.json"):
        out.extend(_events(decode_azure_activity(orjson.loads((DATA / name).read_bytes()))))
    return out


def test_azure_activity_against_azurerm_states(catalogue: Catalogue) -> None:
    events = _azure_events()
    results, drifts = _run(_detector(catalogue, _azure_states()), events)
    by_name = {
        e.event_name + ("" if e.event_id.startswith("evt-") else "#export"): results[e.event_id]
        for e in events
    }
    summaries = {k: [_summary(d) for d in v.drifts] for k, v in by_name.items()}
    nsg_rule = "microsoft.network/networksecuritygroups/securityrules/write"
    assert [_summary(d) for d in results["evt-nsg-rule-end"].drifts] == [
        # the real state declares the rule inline in its security group
        ("modified", "azurerm_network_security_group.example", None)
    ]
    assert [_summary(d) for d in results["evt-hub-rule-end"].drifts] == [
        ("modified", "azurerm_network_security_rule.allow_https", "destination_port_range")
    ]
    assert summaries["microsoft.authorization/roleassignments/write:created"] == [
        (
            "unmanaged",
            f"azurerm_role_assignment:{SUB}/providers/Microsoft.Authorization/roleAssignments/"
            "0b6e8a1e-9d3f-4c1e-8e1a-2f3b4c5d6e7f",
            None,
        )
    ]
    assert summaries["microsoft.compute/virtualmachines/delete"] == []
    assert by_name["microsoft.compute/virtualmachines/delete"].skipped == SkipReason.FAILED
    assert summaries["microsoft.resources/subscriptions/resourcegroups/delete#export"] == [
        ("missing", "azurerm_resource_group.example", None)
    ]
    assert summaries["microsoft.storage/storageaccounts/write:created#export"] == [
        (
            "unmanaged",
            f"azurerm_storage_account:{SUB}/resourceGroups/example-resources/providers/"
            "Microsoft.Storage/storageAccounts/exfil0001",
            None,
        )
    ]
    assert summaries["microsoft.keyvault/vaults/write#export"] == [
        ("modified", "azurerm_key_vault.prod", "public_network_access_enabled")
    ]
    assert by_name["microsoft.compute/virtualmachines/read#export"].skipped == SkipReason.READ_ONLY
    assert len(results) == 8 and nsg_rule in by_name
    by = {(d.event_id, d.field): d for d in drifts}
    port = by[("evt-hub-rule-end", "destination_port_range")]
    assert (port.old_value, port.new_value) == ("443", "22")
    assert port.severity == "high" and port.provider == "azure"
    assert port.account_id == "7bfb2c5c-7308-46ed-8ae4-fffa356eb406"
    vault = next(d for d in drifts if d.field == "public_network_access_enabled")
    assert (vault.old_value, vault.new_value) == (False, True)
    assignment = by[("evt-role-assignment", None)]
    assert assignment.severity == "critical" and assignment.actor.user_name == "bob@contoso.example"


def test_azure_apply_principal_is_terraform(catalogue: Catalogue) -> None:
    # The Activity Log has no user agent: Terraform is recognised by its service principal.
    app_id = "aaaaaaaa-1111-2222-3333-444444444444"
    created = [e for e in _azure_events() if e.event_name.endswith("storageaccounts/write:created")]
    assert len(created) == 1
    assert _detector(catalogue, _azure_states()).detect(created[0]).drifts
    found = _detector(catalogue, _azure_states(), apply_principals=[app_id]).detect(created[0])
    assert found.skipped == SkipReason.TERRAFORM


def test_upper_case_export_without_entity_cannot_match(catalogue: Catalogue) -> None:
    # Without properties.entity the export's upper-cased id is all there is; Terraform's
    # ids are case-sensitive, so the delete is not matched (a documented limitation).
    doc = orjson.loads((DATA / "azure_activity_export.json").read_bytes())
    record = copy.deepcopy(doc["records"][0])
    del record["properties"]["entity"]
    [event] = _events(decode_azure_activity(record))
    assert _detector(catalogue, _azure_states()).detect(event).skipped == SkipReason.NOT_IN_STATE


@pytest.mark.parametrize("provider", ["gcp", "azure", "kubernetes"])
def test_every_new_provider_has_events_with_attributes(catalogue: Catalogue, provider: str) -> None:
    rules = [r for r in catalogue.rules.values() if r.provider == provider]
    assert len(rules) >= 50
    assert sum(1 for r in rules if r.attributes) >= 10
    assert {r.change.value for r in rules} == {"create", "modify", "delete"}
