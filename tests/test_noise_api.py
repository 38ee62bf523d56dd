"""Noise control over the API, in memory: suppressions stored but never published, rules
changed for the next event and kept across a restart, `.driftignore` reloads, roles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from monitor.app.config import Config
from tests.support.asgi import in_memory
from tests.support.records import DEMO_STATE, resize

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[1]
WEB = {"resource_address": "aws_instance.web", "field": "instance_type"}


def _config(tmp_path: Path, **over: Any) -> Config:
    return Config(
        state=[str(ROOT / DEMO_STATE)],
        data_dir=str(tmp_path / "data"),
        state_poll_seconds=60,
        prune_interval_seconds=3600,
        **over,
    )


async def _ingest(client: httpx.AsyncClient, event_id: str, size: str = "t3.2xlarge") -> Any:
    resp = await client.post(
        "/api/v1/ingest/cloudtrail", content=orjson.dumps(resize(event_id, size))
    )
    assert resp.status_code == 202, resp.text
    return resp.json()["data"]


async def _create(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Any:
    resp = await client.post(path, content=orjson.dumps(body))
    assert resp.status_code == 201, resp.text
    return resp.json()["data"]


async def test_a_suppressed_drift_is_stored_and_queryable_but_never_published(
    tmp_path: Path,
) -> None:
    async with in_memory(_config(tmp_path)) as srv:
        c = srv.client
        sup = await _create(
            c,
            "/api/v1/suppressions",
            {"match": {**WEB, "actor": "alice@*"}, "reason": "resize test", "expires_at": None},
        )
        assert sup["id"].startswith("sup-") and sup["active"] is True
        assert sup["created_by"].startswith("tests (") and sup["created_at"]
        live = srv.daemon.hub.subscribe(["drifts"])
        data = await _ingest(c, "e-1")
        assert data["drifts"] == 0 and data["suppressed"] == 1
        assert not live.queue  # nothing delivered to subscribers
        kept = srv.daemon.store.messages_since(0, ["drifts"], 100)
        assert kept == []
        reported = (await c.get("/api/v1/drifts")).json()["data"]
        assert reported["total"] == 0
        held = (await c.get("/api/v1/drifts?suppressed=true")).json()["data"]
        assert held["total"] == 1
        [drift] = held["drifts"]
        assert drift["suppressed_by"] == sup["id"] and drift["new_value"] == "t3.2xlarge"
        assert (await _ingest(c, "e-1"))["suppressed"] == 0  # redelivered: nothing new
        bad = await c.get("/api/v1/drifts?suppressed=true&severity=high")
        assert bad.status_code == 400


async def test_suppressions_patch_expire_delete_and_are_audited(tmp_path: Path) -> None:
    async with in_memory(_config(tmp_path)) as srv:
        c = srv.client
        sup = await _create(c, "/api/v1/suppressions", {"match": WEB, "reason": "known"})
        assert (await _ingest(c, "e-1"))["suppressed"] == 1
        patched = await c.patch(
            f"/api/v1/suppressions/{sup['id']}",
            content=orjson.dumps({"expires_at": "2001-01-01T00:00:00+02:00"}),
        )
        view = patched.json()["data"]
        assert view["expires_at"] == "2000-12-31T22:00:00.000Z" and view["active"] is False
        assert (await _ingest(c, "e-2", "t3.large"))["drifts"] == 1  # expired: reported
        listed = (await c.get("/api/v1/suppressions")).json()["data"]["suppressions"]
        assert [s["id"] for s in listed] == [sup["id"]]
        gone = await c.delete(f"/api/v1/suppressions/{sup['id']}")
        assert gone.status_code == 200
        assert (await c.delete(f"/api/v1/suppressions/{sup['id']}")).status_code == 404
        assert (await c.get("/api/v1/suppressions")).json()["data"]["suppressions"] == []
        for action in ("suppression.create", "suppression.update", "suppression.delete"):
            log = (await c.get(f"/api/v1/audit-log?action={action}")).json()["data"]
            assert log["entries"], action
        # Newest first: the refused second delete is audited too.
        assert [e["details"]["http_status"] for e in log["entries"]] == [404, 200]


@pytest.mark.parametrize(
    "body",
    [
        {"match": {}, "reason": "x"},
        {"match": {"colour": "red"}, "reason": "x"},
        {"match": WEB},
        {"match": WEB, "reason": "x", "expires_at": "tomorrow"},
        {"match": WEB, "reason": "x", "expires_at": "2030-01-01T00:00:00"},
        {"match": WEB, "reason": "x", "owner": "me"},
    ],
)
async def test_bad_suppressions_are_refused(tmp_path: Path, body: dict[str, Any]) -> None:
    async with in_memory(_config(tmp_path, store="memory")) as srv:
        resp = await srv.client.post("/api/v1/suppressions", content=orjson.dumps(body))
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_rule_changes_apply_to_the_next_event_and_survive_a_restart(tmp_path: Path) -> None:
    config = _config(tmp_path)
    async with in_memory(config) as srv:
        c = srv.client
        assert (await _ingest(c, "e-1"))["drifts"] == 1
        rule = await _create(
            c,
            "/api/v1/custom-rules",
            {
                "match": {"event_name": "ModifyInstanceAttribute", "field": "instance_type"},
                "severity": "critical",
                "category": "compute",
            },
        )
        [new] = (await _ingest(c, "e-2", "t3.large"))["drift_ids"]
        assert (await c.get(f"/api/v1/drifts/{new}")).json()["data"]["severity"] == "critical"
        principal = await _create(
            c, "/api/v1/apply-principals", {"principal": "arn:aws:iam::123456789012:role/CI"}
        )
        assert principal["source"] == "api"
    async with in_memory(config) as srv:
        c = srv.client
        [rules] = (await c.get("/api/v1/custom-rules")).json()["data"].values()
        assert [r["id"] for r in rules] == [rule["id"]]
        [again] = (await _ingest(c, "e-3", "t3.small"))["drift_ids"]
        assert (await c.get(f"/api/v1/drifts/{again}")).json()["data"]["severity"] == "critical"
        off = await _create(
            c,
            "/api/v1/disabled-rules",
            {"match": {"event_name": "ModifyInstanceAttribute"}, "reason": "noisy"},
        )
        assert (await _ingest(c, "e-4", "t3.medium"))["drifts"] == 0
        catalogue = (await c.get("/api/v1/rules?event=ModifyInstanceAttribute")).json()["data"]
        [entry] = catalogue["rules"]
        assert entry["disabled"] is True and entry["disabled_by"] == off["id"]
        assert entry["service"] == "ec2.amazonaws.com" and "aws_instance" in entry["types"]
    async with in_memory(config) as srv:
        c = srv.client
        assert (await _ingest(c, "e-5", "t3.nano"))["drifts"] == 0  # still disabled
        assert (await c.delete(f"/api/v1/disabled-rules/{off['id']}")).status_code == 200
        assert (await _ingest(c, "e-6", "t3.xlarge"))["drifts"] == 1
        listed = (await c.get("/api/v1/apply-principals")).json()["data"]["apply_principals"]
        assert [p["principal"] for p in listed] == ["arn:aws:iam::123456789012:role/CI"]


async def test_apply_principals_at_runtime(tmp_path: Path) -> None:
    admin_role = "arn:aws:iam::123456789012:role/Admin"
    config = _config(tmp_path, store="memory", apply_principals=["ci-user"])
    async with in_memory(config) as srv:
        c = srv.client
        await _create(c, "/api/v1/apply-principals", {"principal": admin_role})
        data = await _ingest(c, "e-1")
        assert data["drifts"] == 0
        dup = await c.post(
            "/api/v1/apply-principals", content=orjson.dumps({"principal": "ci-user"})
        )
        assert dup.status_code == 409
        fixed = await c.request(
            "DELETE", "/api/v1/apply-principals", content=orjson.dumps({"principal": "ci-user"})
        )
        assert fixed.status_code == 409  # set in the configuration
        gone = await c.request(
            "DELETE", "/api/v1/apply-principals", content=orjson.dumps({"principal": admin_role})
        )
        assert gone.status_code == 200
        assert (await _ingest(c, "e-2", "t3.large"))["drifts"] == 1


async def test_driftignore_in_serve_reloads_on_change(tmp_path: Path) -> None:
    ignore = tmp_path / ".driftignore"
    ignore.write_text("# the web instance's size is managed by hand\naws_instance.i-0d3m0web*\n")
    async with in_memory(_config(tmp_path, store="memory", ignore_file=str(ignore))) as srv:
        c = srv.client
        assert (await _ingest(c, "e-1"))["suppressed"] == 1
        [held] = (await c.get("/api/v1/drifts?suppressed=true")).json()["data"]["drifts"]
        assert held["suppressed_by"] == ".driftignore:2"
        assert not srv.daemon.reload_ignore_file()  # unchanged
        ignore.write_text("aws_s3_bucket.*\n")
        assert srv.daemon.reload_ignore_file()
        assert (await _ingest(c, "e-2", "t3.large"))["drifts"] == 1
        ignore.unlink()
        assert not srv.daemon.reload_ignore_file()  # gone: the last good version stays


ROLES = {
    # role: (GET suppressions, POST suppression, POST custom rule, GET rules)
    "viewer": (403, 403, 403, 200),
    "analyst": (200, 201, 403, 200),
    "ingest": (403, 403, 403, 403),
    "admin": (200, 201, 201, 200),
}


@pytest.mark.parametrize("role", sorted(ROLES))
async def test_permissions_per_role(tmp_path: Path, role: str) -> None:
    async with in_memory(_config(tmp_path, store="memory")) as srv:
        secret, _ = srv.daemon.access.keys.create(role, role, "tests")
        headers = {"Authorization": f"Bearer {secret}"}
        c = srv.client
        sup = orjson.dumps({"match": WEB, "reason": "x"})
        rule = orjson.dumps({"match": {"event_name": "X"}, "severity": "low"})
        got = (
            (await c.get("/api/v1/suppressions", headers=headers)).status_code,
            (await c.post("/api/v1/suppressions", content=sup, headers=headers)).status_code,
            (await c.post("/api/v1/custom-rules", content=rule, headers=headers)).status_code,
            (await c.get("/api/v1/rules", headers=headers)).status_code,
        )
        assert got == ROLES[role]
