"""Outputs: ingest throughput with one output down vs no outputs, and the backlog drain rate
of one webhook output vs bare sequential requests to the same receiver.

python -m bench.outputs_bench [--records 20000] [--rounds 3] [--backlog 100000]

Part 1 drives `Pipeline.ingest` of a started Daemon (demo state, SQLite file store, FULL) with
8 concurrent callers x batches of 100 decoded CloudTrail resizes, every one a new drift
(the worst case for routing: each queues a delivery). Run A has no outputs; run B has one
webhook output whose receiver refuses connections (it retries with backoff meanwhile).
Rounds alternate A and B; the ratio is B / A.

Part 2 queues `--backlog` deliveries for one webhook output (real drift bodies, written
through the store's outbox as ingest writes them), then starts its sender against a receiver
in another process answering 200, and times the drain until nothing is pending. The bare
baseline: the same receiver, the same bodies, sequential POSTs with the same client and no
store (the cost of the requests alone).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from monitor.app.config import Config
from monitor.app.daemon import Daemon
from monitor.engine import load_rules
from monitor.outputs import Outputs
from monitor.outputs.http import HttpClient
from monitor.store import OutputRow, SqliteStore, drift_payload
from monitor.store.outbox import insert
from streams.documents import decode_bytes
from tests.support.drifts import DRIFT
from tests.support.records import DEMO_STATE, resize

CALLERS, BATCH = 8, 100


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- part 1: ingest with one output down -------------------------------------------------


def _batches(n: int, tag: str) -> list[list[Any]]:
    items = []
    for i in range(n):
        rec = resize(f"{tag}-{i}", f"m{i}.{tag}")
        items.extend(decode_bytes(orjson.dumps(rec), "cloudtrail"))
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


async def _ingest_rate(records: int, outputs: list[dict[str, Any]], tag: str) -> float:
    data = tempfile.mkdtemp(prefix="outputs-bench-")
    try:
        config = Config(state=[DEMO_STATE], data_dir=data, state_poll_seconds=3600)
        config.outputs = outputs
        daemon = Daemon(config.validate(), rules=load_rules())
        batches = _batches(records, tag)
        await daemon.start()
        queue = list(reversed(batches))
        drifts = 0

        async def caller() -> None:
            nonlocal drifts
            while queue:
                result = await daemon.pipeline.ingest(queue.pop())
                drifts += result.drifts

        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(CALLERS)))
        elapsed = time.perf_counter() - start
        await daemon.stop()
        assert drifts == records, (drifts, records)
        return records / elapsed
    finally:
        shutil.rmtree(data, ignore_errors=True)


async def part1(records: int, rounds: int) -> None:
    down = [
        {
            "name": "down",
            "type": "webhook",
            "url": f"http://127.0.0.1:{_free_port()}/hook",
            "events": ["new", "update", "resolved"],
        }
    ]
    ratios, none_rates, down_rates = [], [], []
    for r in range(rounds):
        a = await _ingest_rate(records, [], f"a{r}")
        b = await _ingest_rate(records, down, f"b{r}")
        none_rates.append(a)
        down_rates.append(b)
        ratios.append(b / a)
        print(f"  round {r + 1}: no outputs {a:,.0f} drifts/s, one output down {b:,.0f} drifts/s")
    print(
        f"ingest, one output down vs none: best {max(down_rates):,.0f} vs "
        f"{max(none_rates):,.0f} drifts/s; median per-round ratio "
        f"{statistics.median(ratios):.3f} (target >= 0.95)"
    )


# -- part 2: backlog drain --------------------------------------------------------------


def _receiver(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                n = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        n = int(line[15:])
                await reader.readexactly(n)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


async def _wait_listening(port: int) -> None:
    for _ in range(500):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.01)
    raise RuntimeError("receiver did not start")


async def _bare_rate(url: str, body: bytes, n: int) -> float:
    client = HttpClient()
    headers = [("Content-Type", "application/json"), ("Driftline-Delivery-Id", "1")]
    start = time.perf_counter()
    for _ in range(n):
        answer = await client.post(url, headers, body, 10)
        assert answer.status == 200
    elapsed = time.perf_counter() - start
    await client.close()
    return n / elapsed


async def _drain_rate(url: str, backlog: int, directory: Path) -> float:
    store = SqliteStore(directory / "driftline.db")
    store.start()
    spec = {"name": "drain", "type": "webhook", "url": url, "secret": "bench-secret"}
    store.put_output(OutputRow("o1", "drain", "api", orjson.dumps(spec), "t", "t"))
    body = orjson.dumps(drift_payload(DRIFT))
    now = time.time()
    for start in range(0, backlog, 10_000):
        rows = [
            ("o1", seq, "drift", "new", "2026-03-01T10:00:01Z", body)
            for seq in range(start + 1, min(backlog, start + 10_000) + 1)
        ]
        with store._transaction() as db:  # as the ingest transaction writes them
            insert(db, rows, now)
    outputs = Outputs(store)
    t0 = time.perf_counter()
    await outputs.start()
    while store.delivery_counts("o1")["pending"]:
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - t0
    counts = store.delivery_counts("o1")
    await outputs.stop()
    store.close()
    assert counts["dead"] == 0, counts
    return backlog / elapsed


async def part2(backlog: int) -> None:
    port = _free_port()
    proc = multiprocessing.get_context("spawn").Process(target=_receiver, args=(port,))
    proc.start()
    directory = Path(tempfile.mkdtemp(prefix="outputs-drain-"))
    try:
        await _wait_listening(port)
        url = f"http://127.0.0.1:{port}/hook"
        bare = await _bare_rate(url, orjson.dumps({"payload": drift_payload(DRIFT)}), 20_000)
        drain = await _drain_rate(url, backlog, directory)
        print(
            f"backlog drain, one webhook output: {backlog:,} deliveries at {drain:,.0f}/s "
            f"(target >= 1,000/s); bare sequential requests {bare:,.0f}/s; "
            f"ratio {drain / bare:.2f}"
        )
    finally:
        proc.terminate()
        proc.join()
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-drain", action="store_true")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}")
    if not args.skip_ingest:
        asyncio.run(part1(args.records, args.rounds))
    if not args.skip_drain:
        asyncio.run(part2(args.backlog))


if __name__ == "__main__":
    main()
