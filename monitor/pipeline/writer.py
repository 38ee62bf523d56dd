"""Group commit: batches from concurrent callers written together, results in order."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from monitor.hub import Hub
from monitor.metrics import IngestMetrics
from monitor.pipeline.isolate import is_record_fault, write_alone
from monitor.pipeline.publish import PendingMessage, Publisher
from monitor.store import Router, StorageFault, Store, WriteBatch, WriteOutcome

log = logging.getLogger("driftline.store")

_Entry = tuple[WriteBatch, Sequence[PendingMessage], "asyncio.Future[WriteOutcome]"]


class StoreWriter:
    """Writes batches with group commit and hands results back in submission order.

    The statements of a group run on the event loop; only the COMMIT (the fsync) runs on a
    thread of its own, while the loop goes on and the next group gathers. A writer thread
    doing the statements would have to win the GIL back from a busy loop after every
    SQLite call (the sqlite3 module releases it around each step), which made a write
    hundreds of times slower under load.
    """

    def __init__(
        self, store: Store, hub: Hub, max_group: int = 512, metrics: IngestMetrics | None = None
    ) -> None:
        self.store = store
        self.hub = hub
        self.metrics = metrics or IngestMetrics()
        self.max_group = max_group
        self._pending: list[_Entry] = []
        self._executor: ThreadPoolExecutor | None = None
        self._drain: asyncio.Task[None] | None = None
        self.commits = 0
        # The storage fault of the last write (disk full, data dir gone), until one succeeds.
        self.fault: StorageFault | None = None
        # Queues deliveries to outputs in each write's transaction; told after each commit.
        self.router: Router | None = None
        self.on_commit: list[Callable[[], None]] = []

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="driftline-store")

    async def stop(self) -> None:
        while self._drain is not None:  # everything submitted is written first
            await asyncio.shield(self._drain)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def submit(
        self, batch: WriteBatch, messages: Sequence[PendingMessage] = ()
    ) -> WriteOutcome:
        """Write `batch` and publish those of `messages` it makes current, once committed."""
        if self._executor is None:
            raise RuntimeError("store writer is not running")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[WriteOutcome] = loop.create_future()
        self._pending.append((batch, messages, fut))
        if self._drain is None:
            # Started on the next loop turn: batches submitted meanwhile join the group.
            self._drain = loop.create_task(self._run(), name="driftline-store")
        return await fut

    async def _write(
        self, batches: Sequence[WriteBatch], pending: Sequence[Sequence[PendingMessage]]
    ) -> list[WriteOutcome]:
        """One transaction: statements here, COMMIT on the store's thread, then delivery."""
        try:
            outcomes = self.store.stage(batches, Publisher(self.hub, pending), self.router)
            started = time.perf_counter()
            await asyncio.get_running_loop().run_in_executor(
                self._executor, self.store.commit_staged
            )
        except Exception as exc:
            self._note_fault(exc)
            raise
        self._note_fault(None)
        committed = time.perf_counter()
        self.commits += 1
        # Commit order is delivery order.
        self.hub.deliver(m for o in outcomes for m in o.messages)
        m = self.metrics
        m.commit.observe(committed - started)
        m.commit_batches.observe(len(batches))
        m.stored_to_published.observe(time.perf_counter() - committed)
        for hook in self.on_commit:
            hook()
        return outcomes

    async def _run(self) -> None:
        try:
            while self._pending:
                group = self._pending[: self.max_group]
                del self._pending[: self.max_group]
                try:
                    outcomes = await self._write([b for b, _, _ in group], [m for _, m, _ in group])
                except Exception as exc:
                    if is_record_fault(exc):  # one record's content: find it, keep the rest
                        await self._one_by_one(group)
                    else:  # the store's own fault: surfaced to every waiting caller
                        self._settle(group, None, exc)
                    continue
                self._settle(group, outcomes, None)
        finally:
            self._drain = None

    async def probe(self) -> StorageFault | None:
        """Try a small write now (in turn with the groups); the fault it met, or None."""
        if self._executor is None:
            raise RuntimeError("store writer is not running")
        loop = asyncio.get_running_loop()
        # On the commit thread, which never deadlocks with a group: a group queues its
        # COMMIT there in the same loop step as its statements take the store's lock.
        try:
            await loop.run_in_executor(self._executor, self.store.probe)
        except StorageFault as exc:
            self._note_fault(exc)
            return exc
        self._note_fault(None)
        return None

    def _note_fault(self, exc: Exception | None) -> None:
        """Log storage faults when they start and end, not once per refused write."""
        if exc is not None and not isinstance(exc, StorageFault):
            return  # not about storage: says nothing of whether writes are durable
        fault = exc
        if (fault is None) == (self.fault is None):
            if fault is not None:
                self.fault = fault
            return
        if fault is not None:
            log.error("store writes refused: %s", fault)
        else:
            log.warning("store writes again after: %s", self.fault)
        self.fault = fault

    async def _one_by_one(self, group: list[_Entry]) -> None:
        for batch, messages, fut in group:
            try:
                outcome = await write_alone(self._write, batch, messages, batch.origin)
            except Exception as exc:
                if not fut.done():
                    fut.set_exception(exc)
                continue
            if not fut.done():
                fut.set_result(outcome)

    @staticmethod
    def _settle(
        group: list[_Entry], outcomes: list[WriteOutcome] | None, exc: Exception | None
    ) -> None:
        for n, (_, _, fut) in enumerate(group):
            if fut.done():
                continue
            if exc is not None:
                fut.set_exception(exc)
            else:
                assert outcomes is not None
                fut.set_result(outcomes[n])
