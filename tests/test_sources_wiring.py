"""Configured sources run inside `driftline serve`: alerts reach the API and /health."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import orjson
import pytest

from monitor.app.config import Config, ConfigError
from monitor.app.daemon import Daemon
from rules import load_catalogue
from tests.support.falco_grpc import FakeFalco, Servers, to_response
from tests.support.kafka_broker import (
    create_topic,
    kafka_broker,
    produce,
    unavailable_reason,
    unique,
)
from tests.support.live import SSEReader, running
from tests.support.realdata import CLOUDTRAIL, K8S, cloudtrail_records, falco_alerts
from tests.support.records import resize
from tests.support.replay_state import replay_state

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
ROOT = Path(__file__).resolve().parents[1]


async def test_falco_grpc_alerts_reach_sse_and_health(tmp_path: Path) -> None:
    servers = Servers()
    falco = FakeFalco()
    sock = f"unix://{tmp_path}/falco.sock"
    server, _ = await servers.start(sock, falco)
    config = Config(
        state=[str(ROOT / "monitor/app/demo/demo.tfstate")],
        data_dir=str(tmp_path),
        falco_grpc_target=sock,
        state_poll_seconds=60,
    )
    alerts = [alert for _, alert in falco_alerts() if alert.get("source") == "syscall"][:3]
    try:
        async with (
            running(config) as srv,
            srv.client.stream("GET", "/api/v1/stream?topics=events") as sse,
        ):
            reader = SSEReader(sse)
            await reader.until("connected")
            falco.feed(to_response(a)[0] for a in alerts)
            got = [(await asyncio.wait_for(reader.until("falco"), 20))[2]["rule"] for _ in alerts]
            assert got == [a["rule"] for a in alerts]
            health = (await srv.client.get("/api/v1/health")).json()["data"]
            status = health["components"]["sources"]["falco_grpc"]
            assert status["connected"] is True and status["target"] == sock
    finally:
        await servers.stop(server)


def test_bad_source_settings_are_config_errors(tmp_path: Path) -> None:
    base = {"state": [str(ROOT / "monitor/app/demo/demo.tfstate")], "data_dir": str(tmp_path)}
    with pytest.raises(ConfigError, match="falco_grpc_target"):
        Daemon(Config(**base, falco_grpc_target="falco.example:5060").validate())
    with pytest.raises(ConfigError, match="go together"):
        Daemon(
            Config(
                **base,
                falco_grpc_target="unix:///x.sock",
                falco_grpc_ca=str(ROOT / "pyproject.toml"),
            ).validate()
        )


async def test_trail_dir_feeds_detection_and_restart_rereads_nothing(tmp_path: Path) -> None:
    state = tmp_path / "replayed.tfstate"
    state.write_text(
        json.dumps(replay_state(cloudtrail_records("invictus_aws_dataset"), load_catalogue()))
    )
    logs = tmp_path / "AWSLogs/218007301253/CloudTrail/us-east-1/2023/07/10"
    logs.mkdir(parents=True)
    for path in sorted((CLOUDTRAIL / "invictus_aws_dataset").iterdir()):
        shutil.copy(path, logs / path.name)
    config = Config(
        state=[str(state)],
        data_dir=str(tmp_path / "data"),
        trail_dir=str(tmp_path / "AWSLogs"),
        trail_poll_seconds=0.05,
        state_poll_seconds=60,
    )
    golden = len((ROOT / "tests/golden/invictus_drifts.jsonl").read_text().splitlines())
    async with running(config) as srv:
        source = srv.daemon.sources["trail_dir"]
        deadline = time.monotonic() + 60
        while (done := source.status()["files_done"]) < 55:
            assert time.monotonic() < deadline, f"{done} of 55 files done after 60 s"
            await asyncio.wait_for(source.next_poll(), 30)
        health = (await srv.client.get("/api/v1/health")).json()["data"]
        assert health["components"]["sources"]["trail_dir"]["files_done"] == 55
        drifts = (await srv.client.get("/api/v1/drifts?limit=1")).json()["data"]["total"]
        events = (await srv.client.get("/api/v1/events?limit=1")).json()["data"]["total"]
        # Repeats of an open drift are merged (flood control), so at most the golden count.
        assert 0 < drifts <= golden
    async with running(config) as srv:
        source = srv.daemon.sources["trail_dir"]
        for _ in range(3):  # three full polls after the restart: nothing may be re-read
            await asyncio.wait_for(source.next_poll(), 30)
        assert source.status()["files_done"] == 0
        again = (await srv.client.get("/api/v1/events?limit=1")).json()["data"]["total"]
        assert again == events


async def test_audit_ingest_endpoints(tmp_path: Path) -> None:
    config = Config(
        state=[str(ROOT / "monitor/app/demo/demo.tfstate")],
        data_dir=str(tmp_path),
        state_poll_seconds=60,
        k8s_cluster="minikube",
    )
    async with running(config) as srv:
        body = (K8S / "falco_trace_files" / "create_clusterrole.json").read_bytes()
        r = await srv.client.post("/api/v1/ingest/k8s-audit", content=body)
        data = r.json()["data"]
        assert r.status_code == 202 and data["accepted"] >= 1 and data["drifts"] >= 1
        drifts = (await srv.client.get("/api/v1/drifts?provider=kubernetes")).json()["data"]
        assert drifts["total"] == data["drifts"]
        drift = drifts["drifts"][0]
        assert drift["kind"] == "unmanaged" and drift["account_id"] == "minikube"
        assert drift["resource_type"].startswith("kubernetes_")
        for path, folder in (
            ("/api/v1/ingest/gcp-audit", "gcp"),
            ("/api/v1/ingest/azure-activity", "azure"),
        ):
            fixtures = sorted((ROOT / "tests" / "data").glob(f"{folder}*"))
            assert fixtures, folder
            r = await srv.client.post(path, content=fixtures[0].read_bytes())
            assert r.status_code == 202 and r.json()["data"]["accepted"] >= 1, path
            bad = await srv.client.post(path, content=b'{"unrelated": true}')
            # Nothing accepted is a 422 that still says what was rejected and why.
            assert bad.status_code == 422 and bad.json()["data"]["rejected"] == 1


async def test_kafka_topic_feeds_drifts_and_poison_goes_to_dead_letters(tmp_path: Path) -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    async with kafka_broker(tmp_path) as broker:
        topic = unique("ct")
        await create_topic(broker.bootstrap, topic, 2)
        records = [orjson.dumps(resize(f"k-{n}", f"t3.k{n}")) for n in range(6)]
        await produce(broker.bootstrap, topic, [*records[:3], b"{poison", *records[3:]])
        config = Config(
            state=[str(ROOT / "monitor/app/demo/demo.tfstate")],
            data_dir=str(tmp_path / "data"),
            kafka_bootstrap=broker.bootstrap,
            kafka_topics=[f"cloudtrail:{topic}"],
            kafka_group=unique("g"),
            state_poll_seconds=60,
        )
        async with (
            running(config) as srv,
            srv.client.stream("GET", "/api/v1/stream?topics=drifts") as sse,
        ):
            reader = SSEReader(sse)
            await reader.until("connected")
            got = set()
            deadline = time.monotonic() + 60
            while len(got) < 6:
                assert time.monotonic() < deadline, f"{len(got)} of 6 drifts pushed after 60 s"
                _, _, drift = await asyncio.wait_for(reader.until("drift"), 30)
                got.add(drift["event_id"])
            assert got == {f"k-{n}" for n in range(6)}
            letters = (await srv.client.get("/api/v1/dead-letters")).json()["data"]
            assert letters["total"] == 1
            assert letters["dead_letters"][0]["topic"] == topic
            assert letters["dead_letters"][0]["value_preview"] == "{poison"
            health = (await srv.client.get("/api/v1/health")).json()["data"]
            kafka = health["components"]["sources"]["kafka"]
            assert kafka["dead_lettered"] == 1
            stats = (await srv.client.get("/api/v1/stats")).json()["data"]
            assert "kafka" in stats["sources"]
