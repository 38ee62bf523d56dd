"""What access control costs: HTTP ingest throughput and read latency, auth on vs --no-auth.

python -m bench.auth_overhead [--records 20000] [--batch 100] [--callers 8] [--reads 300]
                             [--rounds 2]

Each round starts `driftline serve` twice on the demo state, in its own process and data
dir: once with --no-auth (the bare baseline) and once as shipped (an API key on every
request, each ingest request audited in the hash chain before it is acknowledged). The
same NDJSON batches (demo CloudTrail records with unique event ids) are POSTed by
`--callers` keep-alive clients, then `--reads` GET /api/v1/drifts are timed one by one.
Printed: records/s, the server's CPU time per record (utime + stime of its process, which
other load on the machine barely moves, unlike wall time), read p50/p99 per mode, and the
auth / no-auth ratios (target >= 0.95).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "monitor" / "app" / "demo"
ROLE = ("--name", "bench", "--role", "admin")
LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


def batches(records: int, batch: int, tag: str) -> list[bytes]:
    """NDJSON bodies of demo change records, each with an event id of its own."""
    demo = [orjson.loads(line) for line in (DEMO / "stream.jsonl").read_bytes().splitlines()]
    writes = [r for r in demo if r.get("eventSource") and not r.get("readOnly")] or demo
    out, lines = [], []
    for n in range(records):
        rec = dict(writes[n % len(writes)])
        rec["eventID"] = f"bench-{tag}-{n}"
        lines.append(orjson.dumps(rec))
        if len(lines) == batch:
            out.append(b"\n".join(lines))
            lines = []
    if lines:
        out.append(b"\n".join(lines))
    return out


class Server:
    """`driftline serve` in a process of its own, port read back from its log."""

    def __init__(self, data_dir: Path, auth: bool) -> None:
        self.data_dir = data_dir
        self.auth = auth
        self.headers = {"Content-Type": "application/x-ndjson"}
        self.proc: subprocess.Popen[str] | None = None
        self.base = ""

    def start(self) -> None:
        cli = [sys.executable, "-m", "monitor.app.cli"]
        if self.auth:
            key = subprocess.run(
                [*cli, "keys", "create", "--data-dir", str(self.data_dir), *ROLE],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            self.headers["Authorization"] = f"Bearer {key}"
        argv = [*cli, "serve", "--state", str(DEMO / "demo.tfstate")]
        argv += ["--data-dir", str(self.data_dir), "--port", "0", "--log-level", "info"]
        if not self.auth:
            argv.append("--no-auth")
        self.proc = subprocess.Popen(
            argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        assert self.proc.stderr is not None
        seen = ""
        deadline = time.monotonic() + 60
        while not (m := LISTENING.search(seen)):
            line = self.proc.stderr.readline()
            if not line or time.monotonic() > deadline:
                raise RuntimeError("server did not start:\n" + seen)
            seen += line
        self.base = f"http://127.0.0.1:{m.group(1)}"
        # Keep draining the log so the server never blocks on a full pipe.
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(20)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def ingest(server: Server, bodies: list[bytes], callers: int) -> tuple[float, float]:
    """Records per second over all the bodies, and server CPU microseconds per record."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    records = sum(b.count(b"\n") + 1 for b in bodies)

    async def caller(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            resp = await client.post("/api/v1/ingest/cloudtrail", content=body)
            if resp.status_code != 202:
                raise RuntimeError(f"ingest: HTTP {resp.status_code} {resp.text[:200]}")

    async with httpx.AsyncClient(base_url=server.base, headers=server.headers, timeout=60) as c:
        await c.post("/api/v1/ingest/cloudtrail", content=bodies[0])  # warm the paths
        assert server.proc is not None
        cpu0, t0 = cpu_seconds(server.proc.pid), time.perf_counter()
        await asyncio.gather(*(caller(c) for _ in range(callers)))
        wall, cpu = time.perf_counter() - t0, cpu_seconds(server.proc.pid) - cpu0
        return records / wall, cpu / records * 1e6


async def reads(server: Server, n: int) -> list[float]:
    async with httpx.AsyncClient(base_url=server.base, headers=server.headers, timeout=60) as c:
        for _ in range(20):
            await c.get("/api/v1/drifts?limit=50")
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            resp = await c.get("/api/v1/drifts?limit=50")
            out.append((time.perf_counter() - t0) * 1000)
            if resp.status_code != 200:
                raise RuntimeError(f"read: HTTP {resp.status_code}")
        return sorted(out)


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--callers", type=int, default=8)
    ap.add_argument("--reads", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    rates: dict[bool, list[float]] = {False: [], True: []}
    cpus: dict[bool, list[float]] = {False: [], True: []}
    lat: dict[bool, list[float]] = {False: [], True: []}
    for r in range(args.rounds):
        for auth in (False, True) if r % 2 == 0 else (True, False):
            with tempfile.TemporaryDirectory(prefix="driftline-auth-bench-") as tmp:
                server = Server(Path(tmp), auth)
                server.start()
                try:
                    bodies = batches(args.records, args.batch, f"{r}-{auth}")
                    rate, cpu = asyncio.run(ingest(server, bodies, args.callers))
                    got = asyncio.run(reads(server, args.reads))
                finally:
                    server.stop()
            rates[auth].append(rate)
            cpus[auth].append(cpu)
            lat[auth].extend(got)
            mode = "auth on" if auth else "--no-auth"
            print(
                f"round {r + 1} {mode:10} ingest {rate:9,.0f} records/s {cpu:6.1f} us CPU/record  "
                f"GET /drifts p50 {pct(got, 0.5):6.2f} ms  p99 {pct(got, 0.99):6.2f} ms",
                flush=True,
            )
    off, on = statistics.mean(rates[False]), statistics.mean(rates[True])
    lat_off, lat_on = sorted(lat[False]), sorted(lat[True])
    print(f"\ningest throughput, auth on / --no-auth: {on:,.0f} / {off:,.0f} = {on / off:.3f}")
    c_off, c_on = statistics.median(cpus[False]), statistics.median(cpus[True])
    print(
        f"server CPU per record (median), --no-auth / auth on: {c_off:.1f} / {c_on:.1f} us "
        f"= {c_off / c_on:.3f}  (1.0 = no cost; target >= 0.95)"
    )
    print(
        f"GET /drifts p50, --no-auth / auth on: {pct(lat_off, 0.5):.2f} / {pct(lat_on, 0.5):.2f} "
        f"ms = {pct(lat_off, 0.5) / pct(lat_on, 0.5):.3f}  (1.0 = no cost; target >= 0.95)"
    )


if __name__ == "__main__":
    main()
