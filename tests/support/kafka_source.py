"""Kafka test helpers shared by the Kafka test modules: sinks, sources, waits, fixtures."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.detect import Detector
from monitor.pipeline import Decoded, IngestResult
from monitor.store import DriftFilter, SqliteStore
from monitor.tfstate import StateIndex, parse_state
from monitor.types import ChangeEvent, FalcoAlert
from rules import load_catalogue, load_severity
from streams.documents import decode_bytes
from streams.formats import decoder_for
from streams.kafka import KafkaSource
from streams.kafka_options import KafkaOptions
from streams.triage import DECODE, judge
from tests.support.kafka_broker import (
    GROUP_OPTIONS,
    Broker,
    committed_offsets,
    external_bootstrap,
    kafka_broker,
    unavailable_reason,
)
from tests.support.realdata import cloudtrail_records
from tests.support.replay_state import replay_state

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parents[2]  # the repository
CLOCK = "2026-01-01T00:00:00Z"


# -- helpers ----------------------------------------------------------------------------


@functools.cache
def invictus() -> list[dict[str, Any]]:
    return cloudtrail_records("invictus_aws_dataset")


@functools.cache
def writes() -> list[dict[str, Any]]:
    """The invictus records the fetch worker hands over decoded, with their event ids (it
    hands read-only ones over as a count: tests that follow records by id use these)."""
    decoder = decoder_for("cloudtrail")
    return [r for r in invictus() if judge(decode_bytes(orjson.dumps(r), decoder)) == DECODE]


def build_detector() -> Detector:
    """A detector over the state Terraform's own calls in the invictus log declare."""
    catalogue = load_catalogue()
    doc = replay_state(invictus(), catalogue)
    index = StateIndex([parse_state(doc, "replayed.tfstate")], catalogue.identifiers)
    return Detector(catalogue, load_severity(), index, clock=lambda: CLOCK)


def identity(item: Decoded) -> str:
    if isinstance(item, ChangeEvent):
        return f"event:{item.event_id}"
    if isinstance(item, FalcoAlert):
        return f"alert:{item.id}"
    return f"error:{item.reason}"


class Sink:
    """An on_items callback that records what it got and lets a test await a condition."""

    def __init__(self, behaviour: Callable[[int, list[Decoded]], Awaitable[None]] | None = None):
        self.calls: list[list[Decoded]] = []
        self.failures = 0
        self.behaviour = behaviour
        self._cond = asyncio.Condition()

    async def __call__(self, items: list[Decoded]) -> IngestResult:
        n = len(self.calls) + self.failures
        if self.behaviour is not None:
            try:
                await self.behaviour(n, items)
            except Exception:
                self.failures += 1
                async with self._cond:
                    self._cond.notify_all()
                raise
        async with self._cond:
            self.calls.append(items)
            self._cond.notify_all()
        return IngestResult(accepted=len(items))

    @property
    def items(self) -> list[Decoded]:
        return [i for call in self.calls for i in call]

    def event_ids(self) -> list[str]:
        return [i.event_id for i in self.items if isinstance(i, ChangeEvent)]

    async def wait(self, predicate: Callable[[], bool], timeout: float = 30) -> None:
        async with self._cond:
            await asyncio.wait_for(self._cond.wait_for(predicate), timeout)


async def until(predicate: Callable[[], Any], timeout: float = 30, what: str = "") -> None:
    """Poll a condition that has no event to await (broker-side or status state)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(0.05)


async def until_committed(
    bootstrap: str, group: str, topic: str, ends: dict[int, int], timeout: float = 30
) -> dict[int, int | None]:
    """Poll the group's committed offsets (read by a separate client) until they reach `ends`."""
    deadline = time.monotonic() + timeout
    while True:
        got = await committed_offsets(bootstrap, group, topic, max(ends) + 1)
        if all(got.get(p) == end for p, end in ends.items()):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"committed offsets {got}, expected {ends}")
        await asyncio.sleep(0.1)


def make_source(
    broker: Broker, topics: dict[str, str], group: str, on_items: Any, **kw: Any
) -> KafkaSource:
    options = {
        "consumer_options": dict(GROUP_OPTIONS),
        "client_options": {"request_timeout_ms": 5000},
        "poll_interval": 0.1,
        "probe_interval": 0.3,
        "backoff_initial": 0.05,
        "backoff_max": 1.0,
        "commit_timeout": 10.0,
        **kw,
    }
    return kafka_source(broker.bootstrap, topics, group, on_items, **options)


_COLLABORATORS = ("dead_letter", "source_for", "decoders", "clock")


def kafka_source(
    bootstrap: str, topics: dict[str, str], group: str, on_items: Any, **kw: Any
) -> KafkaSource:
    """A KafkaSource from the options and collaborators of one keyword list."""
    given = {k: kw.pop(k) for k in _COLLABORATORS if k in kw}
    return KafkaSource(KafkaOptions(bootstrap, topics, group, **kw), on_items, **given)


@contextlib.asynccontextmanager
async def running(source: KafkaSource) -> AsyncIterator[KafkaSource]:
    await source.start()
    try:
        yield source
    finally:
        await source.stop()


def ct_values(records: Iterable[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(r) for r in records]


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    async with kafka_broker(tmp_path) as b:
        yield b


@pytest.fixture
async def owned_broker(tmp_path: Path) -> AsyncIterator[Broker]:
    """A Tansu process this test may stall, behind a proxy it may cut."""
    if external_bootstrap() is not None:
        pytest.skip("stalling or cutting off the broker needs a broker process the test owns")
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    async with kafka_broker(tmp_path, proxied=True) as b:
        yield b


def drift_ids(store: SqliteStore) -> list[str]:
    rows, total = store.drifts(DriftFilter(), 1, 100_000)
    assert total == len(rows)
    return sorted(r["id"] for r in rows)
