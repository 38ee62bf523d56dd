"""A sender per output: its queue delivered in order, retried with backoff, dead-lettered.

The head of the queue blocks the rest until it is delivered or dead, so a receiver sees
deliveries in the order their messages were committed. Results are recorded in batches:
after a crash, what was sent but not yet recorded is sent again with the same
Delivery-Id (at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from monitor.outputs.email import EmailTransport
from monitor.outputs.kafka import KafkaTransport
from monitor.outputs.spec import OutputSpec
from monitor.outputs.transport import HttpTransport, Transport
from monitor.store import Delivery, DeliveryResult, Outbox

log = logging.getLogger("driftline.outputs")
BATCH = 256  # deliveries read per round
RECORD_SECONDS = 1.0  # results are recorded at least this often while a batch is sent
DEGRADED_AFTER = 3  # consecutive failed attempts before the output shows as degraded


def transport_for(spec: OutputSpec, link_base: str | None) -> Transport:
    """A new transport for `spec`'s type (its connection opens on the first send)."""
    if spec.type == "email":
        return EmailTransport(link_base)
    if spec.type == "kafka":
        return KafkaTransport()
    return HttpTransport(link_base)


@dataclass
class SenderStats:
    delivered: int = 0
    failed_attempts: int = 0
    dead: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_success_at: float | None = None


class Sender:
    """Delivers one output's queue; `wake()` when rows were added or retried."""

    def __init__(
        self,
        spec: OutputSpec,
        store: Outbox,
        link_base: str | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.spec = spec
        self.store = store
        self.link_base = link_base
        self.clock = clock
        self.rng = rng or random.Random()
        self.stats = SenderStats()
        self.transport = transport_for(spec, link_base)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_slot = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"output {self.spec.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.transport.close()

    def wake(self) -> None:
        self._wake.set()

    def degraded(self) -> bool:
        return self.stats.consecutive_failures >= DEGRADED_AFTER

    async def _run(self) -> None:
        while True:
            try:
                wait = await self._round()
            except Exception:  # a store or render fault: logged, retried, never fatal
                log.exception("output %s", self.spec.name)
                wait = 1.0
            if wait != 0.0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)

    async def _round(self) -> float | None:
        """Send what is due; the seconds until the head is due (None: idle, 0: go on)."""
        self._wake.clear()  # a wake from now on ends the next wait early
        if not self.spec.enabled:
            return None
        due = await asyncio.to_thread(self.store.due_deliveries, self.spec.id, BATCH)
        if not due:
            return None
        results: list[DeliveryResult] = []
        recorded = self.clock()
        wait = 0.0
        for d in due:
            now = self.clock()
            if d.next_at > now:
                wait = d.next_at - now
                break
            result = await self._attempt(d)
            results.append(result)
            if result.status == "pending":  # failed: the head waits for its retry
                wait = max(0.001, result.next_at - self.clock())
                break
            if self.clock() - recorded >= RECORD_SECONDS:
                await self._record(results)
                results, recorded = [], self.clock()
        await self._record(results)
        return wait

    async def _record(self, results: list[DeliveryResult]) -> None:
        if results:
            await asyncio.to_thread(self.store.record_deliveries, self.spec.id, results)

    async def _attempt(self, d: Delivery) -> DeliveryResult:
        spec, now = self.spec, self.clock()
        if now - d.created_at > spec.max_age_seconds:
            return self._dead(d, d.attempts, f"older than {spec.max_age_seconds:g} s", now)
        await self._pace()
        outcome = await self.transport.send(spec, d, self.clock())
        if outcome.ok:
            self.stats.delivered += 1
            self.stats.consecutive_failures = 0
            self.stats.last_success_at = self.clock()
            return DeliveryResult(d.id, "delivered", d.attempts + 1, 0.0, None, self.clock())
        error = outcome.error or "failed"
        attempts = d.attempts + 1
        self.stats.failed_attempts += 1
        self.stats.consecutive_failures += 1
        self.stats.last_error = error
        if attempts >= spec.max_attempts:
            return self._dead(d, attempts, f"{attempts} attempts; last: {error}", now)
        backoff = min(spec.max_backoff_seconds, spec.backoff_seconds * 2 ** (attempts - 1))
        delay = max(backoff * self.rng.uniform(0.5, 1.0), outcome.wait_hint)
        return DeliveryResult(d.id, "pending", attempts, self.clock() + delay, error, None)

    def _dead(self, d: Delivery, attempts: int, error: str, now: float) -> DeliveryResult:
        self.stats.dead += 1
        log.warning("output %s: delivery %d dead: %s", self.spec.name, d.id, error)
        return DeliveryResult(d.id, "dead", attempts, 0.0, error, now)

    async def _pace(self) -> None:
        """At most `rate_limit_per_minute` sends a minute; the rest wait their turn."""
        rate = self.spec.rate_limit_per_minute
        if rate is None:
            return
        now = self.clock()
        if self._next_slot > now:
            await asyncio.sleep(self._next_slot - now)
        self._next_slot = max(now, self._next_slot) + 60.0 / rate
