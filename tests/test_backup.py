"""`driftline backup` while ingest runs: every copy is one commit's database."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

import orjson
import pytest

from monitor.app.backup import BackupError, backup
from monitor.app.cli import main
from monitor.app.config import Config
from tests.support.asgi import in_memory
from tests.support.records import DEMO_STATE, resize

pytestmark = pytest.mark.timeout(60)


def _consistent(copy: Path) -> tuple[int, int]:
    """The drift rows and the drift counter of a copy (they agree in any commit's state)."""
    db = sqlite3.connect(copy)
    try:
        rows = db.execute("SELECT COUNT(*) FROM drifts").fetchone()[0]
        counter = db.execute("SELECT value FROM counters WHERE name = 'drifts.total'").fetchone()
        return rows, int(counter[0]) if counter else 0
    finally:
        db.close()


async def test_copies_taken_during_ingest_are_each_one_commit(tmp_path: Path):
    state = tmp_path / "demo.tfstate"
    shutil.copy(DEMO_STATE, state)
    config = Config(state=[str(state)], data_dir=str(tmp_path / "data"), state_poll_seconds=60)
    async with in_memory(config) as app:
        stop = asyncio.Event()

        async def ingest() -> int:
            n = 0
            while not stop.is_set():
                body = [resize(f"b-{n}-{i}", f"m5.n{n}i{i}") for i in range(20)]
                resp = await app.client.post(
                    "/api/v1/ingest/cloudtrail", content=orjson.dumps(body)
                )
                assert resp.status_code == 202
                n += 1
            return n

        writer = asyncio.create_task(ingest())
        copies = []
        for k in range(5):
            await asyncio.sleep(0)  # let ingest run between copies
            copies.append(
                await asyncio.to_thread(backup, Path(config.data_dir), tmp_path / f"b{k}")
            )
        stop.set()
        batches = await writer
    assert batches > 0
    seen = []
    for k, taken in enumerate(copies):
        assert [Path(c["file"]).name for c in taken] == ["driftline.db", "auth.db"]
        rows, counter = _consistent(tmp_path / f"b{k}" / "driftline.db")
        assert rows == counter
        seen.append(rows)
    assert seen == sorted(seen) and seen[-1] > 0


def test_the_command_refuses_to_overwrite_and_reports_a_missing_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    data = tmp_path / "data"
    data.mkdir()
    assert main(["backup", "--data-dir", str(data), str(tmp_path / "out")]) == 2
    assert "no Driftline database" in capsys.readouterr().err
    db = sqlite3.connect(data / "driftline.db")
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    assert main(["backup", "--data-dir", str(data), str(tmp_path / "out")]) == 0
    out = orjson.loads(capsys.readouterr().out)
    assert out["copies"][0]["file"].endswith("driftline.db")
    with pytest.raises(BackupError, match="already exists"):
        backup(data, tmp_path / "out")
