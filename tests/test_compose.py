"""compose.yaml cannot run here (no Docker); check what can be checked without it: the
services and their wiring, and that the Driftline command line it runs is valid."""

from __future__ import annotations

from pathlib import Path

import yaml

from monitor.app.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def test_compose_services_and_wiring() -> None:
    doc = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = doc["services"]
    assert {"kafka", "kafka-topics", "driftline", "falco", "falco-plugins"} <= set(services)
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for mount in services["falco"]["volumes"]:
        source = mount.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).exists(), source
    falco_conf = yaml.safe_load((ROOT / "rules/falco/falco.yaml").read_text())
    assert falco_conf["http_output"]["url"].endswith("/api/v1/falco/events")
    assert {p["name"] for p in falco_conf["plugins"]} == {"cloudtrail", "json"}


def test_driftline_runs_the_built_image_with_its_key_from_a_secret() -> None:
    doc = yaml.safe_load((ROOT / "compose.yaml").read_text())
    service = doc["services"]["driftline"]
    assert service["build"] == "." and "pip" not in str(service)  # nothing installed at start
    args = build_parser().parse_args(service["command"])
    assert args.command == "serve"
    assert args.kafka_topic == ["cloudtrail:cloudtrail", "k8s_audit:k8s-audit"]
    assert args.kafka_bootstrap == "kafka:9092" and args.state == ["/state"]
    assert args.admin_key_file == "/run/secrets/driftline_admin_key"
    assert service["secrets"] == ["driftline_admin_key"] and "driftline_admin_key" in doc["secrets"]
    assert service["read_only"] is True and "driftline-data:/data" in service["volumes"]


def test_aws_credentials_reach_the_cloudtrail_plugin_and_falco_has_a_key() -> None:
    falco = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["falco"]
    env = falco["environment"]
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        assert name in env, name
    assert any(v.endswith(":/root/.aws:ro") for v in falco["volumes"])
    url = next(a for a in falco["command"] if a.startswith("http_output.url="))
    assert "${DRIFTLINE_FALCO_KEY" in url and url.endswith("@driftline:8080/api/v1/falco/events")
