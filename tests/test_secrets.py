"""Secrets planted in a state and in events never leave the process: not through the API,
the hub, the graph, the logs, nor the SQLite database file and its WAL."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from monitor.app.config import Config
from monitor.redact import REDACTED, redact
from tests.support.asgi import in_memory

pytestmark = pytest.mark.timeout(120)

PROVIDER = 'provider["registry.terraform.io/hashicorp/aws"]'
STATE: dict[str, Any] = {
    "version": 4,
    "terraform_version": "1.6.0",
    "serial": 1,
    "lineage": "secrets",
    "outputs": {},
    "resources": [
        {
            "mode": "managed",
            "type": "aws_efs_file_system",
            "name": "data",
            "provider": PROVIDER,
            "instances": [{"schema_version": 0, "attributes": {"id": "fs-0123"}}],
        }
    ],
}
ACTOR = {
    "type": "IAMUser",
    "arn": "arn:aws:iam::123456789012:user/bob",
    "accountId": "123456789012",
    "userName": "bob",
    "principalId": "AIDA",
}
secret_names = st.builds(
    "{}{}{}".format,
    st.sampled_from(["", "db_", "app_", "master_", "DB_", "client_"]),
    st.sampled_from(["password", "secret", "token", "api_key", "private_key", "Password"]),
    st.sampled_from(["", "_value", "_2"]),
)
secret_values = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=10, max_size=16).map(
    "S3cr3t-{}".format
)


def _tag_event(name: str, value: str) -> dict[str, Any]:
    return {
        "eventVersion": "1.08",
        "eventID": "e-tags",
        "eventTime": "2026-01-01T00:00:00Z",
        "eventSource": "elasticfilesystem.amazonaws.com",
        "eventName": "CreateTags",
        "awsRegion": "us-east-1",
        "sourceIPAddress": "192.0.2.1",
        "userAgent": "aws-cli/2",
        "userIdentity": ACTOR,
        "requestParameters": {
            "fileSystemId": "fs-0123",
            "tags": [{"key": name, "value": value}, {"key": "team", "value": "db"}],
        },
        "recipientAccountId": "123456789012",
    }


def _alert(name: str, value: str) -> dict[str, Any]:
    return {
        "uuid": "a-secret",
        "time": "2026-01-01T00:00:01Z",
        "priority": "Warning",
        "rule": "Env var read",
        "output": "a process read its environment",
        "source": "syscall",
        "hostname": "h1",
        "output_fields": {"proc.name": "app", f"env.{name}": value},
    }


async def _outputs(root: Path, name: str, old: str, new: str, alert: str) -> list[str]:
    state = copy.deepcopy(STATE)
    tags = {name: old, "team": "db", "labels": {name: old}}
    state["resources"][0]["instances"][0]["attributes"].update(tags=tags, tags_all=tags)
    (root / "s.tfstate").write_text(json.dumps(state))
    config = Config(
        state=[str(root / "s.tfstate")], data_dir=str(root / "data"), state_poll_seconds=60
    )
    texts: list[str] = []
    async with in_memory(config) as srv:
        sub = srv.daemon.hub.subscribe(["all"])
        client = srv.client
        reply = await client.post(
            "/api/v1/ingest/cloudtrail", content=orjson.dumps(_tag_event(name, new))
        )
        assert reply.status_code == 202 and reply.json()["data"]["drifts"] == 1
        reply = await client.post("/api/v1/falco/events", content=orjson.dumps(_alert(name, alert)))
        assert reply.status_code == 202
        drifts = (await client.get("/api/v1/drifts")).json()["data"]["drifts"]
        assert drifts and drifts[0]["old_value"][name] == REDACTED
        for path in (
            "/api/v1/drifts",
            f"/api/v1/drifts/{drifts[0]['id']}",
            "/api/v1/events",
            "/api/v1/events/e-tags",
            "/api/v1/events/a-secret",
            "/api/v1/graph",
            "/api/v1/graph/nodes?limit=1000",
            "/api/v1/state/resources",
            "/api/v1/stats",
            "/api/v1/health",
        ):
            texts.append((await client.get(path)).text)
        # What SSE and WebSocket clients would be sent.
        texts.extend(orjson.dumps(m.payload).decode() for m in await sub.next_batch(0))
    for suffix in ("", "-wal"):
        db = root / "data" / f"driftline.db{suffix}"
        if db.exists():
            texts.append(db.read_bytes().decode("latin-1"))
    return texts


@settings(
    max_examples=6,
    deadline=None,
    database=None,  # no .hypothesis directory in the work tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(name=secret_names, old=secret_values, new=secret_values, alert=secret_values)
def test_planted_secrets_never_leave(
    caplog: pytest.LogCaptureFixture, name: str, old: str, new: str, alert: str
) -> None:
    assume(old != new)  # an unchanged value is no drift
    caplog.clear()
    with caplog.at_level(logging.DEBUG), tempfile.TemporaryDirectory() as tmp:
        texts = asyncio.run(_outputs(Path(tmp), name, old, new, alert))
    texts.append(caplog.text)
    for secret in (old, new, alert):
        leaks = [t[max(0, t.find(secret) - 80) : t.find(secret) + 20] for t in texts if secret in t]
        assert not leaks, (secret, leaks)


def test_redaction_reaches_maps_tag_lists_and_any_case() -> None:
    value = {
        "tags": {"db_password": "a", "Name": "web"},
        "tagSet": {"items": [{"key": "api_token", "value": "b"}]},
        "env": [{"name": "DB_PASSWORD", "value": "c"}, {"name": "HOME", "value": "/root"}],
        "privateKey": "d",
        "automount_service_account_token": True,
    }
    assert redact(value) == {
        "tags": {"db_password": REDACTED, "Name": "web"},
        "tagSet": {"items": [{"key": "api_token", "value": REDACTED}]},
        "env": [{"name": "DB_PASSWORD", "value": REDACTED}, {"name": "HOME", "value": "/root"}],
        "privateKey": REDACTED,
        "automount_service_account_token": True,
    }
