"""The publish stage: a write's outcome becomes hub messages, numbered in commit order and
kept by the store in the same transaction; the store itself never makes a message."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from monitor.hub import Hub
from monitor.pipeline import PendingMessage, Publisher
from monitor.store import SqliteStore, StatusChange, WriteBatch, WriteOutcome
from monitor.types import FalcoAlert
from tests.support.drifts import DRIFT

REPEAT = replace(DRIFT, id="d-2", event_id="e-2", event_time="2026-03-02T00:00:00Z")
ALERT = FalcoAlert("a-1", "2026-03-01T00:00:00Z", "Warning", "medium", "r", "out", None, "h")


def _pending(*drifts_and_alerts: object) -> list[PendingMessage]:
    out = []
    for x in drifts_and_alerts:
        if isinstance(x, FalcoAlert):
            out.append(PendingMessage("events", "falco", x.as_dict(), x.id))
        else:
            assert isinstance(x, type(DRIFT))
            out.append(PendingMessage("drifts", "drift", x.as_dict(), x.id))
    return out


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore(tmp_path / "p.db")
    s.start()
    yield s  # type: ignore[misc]
    s.close()


def _kept(store: SqliteStore) -> list[tuple[int, str, dict[str, object]]]:
    rows = store.messages_since(0, ["drifts", "events", "state"], 100)
    return [(seq, type_, orjson.loads(body)) for seq, _, type_, _, body in rows]


def test_outcome_messages_in_order_numbered_and_kept(store: SqliteStore) -> None:
    hub = Hub(start_seq=10)
    batch = WriteBatch(drifts=[DRIFT, REPEAT], alerts=[ALERT], received_at="2026-03-02T00:00:05Z")
    [out] = store.write([batch], Publisher(hub, [_pending(DRIFT, ALERT, REPEAT)]))
    # The repeat merged into DRIFT: its update first, then the new drift and the new alert;
    # the repeat's own "drift" message is not sent (its key is not a new drift).
    assert [(m.seq, m.type, m.payload["id"]) for m in out.messages] == [
        (11, "drift_update", "d-1"),
        (12, "drift", "d-1"),
        (13, "falco", "a-1"),
    ]
    # The update carries the whole drift as it now is, and what changed.
    update = out.messages[0].payload
    assert update == {**store.drift("d-1"), "update": update["update"]}  # type: ignore[dict-item]
    assert update["occurrences"] == 2 and update["last_seen"] == "2026-03-02T00:00:00Z"
    assert update["update"] == {
        "reason": "occurrence",
        "event_id": "e-2",
        "occurrences": 2,
        "last_seen": "2026-03-02T00:00:00Z",
    }
    assert all(m.timestamp == "2026-03-02T00:00:05Z" for m in out.messages)
    assert [(s, t, p["id"]) for s, t, p in _kept(store)] == [
        (m.seq, m.type, m.payload["id"]) for m in out.messages
    ]
    assert store.last_seq() == 13
    assert hub.seq == 10  # numbers drawn, nothing delivered: the writer delivers after COMMIT


def test_status_moves_are_announced_and_redelivery_is_silent(store: SqliteStore) -> None:
    hub = Hub()
    store.write([WriteBatch(drifts=[DRIFT], received_at="t1")], Publisher(hub, [_pending(DRIFT)]))
    change = StatusChange("d-1", "resolved", "reverted", capture_baseline=True)
    again = WriteBatch(drifts=[DRIFT], status_changes=[change], received_at="t2")
    [out] = store.write([again], Publisher(hub, [_pending(DRIFT)]))
    assert [(m.seq, m.type) for m in out.messages] == [(2, "drift_update")]
    assert out.messages[0].payload["status"] == "resolved"
    assert out.messages[0].payload["update"] == {
        "reason": "status",
        "status": "resolved",
        "previous_status": "detected",
        "updated_at": "t2",
        "baseline_captured": True,
    }
    # Refused moves say nothing.
    [out] = store.write(
        [WriteBatch(status_changes=[StatusChange("d-1", "investigating")], received_at="t3")],
        Publisher(hub, [[]]),
    )
    assert out.messages == [] and out.updates == []
    assert len(_kept(store)) == 2


def test_group_numbers_batches_in_order(store: SqliteStore) -> None:
    hub = Hub()
    other = replace(DRIFT, id="d-9", resource_id="i-9", event_id="e-9")
    batches = [
        WriteBatch(drifts=[DRIFT], received_at="t"),
        WriteBatch(received_at="t"),
        WriteBatch(drifts=[other], received_at="t"),
    ]
    plain = PendingMessage("state", "state_change", {"n": 1})
    outs = store.write(batches, Publisher(hub, [_pending(DRIFT), [plain], _pending(other)]))
    assert [[m.seq for m in o.messages] for o in outs] == [[1], [2], [3]]
    assert [m.payload.get("id") for o in outs for m in o.messages] == ["d-1", None, "d-9"]


def test_a_failed_publish_keeps_nothing(store: SqliteStore) -> None:
    def broken(batches: object, outcomes: list[WriteOutcome]) -> list[list[object]]:
        raise RuntimeError("hub gone")

    with pytest.raises(RuntimeError, match="hub gone"):
        store.write([WriteBatch(drifts=[DRIFT], received_at="t")], broken)
    assert store.drift("d-1") is None and _kept(store) == []
    # The store is usable again and the drift is new on retry.
    [out] = store.write([WriteBatch(drifts=[DRIFT], received_at="t")])
    assert out.new_drifts == {"d-1"} and out.messages == ()
