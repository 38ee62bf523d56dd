"""An outage's repeated log lines: the first passes, then one summary per interval."""

from __future__ import annotations

import logging

from monitor.app.repeats import RepeatFilter


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
