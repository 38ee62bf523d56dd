"""Subscription filters, resume planning, the hub's fan-out (filters before queueing, a
batch per flush) and its ready WebSocket frames."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.filters import KEYS, FilterError, parse_filter, parse_query_filter
from monitor.hub import MAX_SEQ, Hub, Message, parse_seq, parse_seq_text, plan_resume
from monitor.store import drift_payload
from tests.support.drifts import DRIFT

DRIFT_MSG = drift_payload(DRIFT)
EVENT_MSG: dict[str, Any] = {
    "id": "e-9",
    "severity": "info",
    "provider": "gcp",
    "account_id": "proj-1",
    "region": "europe-west1",
    "actor": {"user_name": "carol@example.com", "arn": None, "principal_id": None},
}
FALCO_MSG: dict[str, Any] = {
    "id": "a-1",
    "severity": "critical",
    "provider": "aws",
    "output_fields": {"ct.user.arn": "arn:aws:iam::1:user/bob", "ct.region": "us-east-1"},
}

# Each key, with a value the sample drift has and one it has not.
EACH_KEY = [
    ("severity", "medium", "critical"),
    ("kind", "modified", "unmanaged"),
    ("resource_type", "aws_instance", "aws_s3_bucket"),
    ("provider", "aws", "gcp"),
    ("account_id", "1", "2"),
    ("region", "us-east-1", "eu-west-1"),
    ("actor", "u", "bob"),
    ("field", "instance_type", "tags"),
    ("status", "detected", "resolved"),
]


def _msg(type_: str, payload: dict[str, Any], topic: str = "drifts") -> Message:
    return Message(1, topic, type_, "t", payload)


@pytest.mark.parametrize(("key", "has", "other"), EACH_KEY)
def test_each_key_matches_the_drift_payload(key: str, has: str, other: str) -> None:
    msg = _msg("drift", DRIFT_MSG)
    assert parse_filter({key: [has]}).matches(msg.facets())
    assert parse_filter({key: has}).matches(msg.facets())
    assert not parse_filter({key: [other]}).matches(msg.facets())
    assert parse_filter({key: [other, has]}).matches(msg.facets())


def test_keys_combine_and_actor_matches_name_or_arn() -> None:
    facets = _msg("drift", DRIFT_MSG).facets()
    assert parse_filter({"severity": ["medium"], "account_id": "1"}).matches(facets)
    assert not parse_filter({"severity": ["medium"], "account_id": "2"}).matches(facets)
    assert parse_filter({"actor": "arn:aws:iam::1:user/u"}).matches(facets)


def test_events_and_alerts_have_their_facets_and_other_messages_pass() -> None:
    event = _msg("event", EVENT_MSG, "events").facets()
    assert parse_filter({"provider": "gcp", "actor": "carol@example.com"}).matches(event)
    assert not parse_filter({"status": "detected"}).matches(event)  # an event has no status
    falco = _msg("falco", FALCO_MSG, "events").facets()
    assert parse_filter({"severity": "critical", "actor": "arn:aws:iam::1:user/bob"}).matches(falco)
    assert parse_filter({"severity": "low"}).matches(_msg("state_change", {}, "state").facets())


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ([], "filter"),
        ({"colour": ["red"]}, "filter.colour"),
        ({"severity": ["urgent"]}, "filter.severity"),
        ({"severity": []}, "filter.severity"),
        ({"severity": [1]}, "filter.severity"),
        ({"kind": {"a": 1}}, "filter.kind"),
        ({"status": "open"}, "filter.status"),
        ({"region": [""]}, "filter.region"),
        ({"account_id": ["x"] * 51}, "filter.account_id"),
    ],
)
def test_bad_filters_name_the_field(raw: Any, field: str) -> None:
    with pytest.raises(FilterError) as err:
        parse_filter(raw)
    assert err.value.field == field


def test_query_parameters_are_filters_except_the_stream_params() -> None:
    f = parse_query_filter(
        {"topics": "drifts", "severity": "critical,high", "account_id": "1"}, ["topics"]
    )
    assert f.as_dict() == {"severity": ["critical", "high"], "account_id": ["1"]}
    with pytest.raises(FilterError) as err:
        parse_query_filter({"sevrity": "high"}, ["topics"])
    assert err.value.field == "sevrity"


def test_the_hub_filters_before_queueing() -> None:
    hub = Hub(queue_size=2)
    sub = hub.subscribe(["drifts"])
    sub.filter = parse_filter({"severity": "critical"})
    other = {**DRIFT_MSG, "severity": "critical"}
    hub.deliver([Message(hub.next_seq(), "drifts", "drift", "t", DRIFT_MSG) for _ in range(5)])
    assert not sub.queue and not sub.lagged  # five non-matching messages took no room
    hub.deliver([Message(hub.next_seq(), "drifts", "drift", "t", other)])
    assert [m.payload["severity"] for m in sub.queue] == ["critical"]


def test_every_filter_key_is_known() -> None:
    assert {k for k, _, _ in EACH_KEY} == set(KEYS)


# -- resume ---------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    requested=st.integers(min_value=0, max_value=MAX_SEQ),
    head=st.integers(min_value=0, max_value=10**6),
    kept=st.one_of(st.none(), st.integers(min_value=0, max_value=10**6)),
)
def test_resume_never_strands_a_client(requested: int, head: int, kept: int | None) -> None:
    oldest = None if kept is None or head == 0 else 1 + kept % head
    r = plan_resume(requested, head, oldest)
    assert 0 <= r.after <= head  # never beyond what exists: live messages will follow
    if requested > head:
        assert r.kind == "reset" and r.after == head
    elif r.kind == "gap":
        first = oldest if oldest is not None else head + 1
        assert requested < first - 1 and r.after == first - 1 and r.first_available == first
    else:
        assert r.kind == "replay" and r.after == requested


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(st.integers(), st.floats(), st.booleans(), st.none(), st.text(max_size=5)))
def test_ws_resume_points_are_integers_in_range(raw: Any) -> None:
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= MAX_SEQ:
        assert parse_seq(raw) == raw
    else:
        with pytest.raises(ValueError, match="sequence number"):
            parse_seq(raw)


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(st.text(max_size=30), st.integers().map(str)))
def test_sse_resume_points_are_digits_in_range(raw: str) -> None:
    if raw.isascii() and raw.isdigit() and int(raw) <= MAX_SEQ:
        assert parse_seq_text(raw) == int(raw)
    else:
        with pytest.raises(ValueError, match="sequence number"):
            parse_seq_text(raw)


@pytest.mark.parametrize("raw", ["-1", "1e3", " 5", "0x10", str(2**64), "9" * 4300, "١٢", ""])
def test_bad_resume_points(raw: str) -> None:
    with pytest.raises(ValueError, match="sequence number"):
        parse_seq_text(raw)


# -- fan-out --------------------------------------------------------------------------------


async def test_what_arrives_within_a_flush_goes_out_in_one_batch() -> None:
    hub = Hub(flush_seconds=0.5)
    sub = hub.subscribe(["drifts"])
    reader = asyncio.create_task(sub.next_batch())
    await asyncio.sleep(0)  # the reader is waiting
    hub.deliver([Message(hub.next_seq(), "drifts", "drift", "t", DRIFT_MSG)])
    await asyncio.sleep(0)  # a reader woken per message would take the first one alone now
    hub.deliver([Message(hub.next_seq(), "drifts", "drift", "t", DRIFT_MSG)])
    batch = await asyncio.wait_for(reader, 10)
    assert [m.seq for m in batch] == [1, 2]


async def test_a_quiet_wait_ends_empty_after_its_timeout() -> None:
    sub = Hub().subscribe(["drifts"])
    assert await sub.next_batch(0.01) == []


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 200_000])
def test_ws_frames_are_whole_unmasked_text_frames(size: int) -> None:
    msg = Message(7, "drifts", "drift", "t", {"pad": "x" * size})
    frame, body = msg.ws_frame(), msg.ws_bytes()
    assert frame[0] == 0x81 and not frame[1] & 0x80  # FIN + text, no mask
    n = frame[1]
    if n == 126:
        n, head = struct.unpack("!H", frame[2:4])[0], 4
    elif n == 127:
        n, head = struct.unpack("!Q", frame[2:10])[0], 10
    else:
        head = 2
    assert n == len(body) and frame[head:] == body


async def test_a_parked_reader_is_bypassed_by_a_sink_that_takes_the_batch() -> None:
    hub = Hub(flush_seconds=0)
    sub = hub.subscribe(["drifts"])
    taken: list[list[int]] = []
    accept = True

    def sink(batch: list[Message]) -> bool:
        if accept:
            taken.append([m.seq for m in batch])
        return accept

    sub.sink = sink
    reader = asyncio.create_task(sub.next_batch())
    await asyncio.sleep(0)  # parked
    hub.deliver([Message(hub.next_seq(), "drifts", "drift", "t", DRIFT_MSG)])
    assert taken == [[1]] and not sub.queue and not reader.done()
    accept = False  # a slow client: the reader is woken and takes the batch itself
    hub.deliver([Message(hub.next_seq(), "drifts", "drift", "t", DRIFT_MSG)])
    assert [m.seq for m in await asyncio.wait_for(reader, 10)] == [2]
    # Not parked (it holds a batch it has not written): the sink must not overtake it.
    accept = True
    hub.deliver([Message(hub.next_seq(), "drifts", "drift", "t", DRIFT_MSG)])
    assert taken == [[1]] and [m.seq for m in sub.queue] == [3]
