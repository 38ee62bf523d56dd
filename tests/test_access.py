"""Access control in memory: every route x every kind of credential, browser safety, audit."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Route

from monitor.app.config import Config, ConfigError
from monitor.app.daemon import DEMO_DIR
from monitor.auth import Permission, Role
from monitor.auth.keys import PREFIX
from tests.support.asgi import InMemory, in_memory
from web.app import routes

PUBLIC = {"/health", "/livez", "/readyz"}
# A role that lacks each permission (PUBLIC has none).
WRONG_ROLE = {
    Permission.READ: Role.INGEST,
    Permission.SESSION: Role.INGEST,
    Permission.LIFECYCLE: Role.VIEWER,
    Permission.INGEST: Role.ANALYST,
    Permission.ADMIN: Role.ANALYST,
}
RIGHT_ROLE = {
    Permission.READ: Role.VIEWER,
    Permission.SESSION: Role.VIEWER,
    Permission.LIFECYCLE: Role.ANALYST,
    Permission.INGEST: Role.INGEST,
    Permission.ADMIN: Role.ADMIN,
}


def config(tmp_path: Path, **over: Any) -> Config:
    values: dict[str, Any] = {
        "state": [str(DEMO_DIR / "demo.tfstate")],
        "data_dir": str(tmp_path / "data"),
        "state_poll_seconds": 60,
        "auth_failures_per_minute": 100_000,
    }
    values.update(over)
    return Config(**values)


def http_cases() -> list[tuple[str, str, Permission]]:
    """(method, concrete path, permission) for every HTTP route of the app."""
    cases = []
    for route in routes():
        if not isinstance(route, Route):
            continue
        path = route.path.replace("{address:path}", "aws_vpc.x").replace("{id:path}", "x")
        path = path.replace("{id}", "x")
        for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
            cases.append((method, path, route.endpoint.permission))  # type: ignore[attr-defined]
    return cases


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


async def call(srv: InMemory, method: str, path: str, headers: dict[str, str]) -> int:
    body = b"{}" if method in ("POST", "PATCH") else None
    srv.client.cookies.clear()  # a session cookie from an earlier call is not this call's
    resp = await srv.client.request(method, path, content=body, headers=headers)
    return resp.status_code


def test_every_route_declares_its_permission_and_only_probes_are_public() -> None:
    public = set()
    for route in routes():
        permission = getattr(route.endpoint, "permission", None)
        assert isinstance(permission, Permission), f"{route.path} is not behind the role model"
        if permission is Permission.PUBLIC:
            public.add(route.path)
    assert public <= PUBLIC


async def test_every_route_refuses_missing_wrong_revoked_and_expired_keys(
    tmp_path: Path,
) -> None:
    async with in_memory(config(tmp_path)) as srv:
        keys = srv.daemon.access.keys
        by_role = {r: keys.create(f"k-{r.value}", r.value, "test")[0] for r in Role}
        revoked, revoked_key = keys.create("revoked", Role.ADMIN.value, "test")
        srv.daemon.access.revoke(revoked_key.id)
        expired, expired_key = keys.create("expired", Role.ADMIN.value, "test", 1)
        with srv.daemon.access.db.transaction() as db:
            db.execute(
                "UPDATE api_keys SET expires_at = '2000-01-01T00:00:00.000Z' WHERE id = ?",
                (expired_key.id,),
            )
        srv.daemon.access.ring.forget()
        wrong: list[str] = []
        for method, path, permission in http_cases():
            if permission is Permission.PUBLIC:
                status = await call(srv, method, path, {"Authorization": ""})
                if status in (401, 403):
                    wrong.append(f"{method} {path}: public route gave {status}")
                continue
            expected = {
                "no key": ({"Authorization": "", "Content-Type": "application/json"}, {401}),
                "not a key": (bearer("dl_" + "x" * 43), {401}),
                "wrong role": (bearer(by_role[WRONG_ROLE[permission]]), {403}),
                "revoked": (bearer(revoked), {401}),
                "expired": (bearer(expired), {401}),
            }
            for case, (headers, statuses) in expected.items():
                status = await call(srv, method, path, headers)
                if status not in statuses:
                    wrong.append(f"{method} {path} with {case}: {status}")
            if path == "/api/v1/stream":
                continue  # an accepted stream never ends in memory: tests/test_access_live.py
            status = await call(srv, method, path, bearer(by_role[RIGHT_ROLE[permission]]))
            if status in (401, 403, 415):
                wrong.append(f"{method} {path} with the right role: {status}")
        assert not wrong, "\n".join(wrong)


async def test_keys_are_stored_only_as_hashes_and_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    async with in_memory(config(tmp_path)) as srv:
        resp = await srv.client.post(
            "/api/v1/api-keys", json={"name": "ci", "role": "viewer", "expires_in_days": 30}
        )
        assert resp.status_code == 201
        created = resp.json()["data"]
        secret = created["key"]
        assert secret.startswith(PREFIX) and len(secret) >= len(PREFIX) + 43
        assert created["expires_at"] and created["created_by"].startswith("tests")
        audit = (await srv.client.get("/api/v1/audit-log?action=api_key.create")).json()
        entry = audit["data"]["entries"][0]
        assert entry["target"] == created["id"] and entry["details"]["role"] == "viewer"
        assert secret not in str(entry)
        listed = (await srv.client.get("/api/v1/api-keys")).json()["data"]["api_keys"]
        assert all("key" not in k and "hash" not in k for k in listed)
        assert (await srv.client.get("/api/v1/drifts", headers=bearer(secret))).status_code == 200
        await srv.client.get("/api/v1/drifts", headers=bearer(secret + "x"))
    files = [p for p in (tmp_path / "data").iterdir() if p.is_file()]
    assert any(p.name == "auth.db" for p in files)
    for path in files:  # the databases and their WALs
        blob = path.read_bytes()
        assert secret.encode() not in blob, path
        assert srv.key.encode() not in blob, path
    assert secret not in caplog.text and srv.key not in caplog.text


async def test_basic_auth_carries_the_key_as_falco_http_output_sends_it(tmp_path: Path) -> None:
    async with in_memory(config(tmp_path)) as srv:
        ingest, _ = srv.daemon.access.keys.create("falco", "ingest", "test")
        basic = base64.b64encode(f"falco:{ingest}".encode()).decode()
        headers = {"Authorization": f"Basic {basic}", "Content-Type": "application/json"}
        alert = {
            "output": "x",
            "priority": "Warning",
            "rule": "Terminal shell in container",
            "time": "2026-01-01T00:00:00Z",
            "output_fields": {},
            "source": "syscall",
        }
        resp = await srv.client.post("/api/v1/falco/events", json=alert, headers=headers)
        assert resp.status_code == 202
        read = await srv.client.get("/api/v1/drifts", headers=headers)
        assert read.status_code == 403  # an ingest key only ingests


@pytest.mark.parametrize(
    "ctype",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""],
)
async def test_writes_refuse_bodies_a_foreign_page_can_send_without_preflight(
    tmp_path: Path, ctype: str
) -> None:
    async with in_memory(config(tmp_path)) as srv:
        headers = {"Content-Type": ctype, "Origin": "https://evil.example"}
        for path in ("/api/v1/drifts/x/resolve", "/api/v1/ingest/cloudtrail"):
            resp = await srv.client.post(
                path, content=b'{"capture_baseline":true}', headers=headers
            )
            assert resp.status_code == 415, (path, resp.text)
            assert resp.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"


async def test_falco_plain_text_output_is_refused_with_the_setting_to_change(
    tmp_path: Path,
) -> None:
    async with in_memory(config(tmp_path)) as srv:
        text = b"10:00:00.000000000: Warning Shell spawned in a container (user=root)\n"
        resp = await srv.client.post(
            "/api/v1/falco/events", content=text, headers={"Content-Type": "text/plain"}
        )
        assert resp.status_code == 415
        message = resp.json()["error"]["message"]
        assert "json_output: true" in message and "json_include_output_property" in message


async def test_a_foreign_host_header_is_refused(tmp_path: Path) -> None:
    async with in_memory(config(tmp_path)) as srv:
        resp = await srv.client.get("/api/v1/drifts", headers={"Host": "attacker.example"})
        assert resp.status_code == 400 and "allowed_hosts" in resp.json()["error"]["message"]
        assert (
            await srv.client.get("/health", headers={"Host": "127.0.0.1:8080"})
        ).status_code == 200
    async with in_memory(config(tmp_path, allowed_hosts=["drift.corp.example"])) as srv:
        ok = await srv.client.get("/api/v1/drifts", headers={"Host": "drift.corp.example:443"})
        assert ok.status_code == 200


async def test_an_ip_address_as_host_is_served_as_probes_and_scrapers_send_it(
    tmp_path: Path,
) -> None:
    async with in_memory(config(tmp_path, allowed_hosts=["drift.corp.example"])) as srv:
        for host in ("10.42.0.17:8080", "[fd00::17]:8080", "10.42.0.17"):
            resp = await srv.client.get("/metrics", headers={"Host": host})
            assert resp.status_code == 200, host
        named = await srv.client.get("/metrics", headers={"Host": "10.42.0.17.nip.io"})
        assert named.status_code == 400


async def test_security_headers_on_every_answer(tmp_path: Path) -> None:
    async with in_memory(config(tmp_path)) as srv:
        for resp in (
            await srv.client.get("/api/v1/drifts"),
            await srv.client.get("/api/v1/drifts", headers={"Authorization": ""}),
            await srv.client.get("/nothing"),
        ):
            assert resp.headers["x-content-type-options"] == "nosniff"
            assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
            assert resp.headers["x-frame-options"] == "DENY"


async def test_repeated_bad_keys_get_429_with_retry_after(tmp_path: Path) -> None:
    async with in_memory(config(tmp_path, auth_failures_per_minute=5)) as srv:
        statuses = [
            (await srv.client.get("/api/v1/drifts", headers=bearer(f"dl_{n:043d}"))).status_code
            for n in range(7)
        ]
        assert statuses[:5] == [401] * 5 and statuses[-1] == 429
        blocked = await srv.client.get("/api/v1/drifts")  # even a good key, from this client
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
        assert (await srv.client.get("/health")).status_code == 200  # probes stay open


async def test_cookie_session_needs_its_csrf_token_for_writes(tmp_path: Path) -> None:
    async with in_memory(config(tmp_path)) as srv:
        analyst, _ = srv.daemon.access.keys.create("web", "analyst", "test")
        resp = await srv.client.post("/api/v1/auth/session", headers=bearer(analyst))
        assert resp.status_code == 201
        cookie = resp.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
        csrf = resp.json()["data"]["csrf_token"]
        assert analyst not in cookie and analyst not in resp.text
        token = cookie.split(";", 1)[0].split("=", 1)[1]
        jar = {"Cookie": f"driftline_session={token}", "Authorization": ""}
        assert (await srv.client.get("/api/v1/drifts", headers=jar)).status_code == 200
        write = {**jar, "Content-Type": "application/json"}
        body = b'{"status": "investigating"}'
        refused = await srv.client.patch("/api/v1/drifts/x", content=body, headers=write)
        assert refused.status_code == 403 and "CSRF" in refused.json()["error"]["message"]
        allowed = await srv.client.patch(
            "/api/v1/drifts/x", content=body, headers={**write, "X-CSRF-Token": csrf}
        )
        assert allowed.status_code == 404  # past the checks: there is no drift x
        await srv.client.delete(f"/api/v1/api-keys/{(await _whoami(srv, analyst))['key_id']}")
        ended = await srv.client.get("/api/v1/drifts", headers=jar)
        assert ended.status_code == 401  # revoking the key ends its sessions


async def a_stored_drift(srv: InMemory) -> str:
    """Replay the demo's changes until one drifts; its id."""
    for line in (DEMO_DIR / "stream.jsonl").read_bytes().splitlines():
        resp = await srv.client.post("/api/v1/ingest/cloudtrail", content=line)
        ids = resp.json()["data"].get("drift_ids") or []
        if ids:
            return str(ids[0])
    raise AssertionError("the demo stream holds no drift")


