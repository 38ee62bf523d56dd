"""An outage's repeated log lines: the first passes, then one summary per interval."""

from __future__ import annotations

import logging
import socket
from collections import Counter
from pathlib import Path

import pytest

from monitor.app.config import Config
from monitor.app.repeats import NOISY, RepeatFilter
from tests.support.live import running, wait_until

DEMO_STATE = Path(__file__).parent.parent / "monitor/app/demo/demo.tfstate"


def _record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_a_retry_storm_becomes_a_first_line_and_a_periodic_summary() -> None:
    now = [0.0]
    flt = RepeatFilter(interval=60, clock=lambda: now[0])
    passed = []
    # 536 failed connects in 20 s, then more until a minute has gone by.
    for n in range(700):
        now[0] = n * 0.1
        rec = _record("aiokafka.conn", "Unable connect to %s: %s", "node 1", "refused")
        if flt.filter(rec):
            passed.append(rec.getMessage())
    assert len(passed) == 2
    assert passed[0] == "Unable connect to node 1: refused"
    assert passed[1].startswith("Unable connect to node 1: refused (and 599 more times")


def test_other_messages_and_other_loggers_pass() -> None:
    flt = RepeatFilter(interval=60, clock=lambda: 0.0)
    assert flt.filter(_record("driftline.kafka", "kafka consumer failed: %s", "timeout"))
    assert flt.filter(_record("driftline.kafka", "kafka consumer failed: %s", "auth"))
    assert not flt.filter(_record("driftline.kafka", "kafka consumer failed: %s", "auth"))
    for _ in range(3):
        assert flt.filter(_record("driftline.web", "same line"))


@pytest.mark.integration
async def test_a_kafka_outage_is_logged_once_per_message_and_fails_readiness(
    tmp_path: Path,
) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there: a broker that is away
    seen: Counter[str] = Counter()
    shown: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            shown.append(record.getMessage())

    class Count(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if record.name.startswith(NOISY):
                seen[record.getMessage()] += 1
            return True

    handler = Collect()
    handler.addFilter(Count())
    handler.addFilter(RepeatFilter(interval=600))
    root = logging.getLogger()
    root.addHandler(handler)
    config = Config(
        state=[str(DEMO_STATE)],
        data_dir=str(tmp_path),
        state_poll_seconds=60,
        kafka_bootstrap=f"127.0.0.1:{port}",
        kafka_topics=["cloudtrail"],
    )
    try:
        async with running(config) as srv:
            kafka = srv.daemon.sources["kafka"]
            await wait_until(lambda: kafka.status()["reconnects"] >= 3, "three failed connects")
            assert (await srv.client.get("/readyz")).status_code == 503
            health = (await srv.client.get("/api/v1/health")).json()["data"]
            assert health["components"]["sources"]["kafka"]["status"] == "degraded"
    finally:
        root.removeHandler(handler)
    repeated = [m for m, n in seen.items() if n >= 3]
    assert repeated, seen  # the client did repeat itself on every retry
    for message in repeated:
        assert shown.count(message) == 1, message
