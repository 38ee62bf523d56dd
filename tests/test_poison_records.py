"""Any JSON value in any field of a real record: a clean decode or a DecodeError, never a crash.

Property tests (hypothesis, bounded examples) over real records (CloudTrail, Falco,
Kubernetes audit from ../shared/realdata; GCP and Azure from tests/data), the demo's
drift-making records against the demo state, and every stage a record goes through:
decoding, detection, and the store write.
"""

from __future__ import annotations

import asyncio
import copy
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.app.demo_replay import demo_records
from monitor.detect import Detection, Detector
from monitor.engine import build_detector
from monitor.hub import Hub
from monitor.pipeline import Pipeline
from monitor.store import EventFilter, SqliteStore, WriteBatch
from monitor.types import ChangeEvent, DecodeError, FalcoAlert, SkippedChange
from streams.files import read_documents
from streams.formats import decoder_for
from tests.support.realdata import CLOUDTRAIL, FALCO, K8S, cloudtrail_records, unwrap
from tests.support.records import DEMO_STATE, resize, template

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
EXAMPLES = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Path_ = tuple[str | int, ...]


def _docs(path: Path) -> list[Any]:
    return [unwrap(raw.doc) for raw in read_documents(path) if raw.error is None]


@functools.cache
def seeds() -> list[tuple[str, Any]]:
    """(format, document): a few records of every kind the decoders know."""
    out: list[tuple[str, Any]] = [("cloudtrail", r) for r in demo_records()]
    out += [("cloudtrail", r) for r in cloudtrail_records("awsdocs_examples")[:20]]
    out += [("cloudtrail", r) for r in cloudtrail_records("falco_trace_files")]
    for path in sorted(FALCO.iterdir())[:4]:
        out += [("falco", d) for d in _docs(path)[:3]]
    for path in sorted((K8S / "falco_trace_files").iterdir())[:12]:
        out += [("k8s_audit", d) for d in _docs(path)]
    out += [("gcp_audit", d) for d in _docs(DATA / "gcp_audit_entries.json")]
    out += [("azure_activity", d) for d in _docs(DATA / "azure_activity_eventdata.json")]
    out += [("azure_activity", d) for d in _docs(DATA / "azure_activity_export.json")]
    assert CLOUDTRAIL.is_dir() and len(out) > 50
    return out


