"""What /metrics costs: scrape latency with 10,000 drifts stored, and ingest while scraped.

python -m bench.metrics_scrape [--drifts 10000] [--scrapes 2000] [--batches 400] [--rounds 3]

Part 1: a daemon on a SQLite store in a temporary directory, `--drifts` drifts written to
it; then `--scrapes` GET /metrics one by one through the app in memory (httpx ASGITransport:
the guard, the key check, the SQL read of the counters, the families, the text), against
GET /health on the same client as the bare baseline. Printed: p50/p99/max of each, and the
ratio. Target: /metrics p99 <= 2 ms.

Part 2: `Pipeline.ingest` of `--batches` batches of 100 demo resize records (unique event
ids, SQLite store) by 8 concurrent callers, as shipped with a scraper rendering /metrics
every 100 ms, against a bare baseline in which the ingest path's metric updates are no-ops
and nothing scrapes. Rounds alternate; printed: records/s per round, the median ratio.
Target: >= 0.95 (no measurable slowdown).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from monitor.app import metrics
from monitor.app.config import Config
from monitor.app.daemon import Daemon
from monitor.store import WriteBatch
from streams.cloudtrail import decode_record
from tests.support.asgi import in_memory
from tests.support.drifts import DRIFT
from tests.support.records import DEMO_STATE, resize


def _config(base: Path) -> Config:
    state = base / "demo.tfstate"
    shutil.copy(DEMO_STATE, state)
    return Config(state=[str(state)], data_dir=str(base / "data"), state_poll_seconds=3600)


def _fill(daemon: Daemon, drifts: int) -> None:
    made = [
        replace(DRIFT, id=f"d-{n}", resource_id=f"i-{n}", event_id=f"e-{n}", severity=sev)
        for n, sev in zip(
            range(drifts), ["critical", "high", "medium", "low"] * drifts, strict=False
        )
    ]
    for start in range(0, drifts, 1000):
        daemon.store.write(
            [WriteBatch(drifts=made[start : start + 1000], received_at=DRIFT.detected_at)]
        )


def _pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def scrape_latency(drifts: int, scrapes: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        async with in_memory(_config(Path(tmp))) as app:
            await asyncio.to_thread(_fill, app.daemon, drifts)
            stored = (await asyncio.to_thread(app.daemon.store.counters)).get("drifts.total", 0)
            timings: dict[str, list[float]] = {"/health": [], "/metrics": []}
            for _ in range(50):  # warm both paths
                for path in timings:
                    await app.client.get(path)
            for _ in range(scrapes):
                for path, samples in timings.items():
                    t0 = time.perf_counter()
                    resp = await app.client.get(path)
                    samples.append((time.perf_counter() - t0) * 1000)
                    assert resp.status_code == 200, resp.text
            size = len((await app.client.get("/metrics")).content)
            render: list[float] = []
            cpu: list[float] = []
            for _ in range(scrapes):  # the handler's own work, without the HTTP client
                t0, c0 = time.perf_counter(), time.process_time()
                await metrics.render(app.daemon)
                render.append((time.perf_counter() - t0) * 1000)
                cpu.append((time.process_time() - c0) * 1000)
            timings["render()"] = render
            timings["render() CPU"] = cpu
    print(f"part 1: {stored} drifts stored, {scrapes} scrapes, /metrics body {size} bytes")
    for path, samples in timings.items():
        print(
            f"  {path:14} p50 {_pct(samples, 50):6.3f} ms  p99 {_pct(samples, 99):6.3f} ms"
            f"  max {max(samples):6.3f} ms"
        )
    ratio = _pct(timings["/metrics"], 99) / _pct(timings["/health"], 99)
    print(f"  /metrics p99 / bare /health p99: {ratio:.2f}x  (target: /metrics p99 <= 2 ms)")


async def _ingest_rate(batches: int, shipped: bool, tag: str) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        daemon = Daemon(_config(Path(tmp)).validate())
        if not shipped:  # the bare baseline: the ingest path records nothing
            m = daemon.pipeline.metrics
            for hist in (m.ingest_to_stored, m.stored_to_published, m.commit, m.commit_batches):
                hist.observe = lambda amount, exemplar=None: None  # type: ignore[method-assign]
        await daemon.start()
        bodies = [
            [decode_record(resize(f"{tag}-{b}-{i}", f"m5.{b % 7}x{i}")) for i in range(100)]
            for b in range(batches)
        ]
        queue: asyncio.Queue[list[Any]] = asyncio.Queue()
        for body in bodies:
            queue.put_nowait(body)

        async def caller() -> None:
            while not queue.empty():
                await daemon.pipeline.ingest(queue.get_nowait())

        async def scraper() -> None:
            while True:
                await metrics.render(daemon)
                await asyncio.sleep(0.1)

        scraping = asyncio.create_task(scraper()) if shipped else None
        t0 = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(8)))
        elapsed = time.perf_counter() - t0
        if scraping is not None:
            scraping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scraping
        await daemon.stop()
    return batches * 100 / elapsed


async def ingest_cost(batches: int, rounds: int) -> None:
    print(f"part 2: {batches} x 100 records by 8 callers, SQLite; shipped + scraped vs bare")
    ratios = []
    for r in range(rounds):
        bare = await _ingest_rate(batches, False, f"bare{r}")
        shipped = await _ingest_rate(batches, True, f"ship{r}")
        ratios.append(shipped / bare)
        print(
            f"  round {r + 1}: bare {bare:8.0f} rec/s  shipped+scraped {shipped:8.0f} rec/s"
            f"  ratio {shipped / bare:.3f}"
        )
    median = statistics.median(ratios)
    load = os.getloadavg()[0]
    print(f"  median ratio {median:.3f}  (target >= 0.95); load average {load:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drifts", type=int, default=10_000)
    parser.add_argument("--scrapes", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(scrape_latency(args.drifts, args.scrapes))
    asyncio.run(ingest_cost(args.batches, args.rounds))


if __name__ == "__main__":
    main()
