"""State sources: URLs, local files and globs, reload on change, bad and vanished states,
labels on drifts, and the admin API (in memory)."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from monitor.app.config import Config
from monitor.statesrc import (
    Credentials,
    Entry,
    SourceError,
    StateSources,
    Timing,
    Unreachable,
    parse_source,
)
from monitor.statesrc.backend import glob_regex, literal_prefix
from monitor.tfstate import StateError
from tests.support.asgi import in_memory
from tests.support.records import DEMO_STATE, resize
from tests.support.states import state_bytes

pytestmark = pytest.mark.timeout(30)


def test_urls_become_sources_and_secrets_leave_the_url() -> None:
    http = parse_source("https://gitlab:glpat-SECRET@gitlab.example/api/v4/projects/7/state/prod")
    assert http.kind == "http"
    assert http.url == "https://gitlab.example/api/v4/projects/7/state/prod"
    assert http.creds == Credentials(None, "gitlab", "glpat-SECRET")
    assert "SECRET" not in repr(http) and "SECRET" not in orjson.dumps(http.public()).decode()
    assert http.public()["credentials"] is True
    s3 = parse_source("s3://states/prod/**/*.tfstate")
    assert (s3.kind, s3.location, s3.remote) == ("s3", "states/prod/**/*.tfstate", True)
    tfc = parse_source("tfc://acme/app-*", Credentials("team-token"))
    assert (tfc.kind, tfc.location) == ("tfc", "acme/app-*")
    assert parse_source("states/*.tfstate").kind == "file"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("s3://only-a-bucket", "s3://BUCKET/KEY"),
        ("tfc://acme", "tfc://ORG/WORKSPACE"),
        ("tfc://acme/prod", "team token"),
        ("ftp://host/state", "unknown scheme"),
        ("", "required"),
    ],
)
def test_bad_urls_say_why(url: str, why: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_TOKEN_app_terraform_io", raising=False)
    monkeypatch.delenv("TFC_TOKEN", raising=False)
    with pytest.raises(SourceError, match=why):
        parse_source(url)


def test_tfc_token_comes_from_terraforms_own_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_TOKEN_app_terraform_io", "from-env")
    assert parse_source("tfc://acme/prod").creds.token == "from-env"


def test_key_globs() -> None:
    rx = glob_regex("states/**/*.tfstate")
    assert rx.match("states/a.tfstate") and rx.match("states/x/y/b.tfstate")
    assert not rx.match("states/a.tfstate.backup") and not rx.match("other/a.tfstate")
    assert not glob_regex("states/*.tfstate").match("states/x/a.tfstate")
    assert literal_prefix("states/prod/**/*.tfstate") == "states/prod/"
    assert literal_prefix("env*/k") == ""


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    # A distinct mtime per write, whatever the file system's clock granularity.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_local_glob_workspaces_changes_bad_and_vanished_states(tmp_path: Path) -> None:
    root = tmp_path / "infra"
    _write(root / "terraform.tfstate", state_bytes(resources=2, prefix="main"))
    staging = root / "terraform.tfstate.d" / "staging" / "terraform.tfstate"
    _write(staging, state_bytes(resources=3, prefix="stg"))
    sources = StateSources([parse_source(str(root / "**" / "*.tfstate"))])
    states = sources.load()
    assert sorted((s.workspace, len(s.managed)) for s in states) == [
        ("default", 2),
        ("staging", 3),
    ]
    assert sources.poll(force=True).changed == ()  # nothing moved: nothing re-read

    _write(staging, state_bytes(resources=4, prefix="stg", serial=2))
    changed = sources.poll(force=True).changed
    assert [(s.workspace, s.serial, len(s.managed)) for s in changed] == [("staging", 2, 4)]

    _write(staging, b'{"version": 4, "terraform_version": "1.7.5", "resour')
    assert sources.poll(force=True).changed == ()
    view = sources.views()[0]
    assert view["status"] == "degraded" and "not valid JSON" in view["bad_states"][0]["error"]
    assert sum(len(s.managed) for s in sources.states()) == 6  # the last good one stays

    staging.unlink()
    result = sources.poll(force=True)
    assert result.missing == (str(staging),)
    view = sources.views()[0]
    assert [m["path"] for m in view["missing"]] == [str(staging)] and view["bad_states"] == []
    assert "disappeared" in (sources.error() or "")
    assert sources.poll(force=True).missing == ()  # reported once, still listed as missing


def test_first_load_is_strict(tmp_path: Path) -> None:
    (tmp_path / "bad.tfstate").write_text("{}")
    with pytest.raises(StateError, match="version"):
        StateSources([parse_source(str(tmp_path / "bad.tfstate"))]).load()
    with pytest.raises(StateError, match="no such file"):
        StateSources([parse_source(str(tmp_path / "none.tfstate"))]).load()


class Flaky:
    """A backend that is down while `down` is set (the manager's backoff is what is tested)."""

    def __init__(self) -> None:
        self.down = False
        self.listings = 0

    def listing(self) -> list[Entry]:
        self.listings += 1
        if self.down:
            raise Unreachable("connection refused")
        return [Entry("mem://state", "default", "v1")]

    def fetch(self, entry: Entry) -> bytes:
        return state_bytes(resources=1)


def test_an_unreachable_source_backs_off_and_keeps_its_state() -> None:
    now = [0.0]
    backend = Flaky()
    sources = StateSources(
        [parse_source("https://state.example/prod")],
        Timing(remote_seconds=10, max_backoff_seconds=60),
        backend=lambda spec: backend,
        monotonic=lambda: now[0],
    )
    sources.load()
    backend.down = True
    polled_at = []
    for t in range(0, 200):
        now[0] = float(t)
        before = backend.listings
        sources.poll()
        if backend.listings > before:
            polled_at.append(t)
    # Due at 10, then 10 * 2, 10 * 4, and 60 s apart at most from there on.
    assert polled_at == [10, 30, 70, 130, 190]
    view = sources.views()[0]
    assert view["status"] == "error" and "connection refused" in view["error"]
    assert view["resource_count"] == 1
    backend.down = False
    now[0] = 250.0
    sources.poll()
    assert sources.views()[0]["status"] == "ok" and sources.views()[0]["failures"] == 0


def _config(tmp_path: Path, *state: str) -> Config:
    return Config(state=list(state), data_dir=str(tmp_path / "data"), state_poll_seconds=60)


async def test_a_resource_in_two_states_is_one_drift_naming_both(tmp_path: Path) -> None:
    doc = orjson.loads(Path(DEMO_STATE).read_bytes())
    for name, lineage in (("network", "lineage-net"), ("apps", "lineage-apps")):
        _write(tmp_path / "ws" / f"{name}.tfstate", orjson.dumps({**doc, "lineage": lineage}))
    async with in_memory(_config(tmp_path, str(tmp_path / "ws" / "*.tfstate"))) as srv:
        posted = await srv.client.post(
            "/api/v1/ingest/cloudtrail", json={"Records": [resize("e-1", "m5.4xlarge")]}
        )
        assert posted.status_code == 202, posted.text
        drifts = (await srv.client.get("/api/v1/drifts")).json()["data"]["drifts"]
        assert len(drifts) == 1
        labels = drifts[0]["states"]
        assert sorted(s["lineage"] for s in labels) == ["lineage-apps", "lineage-net"]
        assert {s["source"] for s in labels} == {str(tmp_path / "ws" / "*.tfstate")}
        assert drifts[0]["workspace"] == "default"
        meta = (await srv.client.get("/api/v1/state")).json()["data"]
        assert (
            meta["sources"][0]["status"] == "ok" and meta["sources"][0]["serial"] == doc["serial"]
        )


async def test_admin_api_adds_lists_and_removes_sources(tmp_path: Path) -> None:
    _write(tmp_path / "main.tfstate", state_bytes(resources=2, prefix="main"))
    _write(tmp_path / "extra" / "x.tfstate", state_bytes(resources=5, prefix="x"))
    async with in_memory(_config(tmp_path, str(tmp_path / "main.tfstate"))) as srv:
        c = srv.client
        extra = str(tmp_path / "extra")
        added = await c.post("/api/v1/state-sources", json={"url": extra, "token": "s3cr3t-tok"})
        assert added.status_code == 201, added.text
        body = added.json()["data"]
        assert body["resource_count"] == 5 and body["credentials"] is True
        assert "s3cr3t-tok" not in added.text
        assert len(srv.daemon.detector.index) == 7
        listed = await c.get("/api/v1/state-sources")
        assert [s["url"] for s in listed.json()["data"]["state_sources"]] == [
            str(tmp_path / "main.tfstate"),
            extra,
        ]
        assert "s3cr3t-tok" not in listed.text
        again = await c.post("/api/v1/state-sources", json={"url": extra})
        assert again.status_code == 409
        bad = await c.post("/api/v1/state-sources", json={"url": "ftp://x/y"})
        assert bad.status_code == 400 and "unknown scheme" in bad.text
        unknown = await c.post("/api/v1/state-sources", json={"url": extra, "secret": 1})
        assert unknown.status_code == 400
        gone = await c.delete(f"/api/v1/state-sources/{body['id']}")
        assert gone.status_code == 200 and len(srv.daemon.detector.index) == 2
        assert (await c.delete(f"/api/v1/state-sources/{body['id']}")).status_code == 404
        audit = (await c.get("/api/v1/audit-log?action=state_source.create")).json()["data"]
        assert len(audit["entries"]) == 4
        assert "s3cr3t-tok" not in orjson.dumps(audit).decode()
        assert (await c.get("/api/v1/audit-log?action=state_source.delete")).json()["data"][
            "total"
        ] == 2
        viewer, _ = srv.daemon.access.keys.create("v", "viewer", "tests")
        denied = await c.get("/api/v1/state-sources", headers={"Authorization": f"Bearer {viewer}"})
        assert denied.status_code == 403


async def test_health_reports_each_source(tmp_path: Path) -> None:
    path = tmp_path / "main.tfstate"
    _write(path, state_bytes(resources=2))
    async with in_memory(_config(tmp_path, str(path))) as srv:
        _write(path, b"not json")
        assert not await srv.daemon.reload_state()
        health = (await srv.client.get("/api/v1/health")).json()["data"]
        state = health["components"]["state"]
        assert state["status"] == "degraded"
        source = state["sources"][str(path)]
        assert (
            source["status"] == "degraded" and "not valid JSON" in source["bad_states"][0]["error"]
        )