def paths(doc: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    """Every place a value sits in a document, the document itself included."""
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for n, value in enumerate(doc[:8]):
            yield from paths(value, (*prefix, n))


def replaced(doc: Any, where: Path_, value: Any) -> Any:
    if not where:
        return value
    doc = copy.deepcopy(doc)
    node = doc
    for step in where[:-1]:
        node = node[step]
    node[where[-1]] = value
    return doc


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what orjson parses to int
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["", "[x]", "null", "2024-01-01T00:00:00Z", "arn:aws:iam::1:user/a"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def poisoned(draw: st.DrawFn) -> tuple[str, Any]:
    """A real record with one value (anywhere in it) replaced by any JSON value."""
    fmt, doc = draw(st.sampled_from(seeds()))
    where = draw(st.sampled_from(list(paths(doc))))
    return fmt, replaced(doc, where, draw(json_values))


@functools.cache
def detector() -> Detector:
    return build_detector([ROOT / DEMO_STATE])


def decode(fmt: str, doc: Any) -> list[Any]:
    """The format's decoder called directly: any exception other than DecodeError escapes."""
    items = list(decoder_for(fmt, cluster="test")(doc))
    for item in items:
        assert isinstance(item, ChangeEvent | FalcoAlert | DecodeError | SkippedChange), item
    return items


def _readable(event: ChangeEvent) -> None:
    """Everything the rest of Driftline reads of an event has the type it promises."""
    for text in (event.event_id, event.event_name, event.event_source, event.event_time):
        assert isinstance(text, str)
    for maybe in (event.region, event.account_id, event.source_ip, event.user_agent):
        assert maybe is None or isinstance(maybe, str), maybe
    assert isinstance(event.actor_key, str) and isinstance(event.actor.key, str)
    orjson.dumps(event.as_dict())


@EXAMPLES
@given(poisoned())
def test_any_value_anywhere_decodes_cleanly_or_is_a_decode_error(case: tuple[str, Any]) -> None:
    fmt, doc = case
    for item in decode(fmt, doc):
        if isinstance(item, ChangeEvent):
            _readable(item)


@EXAMPLES
@given(poisoned())
def test_any_decoded_record_is_detected_and_stored(case: tuple[str, Any]) -> None:
    fmt, doc = case
    batch = WriteBatch(received_at="2026-01-01T00:00:00Z")
    for item in decode(fmt, doc):
        if isinstance(item, FalcoAlert):
            batch.alerts.append(item)
        elif isinstance(item, ChangeEvent):
            detection = detector().detect(item)
            batch.events.append((item, "info"))
            batch.drifts.extend(detection.drifts)
            for drift in detection.drifts:
                orjson.dumps(drift.as_dict())
    store().write([batch])


@functools.cache
def store() -> SqliteStore:
    return SqliteStore(":memory:")


def test_a_wrongly_typed_user_agent_or_identity_is_not_a_crash() -> None:
    """The shapes that made whole requests fail (issue 13, item 1), one by one."""
    base = next(r for r in demo_records() if r["eventName"] == "ModifyInstanceAttribute")
    for where, value in (
        (("userAgent",), 7),
        (("userAgent",), True),
        (("userIdentity", "type"), ["IAMUser"]),
        (("userIdentity", "arn"), {"a": 1}),
        (("userIdentity", "principalId"), 12),
        (("awsRegion",), ["us-east-1"]),
        (("sourceIPAddress",), {"ip": 1}),
    ):
        doc = replaced(base, where, value)
        batch = WriteBatch(received_at="2026-01-01T00:00:00Z")
        for item in decode("cloudtrail", doc):
            if isinstance(item, ChangeEvent):
                _readable(item)
                batch.events.append((item, "info"))
                batch.drifts.extend(detector().detect(item).drifts)
        store().write([batch])


# ------------------------------------------------------------ isolation in the write group


def _valid(n: int) -> ChangeEvent:
    item = decode("cloudtrail", resize(f"iso-{n}", f"m5.{n}xlarge"))[0]
    assert isinstance(item, ChangeEvent)
    return item


def _unbindable(event_id: str) -> ChangeEvent:
    """What a decoder bug would hand on: a provider SQLite cannot bind."""
    record = template("ModifyInstanceAttribute")
    name, when = "ModifyInstanceAttribute", "2026-01-01T00:00:00Z"
    bad: Any = {"x": 1}
    return ChangeEvent(event_id, "ec2.amazonaws.com", name, when, record, provider=bad)


class _Failing(Detector):
    """A detector with a bug that shows on one event."""

    def detect(self, event: ChangeEvent) -> Detection:
        if event.event_id == "bug":
            raise KeyError("a detector bug")
        return super().detect(event)


async def test_a_record_the_store_refuses_costs_only_that_record() -> None:
    store = SqliteStore(":memory:")
    d = detector()
    pipeline = Pipeline(_Failing(d.catalogue, d.severity, d.index), store, Hub())
    await pipeline.start()
    try:
        valid = [[_valid(10 * c + n) for n in range(3)] for c in range(8)]
        poison = [_valid(900), _unbindable("poison"), _valid(901), _valid_bug()]
        results = await asyncio.wait_for(
            asyncio.gather(
                *(pipeline.ingest(v, origin="http:cloudtrail") for v in valid),
                pipeline.ingest(poison, origin="http:cloudtrail"),
            ),
            timeout=20,
        )
    finally:
        await pipeline.stop()
    assert [r.accepted for r in results] == [3] * 8 + [2]
    last = results[-1]
    assert last.rejected == 2
    assert last.reasons == {"store write failed": 1, "detection failed": 1}
    assert {p for p, _ in last.failures} == {"event poison", "event bug"}
    stored = {row["id"] for row in store.events(EventFilter(), 1, 100)[0]}
    assert stored == {f"iso-{n}" for n in [*range(80), 900, 901] if n % 10 < 3 or n > 800}
    letters, total = store.dead_letters(1, 10)
    assert total == 2
    assert {(x["source"], x["topic"]) for x in letters} == {
        ("http:cloudtrail", "event poison"),
        ("http:cloudtrail", "event bug"),
    }
    assert all(x["value_size"] > 0 for x in letters)


def _valid_bug() -> ChangeEvent:
    item = decode("cloudtrail", resize("bug", "m5.bugxlarge"))[0]
    assert isinstance(item, ChangeEvent)
    return item
