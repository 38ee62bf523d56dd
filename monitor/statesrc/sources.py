"""Many state sources kept current: polled with backoff, the last good state kept.

A poll asks each due source for its listing (cheap change signals), downloads only the
states whose signal moved, and swaps the source's tables in one assignment, so readers on
other threads see either the old or the new view. A state that fails to parse keeps the
last good one; a state that disappears stays (last good) and is reported as missing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from monitor.clock import utc_now
from monitor.statesrc.backend import Backend, Entry, Unreachable
from monitor.statesrc.http import HttpBackend
from monitor.statesrc.local import LocalBackend
from monitor.statesrc.s3 import S3Backend, boto3_factory
from monitor.statesrc.spec import SourceError, SourceSpec
from monitor.statesrc.tfc import TfcBackend
from monitor.tfstate import StateError, TfState, parse_state_bytes
from monitor.types import Clock

log = logging.getLogger("driftline.state")


@dataclass(frozen=True)
class Timing:
    """How often sources are polled, and how far a failing one backs off."""

    local_seconds: float = 2.0
    remote_seconds: float = 30.0
    max_backoff_seconds: float = 300.0

    def interval(self, spec: SourceSpec) -> float:
        if spec.poll_seconds:
            return spec.poll_seconds
        return self.remote_seconds if spec.remote else self.local_seconds


def make_backend(spec: SourceSpec) -> Backend:
    """The client for a source's kind (S3 credentials: the standard AWS chain)."""
    if spec.kind == "file":
        return LocalBackend(spec.location)
    if spec.kind == "s3":
        return S3Backend(spec.location, boto3_factory(spec.endpoint))
    if spec.kind == "http":
        return HttpBackend(spec.location, spec.creds)
    return TfcBackend(spec.location, spec.creds.token or "", spec.endpoint)


@dataclass
class Source:
    """One source's last good states and how its polls went."""

    spec: SourceSpec
    backend: Backend
    states: dict[str, TfState] = field(default_factory=dict)
    signals: dict[str, str] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)  # state key -> why it was not used
    missing: dict[str, str] = field(default_factory=dict)  # state key -> when it went
    error: str | None = None  # the listing failed: unreachable, denied, ...
    failures: int = 0
    due: float = 0.0
    last_poll: str | None = None
    last_change: str | None = None

    @property
    def status(self) -> str:
        if self.error:
            return "error"
        if self.bad or self.missing:
            return "degraded"
        return "ok"

    def view(self) -> dict[str, Any]:
        """The source as /health and /api/v1/state show it (no credentials)."""
        states = list(self.states.values())
        return {
            **self.spec.public(),
            "status": self.status,
            "error": self.error,
            "resource_count": sum(len(s.managed) for s in states),
            "serial": max((s.serial for s in states), default=None),
            "last_poll": self.last_poll,
            "last_change": self.last_change,
            "failures": self.failures,
            "states": [s.summary() for s in states],
            "bad_states": [{"path": k, "error": v} for k, v in sorted(self.bad.items())],
            "missing": [{"path": k, "since": v} for k, v in sorted(self.missing.items())],
        }


@dataclass(frozen=True)
class PollResult:
    """What one poll changed: states replaced or added, and states newly gone."""

    changed: tuple[TfState, ...] = ()
    missing: tuple[str, ...] = ()


