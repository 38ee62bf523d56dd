"""Configured sources run inside `driftline serve`: alerts reach the API and /health."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from monitor.config import Config, ConfigError
from monitor.daemon import Daemon
from tests.support.live import SSEReader, running
from tests.support.realdata import falco_alerts
from tests.test_falco_grpc import FakeFalco, Servers, to_response

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[1]


async def test_falco_grpc_alerts_reach_sse_and_health(tmp_path: Path) -> None:
    servers = Servers()
    falco = FakeFalco()
    sock = f"unix://{tmp_path}/falco.sock"
    server, _ = await servers.start(sock, falco)
    config = Config(
        state=[str(ROOT / "monitor/demo/demo.tfstate")],
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
            health = (await srv.client.get("/health")).json()["data"]
            status = health["components"]["sources"]["falco_grpc"]
            assert status["connected"] is True and status["target"] == sock
    finally:
        await servers.stop(server)


def test_bad_source_settings_are_config_errors(tmp_path: Path) -> None:
    base = {"state": [str(ROOT / "monitor/demo/demo.tfstate")], "data_dir": str(tmp_path)}
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
