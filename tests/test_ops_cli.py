"""Operating Driftline: --version, `config check`, the example config, log lines."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.app import logs
from monitor.app.cli import main
from monitor.app.config import Config, load_config
from monitor.app.demo_replay import replay_forever
from monitor.app.serve import _announce_access
from monitor.auth.keys import key_hash
from monitor.pipeline import IngestResult
from tests.support.asgi import in_memory, make_daemon
from tests.support.live import wait_until
from tests.support.records import DEMO_STATE
from web.request_id import REQUEST_ID

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "driftline.example.yaml"
KEY = "dl_" + "A" * 43


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert re.fullmatch(r"driftline \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


def test_config_check_accepts_a_good_file_and_refuses_a_bad_one_as_start_up_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    good = tmp_path / "good.yaml"
    good.write_text(f"state: [{ROOT / DEMO_STATE}]\nport: 9000\n")
    assert main(["config", "check", str(good)]) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"state: [{ROOT / DEMO_STATE}]\nlog_format: xml\n")
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "log_format: 'xml' must be text or json" in err
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("prot: 80\n")
    assert main(["config", "check", str(unknown)]) == 2
    assert "unknown setting 'prot'" in capsys.readouterr().err


def test_the_example_config_names_every_setting():
    text = EXAMPLE.read_text()
    named = set(re.findall(r"^(?:# )?(\w+):", text, re.M))
    missing = {f.name for f in fields(Config)} - named
    assert not missing, f"not in driftline.example.yaml: {sorted(missing)}"


def test_the_example_config_loads_as_it_is_and_with_every_default_uncommented(tmp_path: Path):
    state = {"state": [str(ROOT / DEMO_STATE)], "data_dir": str(tmp_path)}
    as_is = load_config(str(EXAMPLE), {}, state)
    assert as_is.port == 8080 and as_is.log_format == "text"
    names = {f.name for f in fields(Config)}
    lines = [
        line[2:] if (m := re.match(r"# (\w+):", line)) and m.group(1) in names else line
        for line in EXAMPLE.read_text().splitlines()
    ]
    every = tmp_path / "every.yaml"
    every.write_text("\n".join(lines))
    uncommented = load_config(str(every), {}, state)
    # The defaults the example shows are the defaults (except where it sets a value).
    default = Config(**state).validate()
    assert uncommented == default


def _line(formatter: logging.Formatter, name: str, msg: str, *args: object, **extra: object) -> str:
    record = logging.makeLogRecord(
        {"name": name, "levelname": "INFO", "levelno": 20, "msg": msg, "args": args, **extra}
    )
    return formatter.format(record)


def test_json_lines_carry_time_level_logger_message_and_fields_and_no_key():
    line = orjson.loads(
        _line(
            logs.JsonFormatter(),
            "driftline.ingest",
            "stored %s",
            "e-1",
            source="kafka",
            drift_id="d1",
        )
    )
    assert line["level"] == "info" and line["logger"] == "driftline.ingest"
    assert (
        line["message"] == "stored e-1" and line["source"] == "kafka" and line["drift_id"] == "d1"
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    access = _line(
        logs.JsonFormatter(),
        "uvicorn.access",
        '%s - "%s %s HTTP/%s" %d',
        "127.0.0.1:5000",
        "GET",
        f"/ws?ticket={KEY}&topics=drifts",
        "1.1",
        101,
    )
    parsed = orjson.loads(access)
    assert parsed["status"] == 101 and parsed["method"] == "GET"
    assert parsed["path"] == "/ws?ticket=***&topics=drifts"
    assert KEY not in access


@pytest.mark.parametrize(
    "secret",
    [
        f"Authorization: Bearer {KEY}",
        "https://falco:hunter2@driftline.example/api/v1/falco/events",
        "GET /state?token=abc.def.ghi",
        f"created {KEY}",
    ],
)
def test_text_lines_mask_keys_and_credentials(secret: str):
    line = _line(logs.TextFormatter(), "driftline", "%s", secret)
    assert KEY not in line and "hunter2" not in line and "abc.def.ghi" not in line


def test_configure_routes_uvicorns_loggers_through_the_one_format(monkeypatch: pytest.MonkeyPatch):
    out = io.StringIO()
    monkeypatch.setattr(logs.sys, "stderr", out)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("info", "json")
        logging.getLogger("uvicorn.error").info("Started server process [%d]", 1)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert orjson.loads(out.getvalue())["logger"] == "uvicorn.error"


def test_the_admin_key_file_becomes_the_first_admin_key_and_is_never_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    assert main(["keys", "generate"]) == 0
    secret = capsys.readouterr().out.strip()
    key_file = tmp_path / "admin-key"
    key_file.write_text(secret + "\n")
    config = Config(
        state=[str(ROOT / DEMO_STATE)], data_dir=str(tmp_path / "d"), admin_key_file=str(key_file)
    )
    daemon = make_daemon(config)
    _announce_access(daemon, "http://127.0.0.1:8080")
    out = capsys.readouterr()
    assert secret not in out.out + out.err and "from admin_key_file" in out.err
    stored = daemon.access.keys.by_hash(key_hash(secret))
    assert stored is not None and stored.role == "admin"
    key_file.write_text("hunter2")
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"state: [{ROOT / DEMO_STATE}]\nadmin_key_file: {key_file}\n")
    assert main(["config", "check", str(bad)]) == 2
    assert "does not hold a key" in capsys.readouterr().err


async def test_every_answer_carries_a_request_id_and_log_lines_get_it(tmp_path: Path):
    config = Config(state=[str(ROOT / DEMO_STATE)], data_dir=str(tmp_path / "d"))
    async with in_memory(config) as app:
        made = await app.client.get("/api/v1/drifts")
        given = await app.client.get("/api/v1/drifts", headers={"X-Request-ID": "lb-7.a"})
        hostile = await app.client.get("/api/v1/drifts", headers={"X-Request-ID": "a b\x01"})
    assert re.fullmatch(r"[0-9a-f]{16}", made.headers["x-request-id"])
    assert given.headers["x-request-id"] == "lb-7.a"
    assert re.fullmatch(r"[0-9a-f]{16}", hostile.headers["x-request-id"])
    token = REQUEST_ID.set("lb-7.a")
    try:
        record = logging.makeLogRecord({"name": "driftline", "msg": "m", "levelname": "INFO"})
        logs.RequestIdFilter().filter(record)
    finally:
        REQUEST_ID.reset(token)
    assert orjson.loads(logs.JsonFormatter().format(record))["request_id"] == "lb-7.a"
    assert logs.TextFormatter().format(record).endswith("request_id=lb-7.a")


async def test_the_demo_logs_its_drifts_with_source_and_drift_id(caplog: pytest.LogCaptureFixture):
    async def ingest(items: list[Any]) -> IngestResult:
        return IngestResult(drifts=1, drift_ids=["drift-1"])

    caplog.set_level(logging.INFO, logger="driftline.demo")
    task = asyncio.create_task(replay_forever(ingest, lambda name: None, 0.001))
    try:
        await wait_until(lambda: bool(caplog.records), "a demo log line")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    line = orjson.loads(logs.JsonFormatter().format(caplog.records[0]))
    assert line["source"] == "demo" and line["drift_id"] == "drift-1"
