"""Remote state against real peers: a moto S3 server, a Terraform HTTP backend server and
an HCP Terraform stand-in (the documented endpoints and response shapes)."""

from __future__ import annotations

import base64
import urllib.request
import uuid
from pathlib import Path

import orjson
import pytest

from monitor.app.config import Config
from monitor.statesrc import Credentials, StateSources, Timing, parse_source
from monitor.tfstate import StateError
from tests.support import moto_s3
from tests.support.asgi import in_memory
from tests.support.moto_s3 import s3_client
from tests.support.records import DEMO_STATE, resize
from tests.support.state_peers import (
    HttpBackendHandler,
    HttpBackendState,
    TfcHandler,
    TfcState,
    TfcWorkspace,
    serving,
)
from tests.support.states import state_bytes

# A real S3 API (moto server) and credentials for it, shared with other modules.
s3_endpoint = moto_s3.s3_endpoint
aws_env = moto_s3.aws_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
USER, PW = "gitlab-ci-token", "glpat-xyz"


# --- S3 (moto server) ----------------------------------------------------------------------


def test_s3_key_with_workspaces_etag_changes_bad_and_removed(s3_endpoint: str, aws_env: None):
    s3 = s3_client(s3_endpoint)
    bucket = f"states-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    key = "app/terraform.tfstate"
    s3.put_object(Bucket=bucket, Key=key, Body=state_bytes(resources=2, prefix="dflt"))
    s3.put_object(Bucket=bucket, Key=f"env:/prod/{key}", Body=state_bytes(resources=3, prefix="p"))
    s3.put_object(Bucket=bucket, Key=f"env:/prod/other/{key}", Body=b"not this one")
    spec = parse_source(f"s3://{bucket}/{key}", endpoint=s3_endpoint)
    sources = StateSources([spec])
    states = sources.load()
    assert sorted((s.workspace, len(s.managed), s.source) for s in states) == [
        ("default", 2, spec.url),
        ("prod", 3, spec.url),
    ]
    assert sources.poll(force=True).changed == ()

    s3.put_object(
        Bucket=bucket, Key=f"env:/prod/{key}", Body=state_bytes(resources=4, prefix="p", serial=2)
    )
    changed = sources.poll(force=True).changed
    assert [(s.workspace, s.serial, s.path) for s in changed] == [
        ("prod", 2, f"s3://{bucket}/env:/prod/{key}")
    ]
    inst = next(i for i in changed[0].managed if i.name == "p0")
    assert inst.public_attributes()["db_password"] == "(sensitive)"

    s3.put_object(Bucket=bucket, Key=key, Body=b'{"version": 3}')
    assert sources.poll(force=True).changed == ()
    view = sources.views()[0]
    assert view["status"] == "degraded" and "version 3" in view["bad_states"][0]["error"]
    assert view["resource_count"] == 6

    s3.delete_object(Bucket=bucket, Key=f"env:/prod/{key}")
    assert sources.poll(force=True).missing == (f"s3://{bucket}/env:/prod/{key}",)


def test_s3_glob_and_a_missing_bucket(s3_endpoint: str, aws_env: None):
    s3 = s3_client(s3_endpoint)
    bucket = f"states-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    for name in ("stacks/net/terraform.tfstate", "stacks/a/b/app.tfstate", "stacks/x.txt"):
        s3.put_object(Bucket=bucket, Key=name, Body=state_bytes(resources=1, prefix=name[7:9]))
    spec = parse_source(f"s3://{bucket}/stacks/**/*.tfstate", endpoint=s3_endpoint)
    states = StateSources([spec]).load()
    assert sorted(s.path for s in states) == [
        f"s3://{bucket}/stacks/a/b/app.tfstate",
        f"s3://{bucket}/stacks/net/terraform.tfstate",
    ]
    with pytest.raises(StateError, match="NoSuchBucket"):
        missing = parse_source(f"s3://no-such-{bucket}/k.tfstate", endpoint=s3_endpoint)
        StateSources([missing]).load()


# --- Terraform's HTTP backend ----------------------------------------------------------------


