"""Access control on a real server: WebSocket handshakes and SSE with every kind of
credential, foreign origins, tickets, and `driftline serve` / `driftline keys` as run."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from monitor.app.config import Config
from monitor.app.daemon import DEMO_DIR
from tests.support.live import Running, running
from tests.support.serve_process import cli, create_key, serve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def config(tmp_path: Path) -> Config:
    return Config(
        state=[str(DEMO_DIR / "demo.tfstate")],
        data_dir=str(tmp_path / "data"),
        state_poll_seconds=60,
        auth_failures_per_minute=100_000,
    )


async def handshake(srv: Running, url: str, headers: dict[str, str]) -> int:
    """101 when the WebSocket opened (and said welcome), else the HTTP status of the refusal."""
    try:
        async with connect(url, additional_headers=headers, open_timeout=10) as ws:
            welcome = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            assert welcome["type"] == "welcome"
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


async def sse_status(srv: Running, url: str, headers: dict[str, str]) -> int:
    async with (
        httpx.AsyncClient(base_url=srv.base, timeout=10) as client,
        client.stream("GET", url, headers=headers) as resp,
    ):
        return resp.status_code


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_websocket_and_sse_refuse_every_bad_credential(tmp_path: Path) -> None:
    async with running(config(tmp_path)) as srv:
        keys = srv.daemon.access.keys
        viewer, _ = keys.create("viewer", "viewer", "test")
        ingest, _ = keys.create("ingest", "ingest", "test")
        revoked, rk = keys.create("revoked", "viewer", "test")
        srv.daemon.access.revoke(rk.id)
        expired, ek = keys.create("expired", "viewer", "test", 1)
        with srv.daemon.access.db.transaction() as db:
            db.execute(
                "UPDATE api_keys SET expires_at = '2000-01-01T00:00:00.000Z' WHERE id = ?", (ek.id,)
            )
        srv.daemon.access.ring.forget()
        cases: dict[str, tuple[dict[str, str], int]] = {
            "no key": ({}, 401),
            "wrong role": (bearer(ingest), 403),
            "revoked": (bearer(revoked), 401),
            "expired": (bearer(expired), 401),
            "right role": (bearer(viewer), 101),
        }
        got: dict[str, Any] = {}
        for case, (headers, want) in cases.items():
            got[case] = (
                await handshake(srv, srv.ws, headers),
                await sse_status(srv, "/api/v1/stream", headers),
            )
            assert got[case] == (want, 200 if want == 101 else want), (case, got[case])


async def test_a_foreign_origin_cannot_open_the_websocket(tmp_path: Path) -> None:
    async with running(config(tmp_path)) as srv:
        evil = {**srv.auth, "Origin": "https://evil.example"}
        assert await handshake(srv, srv.ws, evil) == 403
        dev = {**srv.auth, "Origin": "http://localhost:5173"}  # a configured CORS origin
        assert await handshake(srv, srv.ws, dev) == 101
        own = {**srv.auth, "Origin": f"http://127.0.0.1:{srv.port}"}
        assert await handshake(srv, srv.ws, own) == 101


async def test_tickets_open_one_stream_each_within_a_minute(tmp_path: Path) -> None:
    async with running(config(tmp_path)) as srv:

        async def ticket() -> str:
            resp = await srv.client.post("/api/v1/auth/ticket")
            assert resp.status_code == 201 and resp.json()["data"]["expires_in"] == 60
            return str(resp.json()["data"]["ticket"])

        t = await ticket()
        assert await handshake(srv, f"{srv.ws}?ticket={t}", {}) == 101
        assert await handshake(srv, f"{srv.ws}?ticket={t}", {}) == 401
        t = await ticket()
        assert await sse_status(srv, f"/api/v1/stream?ticket={t}", {}) == 200
        assert await sse_status(srv, f"/api/v1/stream?ticket={t}", {}) == 401


async def test_serve_creates_one_admin_key_on_first_start_and_keys_cli_manages_them(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    async with serve(data) as (_, base, key):
        assert key is not None and key.startswith("dl_")
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            assert (await client.get("/api/v1/drifts")).status_code == 401
            assert (await client.get("/api/v1/drifts", headers=bearer(key))).status_code == 200
            viewer = create_key(data, "viewer", "dashboards")  # while the server runs
            assert (await client.get("/api/v1/drifts", headers=bearer(viewer))).status_code == 200
            listed = cli("keys", "list", "--data-dir", str(data), "--json")
            ids = {k["name"]: k["id"] for k in orjson.loads(listed.stdout)}
            assert set(ids) == {"bootstrap-admin", "dashboards"}
            assert key not in listed.stdout and viewer not in listed.stdout
            revoked = cli("keys", "revoke", "--data-dir", str(data), ids["dashboards"])
            assert revoked.returncode == 0

            async def refused() -> bool:
                r = await client.get("/api/v1/drifts", headers=bearer(viewer))
                return r.status_code == 401

            for _ in range(100):  # another process's revocation lands within the 2 s cache
                if await refused():
                    break
                await asyncio.sleep(0.1)
            assert await refused()
    async with serve(data) as (_, _, again):
        assert again is None  # keys exist: nothing printed
    created = cli(
        "keys", "create", "--data-dir", str(data), "--name", "x", "--role", "analyst", "--json"
    )
    fields = orjson.loads(created.stdout)
    assert fields["key"].startswith("dl_") and fields["role"] == "analyst"
    verify = cli("audit", "verify", "--data-dir", str(data))
    assert verify.returncode == 0 and orjson.loads(verify.stdout)["status"] == "ok"
    bad = cli("keys", "create", "--data-dir", str(data), "--name", "x", "--role", "root")
    assert bad.returncode == 2 and bad.stdout == ""


def test_audit_verify_exits_1_when_the_chain_is_broken(tmp_path: Path) -> None:
    import sqlite3

    data = tmp_path / "data"
    for n in range(3):
        create_key(data, "viewer", f"k{n}")
    assert cli("audit", "verify", "--data-dir", str(data)).returncode == 0
    db = sqlite3.connect(data / "auth.db")
    db.execute("UPDATE audit_log SET target = 'key_forged' WHERE seq = 2")
    db.commit()
    done = cli("audit", "verify", "--data-dir", str(data))
    assert done.returncode == 1 and orjson.loads(done.stdout)["first_bad_seq"] == 2
    assert (
        cli("audit", "verify", "--data-dir", str(data), "--expected-min-seq", "9").returncode == 1
    )


def test_no_auth_off_loopback_is_refused_at_start(tmp_path: Path) -> None:
    done = cli(
        "serve", "--demo", "--no-auth", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "d")
    )
    assert done.returncode == 2 and "loopback" in done.stderr