async def _whoami(srv: InMemory, key: str) -> dict[str, Any]:
    resp = await srv.client.get("/api/v1/auth/whoami", headers=bearer(key))
    data: dict[str, Any] = resp.json()["data"]
    return data


async def test_tickets_are_single_use_and_only_for_streams(tmp_path: Path) -> None:
    async with in_memory(config(tmp_path)) as srv:
        ticket = (await srv.client.post("/api/v1/auth/ticket")).json()["data"]["ticket"]
        plain = await srv.client.get(
            f"/api/v1/drifts?ticket={ticket}", headers={"Authorization": ""}
        )
        assert plain.status_code == 401  # not a streaming route: the ticket is not looked at


async def test_lifecycle_changes_record_their_actor_and_are_audited(tmp_path: Path) -> None:
    async with in_memory(config(tmp_path)) as srv:
        drift_id = await a_stored_drift(srv)
        analyst, key = srv.daemon.access.keys.create("alice", "analyst", "test")
        resp = await srv.client.post(
            f"/api/v1/drifts/{drift_id}/resolve", json={"note": "reverted"}, headers=bearer(analyst)
        )
        assert resp.status_code == 200
        detail = (await srv.client.get(f"/api/v1/drifts/{drift_id}")).json()["data"]
        assert detail["history"][-1]["actor"] == f"alice ({key.id})"
        log = (await srv.client.get("/api/v1/audit-log?action=drift.resolve")).json()["data"]
        [entry] = log["entries"]
        assert entry["actor"] == {"key_id": key.id, "name": "alice"}
        assert entry["target"] == drift_id and entry["details"]["http_status"] == 200
        ingests = (await srv.client.get("/api/v1/audit-log?action=ingest.cloudtrail")).json()
        assert ingests["data"]["entries"][0]["details"]["accepted"] >= 1
        verify = (await srv.client.get("/api/v1/audit-log/verify")).json()["data"]
        assert verify["status"] == "ok" and verify["head_seq"] == verify["checked"] >= 3