class StateSources:
    """The configured and API-added sources; every method but the views blocks (threads)."""

    def __init__(
        self,
        specs: Iterable[SourceSpec],
        timing: Timing = Timing(),
        clock: Clock = utc_now,
        backend: Callable[[SourceSpec], Backend] = make_backend,
        monotonic: Callable[[], float] = time.monotonic,
        workers: int = 8,
    ) -> None:
        self.timing = timing
        self.clock = clock
        self.backend = backend
        self.monotonic = monotonic
        self.workers = workers
        self.sources: list[Source] = []
        for spec in specs:
            self.add(spec)

    def add(self, spec: SourceSpec) -> Source:
        """A new source, polled at the next poll; SourceError if it is already watched."""
        if any(s.spec.id == spec.id for s in self.sources):
            raise SourceError(f"{spec.url}: already a state source")
        source = Source(spec, self.backend(spec))
        self.sources = [*self.sources, source]  # copied: readers iterate the old list
        return source

    def remove(self, source_id: str) -> Source | None:
        gone = next((s for s in self.sources if s.spec.id == source_id), None)
        if gone is not None:
            self.sources = [s for s in self.sources if s is not gone]
        return gone

    def get(self, source_id: str) -> Source | None:
        return next((s for s in self.sources if s.spec.id == source_id), None)

    def states(self) -> list[TfState]:
        return [state for s in self.sources for state in s.states.values()]

    def views(self) -> list[dict[str, Any]]:
        return [s.view() for s in self.sources]

    def error(self) -> str | None:
        """The first problem of any source, for the one-line state status."""
        for s in self.sources:
            if s.error:
                return f"{s.spec.url}: {s.error}"
            for key, why in s.bad.items():
                return f"{key}: {why}"
            for key in s.missing:
                return f"{key}: state disappeared (the last good one is kept)"
        return None

    def load(self) -> list[TfState]:
        """The first load: every source must answer with usable states, else StateError."""
        with ThreadPoolExecutor(self.workers) as pool:
            for source in self.sources:
                self._poll(source, pool, strict=True)
        return self.states()

    def poll(self, force: bool = False, only: str | None = None) -> PollResult:
        """Poll the sources that are due (all if `force`, or just `only`)."""
        now = self.monotonic()
        due = [
            s
            for s in self.sources
            if (only is None or s.spec.id == only) and (force or only or s.due <= now)
        ]
        changed: list[TfState] = []
        missing: list[str] = []
        with ThreadPoolExecutor(self.workers) as pool:
            for source in due:
                got, gone = self._poll(source, pool, strict=False)
                changed.extend(got)
                missing.extend(gone)
        return PollResult(tuple(changed), tuple(missing))

    def _poll(
        self, source: Source, pool: ThreadPoolExecutor, strict: bool
    ) -> tuple[list[TfState], list[str]]:
        spec, interval = source.spec, self.timing.interval(source.spec)
        source.last_poll = self.clock()
        try:
            entries = source.backend.listing()
        except Unreachable as exc:
            if strict:
                raise StateError(f"{spec.url}: {exc}") from None
            if source.error != str(exc):
                log.warning("state source %s: %s (keeping the last good state)", spec.url, exc)
            source.error = str(exc)
            source.failures += 1
            backoff = interval * 2 ** min(source.failures, 16)
            ceiling = max(interval, self.timing.max_backoff_seconds)
            source.due = self.monotonic() + min(backoff, ceiling)
            return [], []
        if strict and not entries:
            why = "no such file or directory" if spec.kind == "file" else "no state found"
            raise StateError(f"{spec.url}: {why}")
        source.error, source.failures = None, 0
        source.due = self.monotonic() + interval
        fresh = [e for e in entries if source.signals.get(e.key) != e.signal]
        loaded = list(pool.map(lambda e: self._load(source, e), fresh))
        return self._apply(source, entries, fresh, loaded, strict)

    def _load(self, source: Source, entry: Entry) -> TfState | str:
        """A parsed state, or why it could not be used."""
        try:
            raw = source.backend.fetch(entry)
            return parse_state_bytes(
                raw, entry.key, entry.modified, source.spec.url, entry.workspace
            )
        except (Unreachable, StateError) as exc:
            return str(exc)

    def _apply(
        self,
        source: Source,
        entries: list[Entry],
        fresh: list[Entry],
        loaded: list[TfState | str],
        strict: bool,
    ) -> tuple[list[TfState], list[str]]:
        now = self.clock()
        states, signals = dict(source.states), dict(source.signals)
        bad, missing = dict(source.bad), dict(source.missing)
        changed: list[TfState] = []
        for entry, got in zip(fresh, loaded, strict=True):
            if isinstance(got, str):
                if strict:
                    raise StateError(got)
                if bad.get(entry.key) != got:
                    log.warning("state %s not used, keeping the last good one: %s", entry.key, got)
                bad[entry.key] = got
                continue
            bad.pop(entry.key, None)
            signals[entry.key] = entry.signal
            states[entry.key] = got
            changed.append(got)
        listed = {e.key for e in entries}
        for key in list(bad):
            if key not in listed:
                bad.pop(key)
        gone = [k for k in states if k not in listed and k not in missing]
        for key in gone:
            log.warning("state %s disappeared (its last good state is kept)", key)
            missing[key] = now
        for key in [k for k in missing if k in listed]:
            missing.pop(key)
        source.states, source.signals, source.bad, source.missing = states, signals, bad, missing
        if changed:
            source.last_change = now
        return changed, gone
