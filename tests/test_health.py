"""Health that probes can use, and storage faults that are loud (in memory, real SQLite files)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.app.cli import main
from monitor.app.config import Config
from monitor.store import SqliteStore, StorageFault
from streams.cloudtrail import decode_record
from tests.support.asgi import in_memory, make_daemon
from tests.support.realdata import cloudtrail_records

pytestmark = pytest.mark.timeout(60)
DEMO_STATE = Path(__file__).parent.parent / "monitor/app/demo/demo.tfstate"


def _config(tmp_path: Path, **over: Any) -> Config:
    state = over.pop("state", [str(DEMO_STATE)])
    return Config(state=state, data_dir=str(tmp_path / "data"), state_poll_seconds=60, **over)


def _ndjson(records: list[dict[str, Any]]) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in records)


def _records(n: int, offset: int = 0) -> list[dict[str, Any]]:
    return cloudtrail_records("invictus_aws_dataset")[offset : offset + n]


class _DownSource:
    """A configured source that never connects (a broker that is away)."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"state": "backoff", "connected": False, "last_error": "connection refused"}


async def test_probes_answer_and_bare_health_says_only_the_status(tmp_path: Path) -> None:
    async with in_memory(_config(tmp_path)) as srv:
        live = await srv.client.get("/livez")
        assert live.status_code == 200 and live.json()["data"] == {"status": "ok"}
        ready = await srv.client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["data"]["status"] == "ready"
        bare = await srv.client.get("/health")
        assert bare.status_code == 200 and bare.json()["data"] == {"status": "ok"}
        full = (await srv.client.get("/api/v1/health")).json()["data"]
        assert full["components"]["store"]["status"] == "ok"


async def test_http_counters_count_http_records_only(tmp_path: Path) -> None:
    async with in_memory(_config(tmp_path)) as srv:
        # What Kafka or a file source delivers goes to the pipeline, not through HTTP.
        await srv.daemon.pipeline.ingest([decode_record(r) for r in _records(5)])
        reply = await srv.client.post("/api/v1/ingest/cloudtrail", content=_ndjson(_records(3, 5)))
        assert reply.status_code == 202
        http = (await srv.client.get("/api/v1/health")).json()["data"]["components"]["sources"]
        assert http["http"]["records"] == 3


async def test_a_disconnected_source_makes_health_and_readiness_503(tmp_path: Path) -> None:
    daemon_config = _config(tmp_path)
    async with in_memory(daemon_config) as srv:
        srv.daemon.sources["kafka"] = _DownSource()  # type: ignore[assignment]
        health = await srv.client.get("/api/v1/health")
        assert health.status_code == 503
        body = health.json()["data"]
        assert body["status"] == "degraded"
        assert body["components"]["sources"]["kafka"]["status"] == "degraded"
        assert (await srv.client.get("/health")).status_code == 503
        ready = await srv.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["data"]["checks"]["sources"]["kafka"].startswith("not connected")
        assert (await srv.client.get("/livez")).status_code == 200


async def test_a_deleted_state_file_is_degraded_once_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "live.tfstate"
    shutil.copy(DEMO_STATE, state)
    async with in_memory(_config(tmp_path, state=[str(state)])) as srv:
        state.unlink()
        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                assert not await srv.daemon.reload_state()
        warnings = [r for r in caplog.records if str(state) in r.getMessage()]
        assert len(warnings) == 1 and warnings[0].exc_info is None
        health = await srv.client.get("/api/v1/health")
        assert health.status_code == 503
        view = health.json()["data"]["components"]["state"]
        assert view["status"] == "degraded"
        assert [m["path"] for m in view["sources"][str(state)]["missing"]] == [str(state)]
        # Still ready: the last good state stays loaded.
        assert (await srv.client.get("/readyz")).status_code == 200
        shutil.copy(DEMO_STATE, state)
        assert await srv.daemon.reload_state()
        assert (await srv.client.get("/health")).status_code == 200


async def test_disk_full_is_a_507_and_ingest_resumes_when_space_returns(tmp_path: Path) -> None:
    async with in_memory(_config(tmp_path)) as srv:
        store = srv.daemon.store
        assert isinstance(store, SqliteStore)
        db = store._writer
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        # SQLite's own limit on the file's size: the writes see SQLITE_FULL, as on a full disk.
        db.execute(f"PRAGMA max_page_count = {pages}")
        batch = _ndjson(_records(200))
        refused = await srv.client.post("/api/v1/ingest/cloudtrail", content=batch)
        assert refused.status_code == 507
        assert "full" in refused.json()["error"]["message"]
        health = await srv.client.get("/api/v1/health")
        assert health.status_code == 503
        store_health = health.json()["data"]["components"]["store"]
        assert store_health["status"] == "failed" and "full" in store_health["error"]
        assert (await srv.client.get("/health")).json()["data"]["status"] == "failed"
        ready = await srv.client.get("/readyz")
        cause = ready.json()["data"]["checks"]["store"]
        assert ready.status_code == 503 and "full" in cause
        assert str(tmp_path) not in ready.text  # a public probe names no path
        events = (await srv.client.get("/api/v1/events?limit=1")).json()["data"]
        assert events["total"] == 0  # nothing acknowledged, nothing half-kept

        db.execute("PRAGMA max_page_count = 1073741823")
        assert (await srv.client.get("/readyz")).status_code == 200
        accepted = await srv.client.post("/api/v1/ingest/cloudtrail", content=batch)
        assert accepted.status_code == 202
        events = (await srv.client.get("/api/v1/events?limit=1")).json()["data"]
        assert events["total"] > 0


async def test_a_removed_data_dir_refuses_writes_instead_of_losing_them(tmp_path: Path) -> None:
    async with in_memory(_config(tmp_path)) as srv:
        shutil.rmtree(tmp_path / "data")
        refused = await srv.client.post("/api/v1/ingest/cloudtrail", content=_ndjson(_records(3)))
        # The API keys live in the data dir too: whichever store notices first, a 503.
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
        assert (await srv.client.get("/health")).json()["data"]["status"] == "failed"
        ready = await srv.client.get("/readyz")
        assert ready.status_code == 503
        assert "gone" in ready.json()["data"]["checks"]["store"]


def test_a_store_that_cannot_open_names_its_path(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data dir should be")
    with pytest.raises(StorageFault, match="not-a-dir"):
        make_daemon(Config(state=[str(DEMO_STATE)], data_dir=str(blocker / "data")))


def test_serve_on_an_unusable_data_dir_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    code = main(["serve", "--state", str(DEMO_STATE), "--data-dir", str(blocker / "data")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "not-a-dir" in err and "Traceback" not in err