async def test_tampering_with_the_audit_log_is_detected(tmp_path: Path) -> None:
    async with in_memory(config(tmp_path)) as srv:
        for n in range(6):
            await srv.client.post("/api/v1/api-keys", json={"name": f"k{n}", "role": "viewer"})
        head = (await srv.client.get("/api/v1/audit-log/verify")).json()["data"]
        assert head["status"] == "ok"
    db = sqlite3.connect(tmp_path / "data" / "auth.db")
    [original] = db.execute("SELECT details FROM audit_log WHERE seq = 3").fetchone()
    db.execute('UPDATE audit_log SET details = \'{"name":"nobody"}\' WHERE seq = 3')
    db.commit()
    async with in_memory(config(tmp_path)) as srv:
        broken = (await srv.client.get("/api/v1/audit-log/verify")).json()["data"]
        assert broken["status"] == "broken" and broken["first_bad_seq"] == 3
    db.execute("UPDATE audit_log SET details = ? WHERE seq = 3", (original,))
    db.execute("DELETE FROM audit_log WHERE seq >= ?", (head["head_seq"] - 1,))
    db.commit()
    async with in_memory(config(tmp_path)) as srv:
        url = f"/api/v1/audit-log/verify?expected_min_seq={head['head_seq']}"
        short = (await srv.client.get(url)).json()["data"]
        assert short["status"] == "broken" and short["first_bad_seq"] == head["head_seq"] - 1


def test_no_auth_is_refused_off_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        config(tmp_path, auth=False, host="0.0.0.0").validate()
    assert config(tmp_path, auth=False, host="127.0.0.1").validate().auth is False


async def test_first_start_creates_one_admin_key(tmp_path: Path) -> None:
    async with in_memory(config(tmp_path)) as srv:
        # the test's own admin key exists already: nothing to create
        assert srv.daemon.access.bootstrap() is None
    from monitor.auth.service import Access
    from monitor.clock import utc_now

    fresh = Access.open(tmp_path / "fresh", utc_now)
    created = fresh.bootstrap()
    assert created is not None and created[1].role == "admin"
    assert fresh.bootstrap() is None
    assert fresh.audit.verify().status == "ok"


async def test_a_memory_store_daemon_stops(tmp_path: Path) -> None:
    # One in-memory database serves reads and writes under one lock: closing takes it once.
    async with in_memory(config(tmp_path, store="memory")) as srv:
        assert (await srv.client.get("/api/v1/auth/whoami")).status_code == 200