def _http_call(base: str, method: str, path: str, body: bytes, user: str, pw: str) -> int:
    auth = base64.b64encode(f"{user}:{pw}".encode()).decode()
    req = urllib.request.Request(
        base + path, data=body, method=method, headers={"Authorization": f"Basic {auth}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_http_backend_basic_auth_conditional_gets_and_outage() -> None:
    peer = HttpBackendState(USER, PW)
    with serving(HttpBackendHandler, peer) as base:
        # Terraform's own write path: LOCK, POST ?ID=, UNLOCK.
        lock = orjson.dumps({"ID": "lock-1", "Operation": "OperationTypeApply"})
        assert _http_call(base, "LOCK", "/state/prod", lock, USER, PW) == 200
        other = orjson.dumps({"ID": "lock-2"})
        assert _http_call(base, "LOCK", "/state/prod", other, USER, PW) == 423
        first = state_bytes(resources=3, serial=1)
        post = "/state/prod?ID=lock-1"
        assert _http_call(base, "POST", post, first, USER, PW) == 200
        assert _http_call(base, "UNLOCK", "/state/prod", lock, USER, PW) == 200

        spec = parse_source(f"http://gitlab-ci-token:glpat-xyz@{base[7:]}/state/prod")
        assert "glpat" not in spec.url
        now = [0.0]
        sources = StateSources([spec], Timing(remote_seconds=5), monotonic=lambda: now[0])
        assert [len(s.managed) for s in sources.load()] == [3]
        assert sources.poll(force=True).changed == ()  # 304 Not Modified

        second = state_bytes(resources=5, serial=2)
        assert _http_call(base, "POST", "/state/prod", second, USER, PW) == 200
        assert [s.serial for s in sources.poll(force=True).changed] == [2]

        peer.down = True
        now[0] = 10.0
        sources.poll()
        view = sources.views()[0]
        assert view["status"] == "error" and "503" in view["error"]
        assert view["resource_count"] == 5 and "glpat" not in orjson.dumps(view).decode()
        peer.down = False
        now[0] = 100.0
        sources.poll()
        assert sources.views()[0]["status"] == "ok"

        peer.states.pop("/state/prod")
        assert sources.poll(force=True).missing == (spec.url,)

        wrong = parse_source(f"{base}/state/prod", Credentials(None, "gitlab-ci-token", "nope"))
        with pytest.raises(StateError, match="401"):
            StateSources([wrong]).load()


def test_http_backend_without_etags_uses_the_body() -> None:
    peer = HttpBackendState("u", "p", etags=False)
    peer.states["/s"] = state_bytes(resources=1)
    with serving(HttpBackendHandler, peer) as base:
        sources = StateSources([parse_source(f"{base}/s", Credentials(None, "u", "p"))])
        sources.load()
        assert sources.poll(force=True).changed == ()
        peer.states["/s"] = state_bytes(resources=2, serial=9)
        assert [s.serial for s in sources.poll(force=True).changed] == [9]


# --- HCP Terraform stand-in ------------------------------------------------------------------


def _tfc(names: dict[str, list[str]]) -> TfcState:
    peer = TfcState("acme", "team-token-123")
    for n, (name, tags) in enumerate(names.items()):
        peer.workspaces[name] = TfcWorkspace(f"ws-{n:04d}", name, tags)
    return peer


def test_tfc_workspace_glob_tag_new_version_and_removed_workspace() -> None:
    names = {f"app-{n:03d}": ["prod"] if n % 2 else [] for n in range(130)}
    peer = _tfc({**names, "network": ["prod"], "fresh": []})
    for name in [*names, "network"]:
        peer.add_version(name, state_bytes(resources=2, prefix=name), 1)
    with serving(TfcHandler, peer) as base:
        token = Credentials("team-token-123")
        glob = StateSources([parse_source("tfc://acme/app-*", token, base)])
        states = glob.load()
        assert len(states) == 130  # two pages of 100
        assert {s.workspace for s in states} == set(names)
        peer.requests.clear()
        assert glob.poll(force=True).changed == ()
        assert all("/workspaces" in r for r in peer.requests)  # listings only, no download

        peer.add_version("app-007", state_bytes(resources=3, prefix="app-007", serial=2), 2)
        changed = glob.poll(force=True).changed
        assert [(s.workspace, s.serial, s.path) for s in changed] == [
            ("app-007", 2, "tfc://acme/app-007")
        ]

        del peer.workspaces["app-009"]
        assert glob.poll(force=True).missing == ("tfc://acme/app-009",)

        tagged = StateSources([parse_source("tfc://acme/tag:prod", token, base)]).load()
        assert sorted(s.workspace for s in tagged)[:2] == ["app-001", "app-003"]
        assert "network" in {s.workspace for s in tagged} and len(tagged) == 65

        one = StateSources([parse_source("tfc://acme/network", token, base)])
        assert [s.workspace for s in one.load()] == ["network"]
        del peer.workspaces["network"]
        assert one.poll(force=True).missing == ("tfc://acme/network",)

        with pytest.raises(StateError, match="401"):
            StateSources([parse_source("tfc://acme/app-*", Credentials("wrong"), base)]).load()


async def test_tfc_source_added_through_the_api_labels_drifts(tmp_path: Path) -> None:
    peer = _tfc({"prod": []})
    demo = Path(DEMO_STATE).read_bytes()
    peer.add_version("prod", demo, 1)
    local = tmp_path / "empty.tfstate"
    local.write_bytes(state_bytes(resources=1, prefix="unrelated"))
    config = Config(state=[str(local)], data_dir=str(tmp_path / "data"), state_poll_seconds=60)
    with serving(TfcHandler, peer) as base:
        async with in_memory(config) as srv:
            added = await srv.client.post(
                "/api/v1/state-sources",
                json={"url": "tfc://acme/prod", "token": "team-token-123", "endpoint": base},
            )
            assert added.status_code == 201, added.text
            assert "team-token-123" not in added.text
            posted = await srv.client.post(
                "/api/v1/ingest/cloudtrail", json={"Records": [resize("e-9", "m5.4xlarge")]}
            )
            assert posted.status_code == 202
            drift = (await srv.client.get("/api/v1/drifts")).json()["data"]["drifts"][0]
            assert drift["workspace"] == "prod"
            assert drift["states"][0]["source"] == "tfc://acme/prod"
            assert drift["states"][0]["path"] == "tfc://acme/prod"
