"""compose.yaml cannot run here (no Docker); check what can be checked without it: the
services and their wiring, and that the Driftline command line it runs is valid."""

from __future__ import annotations

import shlex
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


def test_driftline_command_in_compose_parses() -> None:
    doc = yaml.safe_load((ROOT / "compose.yaml").read_text())
    script = doc["services"]["driftline"]["command"][-1]
    command = script.split("exec ", 1)[1]
    argv = shlex.split(command)
    assert argv[0] == "driftline"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve"
    assert args.kafka_topic == ["cloudtrail:cloudtrail", "k8s_audit:k8s-audit"]
    assert args.kafka_bootstrap == "kafka:9092" and args.host == "0.0.0.0"
