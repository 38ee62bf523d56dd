"""deploy/helm/driftline rendered with Helm's own engine (helm-python-sdk, Helm in a wheel: no
download at run time) and every manifest validated against the Kubernetes schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helm_python import chart as helm

from monitor.app.config import load_config
from tests.support.records import DEMO_STATE

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "driftline"
KEY = "dl_" + "A" * 43
EVERYTHING = {
    "adminKey": {"value": KEY},
    "ingress": {"enabled": True, "hosts": ["drift.example.com"], "className": "nginx"},
    "serviceMonitor": {"enabled": True},
    "stateVolume": {"configMap": {"name": "terraform-states"}},
    "config": {
        "log_format": "json",
        "kafka_bootstrap": "kafka:9092",
        "kafka_topics": ["cloudtrail"],
    },
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    rendered = helm.Chart.load(CHART).render(values=values, name="prod", namespace="ops")
    docs = [d for text in rendered.values() for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind)


@pytest.mark.parametrize("values", [{}, EVERYTHING], ids=["defaults", "everything-on"])
def test_every_rendered_manifest_is_valid_kubernetes(values: dict[str, Any]):
    docs = render(values)
    kinds = {d["kind"] for d in docs}
    assert {"StatefulSet", "Service", "ConfigMap"} <= kinds
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD of the Prometheus Operator: not in the Kubernetes schemas
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    if values:
        assert {"Secret", "Ingress", "ServiceMonitor"} <= kinds


def test_the_lint_finds_no_error():
    report = helm.lint(CHART, EVERYTHING, strict=True)
    assert not report.get("errors"), report
    assert not [m for m in report.get("messages") or [] if m["severity"] >= 2], report


def test_the_pod_is_unprivileged_probed_and_keeps_its_store_on_a_volume():
    docs = render(EVERYTHING)
    sts = by_kind(docs, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["limits"]["memory"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "/data" in mounts and mounts["/state"]["readOnly"]
    assert sts["spec"]["replicas"] == 1  # SQLite: one writer
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    secret = by_kind(docs, "Secret")
    assert secret["stringData"]["admin-key"] == KEY
    assert KEY not in yaml.safe_dump(by_kind(docs, "ConfigMap"))


def test_the_configmap_is_a_config_driftline_accepts(tmp_path: Path):
    config_map = by_kind(render(EVERYTHING), "ConfigMap")
    settings = yaml.safe_load(config_map["data"]["driftline.yaml"])
    assert settings["host"] == "0.0.0.0" and settings["data_dir"] == "/data"
    assert "drift.example.com" in settings["allowed_hosts"]
    assert settings["kafka_bootstrap"] == "kafka:9092"
    key_file = tmp_path / "admin-key"
    key_file.write_text(KEY)
    # The paths the pod mounts, pointed at this machine's files.
    settings.update(
        state=[str(ROOT / DEMO_STATE)], data_dir=str(tmp_path), admin_key_file=str(key_file)
    )
    path = tmp_path / "driftline.yaml"
    path.write_text(yaml.safe_dump(settings))
    config = load_config(str(path), {}, {})
    assert config.log_format == "json" and config.port == 8080
