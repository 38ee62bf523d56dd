"""Worst-case ingest bodies: does one large post stall the server or blow up its memory?

python -m bench.ingest_worst_case [--mib 10] [--probes 400] [--rounds 1]

Starts `driftline serve` (the demo state, a SQLite store in a temporary directory) as a
subprocess on a free port, then, in the same run:

- bare: /health latency with nothing else going on (sequential GETs, one connection);
- tiny lines: a body of --mib MiB of `{}` NDJSON lines (3.5 million records at 10 MiB) is
  POSTed to /api/v1/ingest/cloudtrail while /health is probed the same way;
- many records: 30,000 small decodable CloudTrail records (~9.5 MiB, under the default
  body and record limits) in one body, every one stored as an event.

Each body is posted --posts times in a row. For each body: /health p50/p99/max while the posts
are in flight and the ratio to the bare p99; the last post's status and the mean duration; the
server's peak RSS growth over its RSS before the posts (VmRSS sampled every 5 ms from /proc).
Targets: /health p99 < 50 ms, RSS growth <= 200 MiB. It only uses `driftline serve`'s
command line, so it runs unchanged against older checkouts.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / "monitor/app/demo/demo.tfstate"
LISTENING = re.compile(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")
P99_TARGET_MS = 50.0
RSS_TARGET_MIB = 200.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start_server(data_dir: str) -> tuple[subprocess.Popen[bytes], str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "monitor.app.cli", "serve", "--state", str(STATE)]
    cmd += ["--port", "0", "--data-dir", data_dir, "--log-level", "info"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        found = LISTENING.search(line)
        if found:
            # Keep draining stderr so the server never blocks on a full pipe.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, f"http://127.0.0.1:{found.group(1).decode()}"
    proc.kill()
    raise RuntimeError("driftline serve did not start")


def health_probes(base: str, stop: Callable[[], bool], limit: int) -> list[float]:
    """Sequential GET /health latencies (ms) until `stop()` or `limit` probes."""
    out: list[float] = []
    with httpx.Client(base_url=base, timeout=120) as client:
        while len(out) < limit and not stop():
            t0 = time.perf_counter()
            client.get("/health")
            out.append((time.perf_counter() - t0) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Run:
    name: str
    status: int
    seconds: float
    probes: list[float]
    rss_growth_mib: float

    def line(self, bare_p99: float) -> str:
        p99 = pct(self.probes, 0.99)
        ok = "ok" if p99 < P99_TARGET_MS and self.rss_growth_mib <= RSS_TARGET_MIB else "MISSED"
        return (
            f"{self.name:22} HTTP {self.status} in {self.seconds:6.2f} s;"
            f" /health n={len(self.probes):4} p50 {pct(self.probes, 0.5):7.1f} ms"
            f" p99 {p99:8.1f} ms max {max(self.probes):8.1f} ms"
            f" ({p99 / bare_p99:6.1f}x bare p99); peak RSS +{self.rss_growth_mib:6.1f} MiB  [{ok}]"
        )


def post_with_probes(base: str, pid: int, name: str, body: bytes, posts: int) -> Run:
    done = threading.Event()
    peak = [rss_kib(pid)]
    before = peak[0]
    result: dict[str, float | int] = {}

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            time.sleep(0.005)

    def post() -> None:
        t0 = time.perf_counter()
        with httpx.Client(base_url=base, timeout=600) as client:
            for _ in range(posts):
                resp = client.post("/api/v1/ingest/cloudtrail", content=body)
        result["status"] = resp.status_code
        result["seconds"] = (time.perf_counter() - t0) / posts
        done.set()

    sampler = threading.Thread(target=sample)
    poster = threading.Thread(target=post)
    sampler.start()
    poster.start()
    latencies = health_probes(base, done.is_set, 1_000_000)
    poster.join()
    sampler.join()
    # Probes that started after the post ended say nothing about it; keep at least one.
    latencies = latencies or health_probes(base, lambda: False, 1)
    growth = (peak[0] - before) / 1024
    return Run(name, int(result["status"]), float(result["seconds"]), latencies, growth)


def tiny_lines(mib: int) -> bytes:
    return b"{}\n" * (mib * 1024 * 1024 // 3)


def small_records(n: int) -> bytes:
    lines = []
    for i in range(n):
        rec = {
            "eventVersion": "1.08",
            "eventID": f"wc-{i:08d}",
            "eventTime": "2026-01-01T00:00:00Z",
            "eventSource": "ec2.amazonaws.com",
            "eventName": "CreateTags",
            "awsRegion": "us-east-1",
            "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/bench"},
            "requestParameters": {"resourcesSet": {"items": [{"resourceId": f"i-{i:017x}"}]}},
        }
        lines.append(orjson.dumps(rec))
    return b"\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=10, help="size of the tiny-lines body")
    ap.add_argument("--probes", type=int, default=400, help="/health probes for the bare p99")
    ap.add_argument("--records", type=int, default=30_000, help="records in the second body")
    ap.add_argument("--posts", type=int, default=5, help="posts of each body, one after another")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    bodies = {
        f"tiny lines {args.mib} MiB": tiny_lines(args.mib),
        f"{args.records:,} records": small_records(args.records),
    }
    for name, body in bodies.items():
        lines = body.count(b"\n") + 1
        print(f"{name}: {len(body) / 2**20:.1f} MiB, {lines:,} lines")
    print(f"load average: {os.getloadavg()[0]:.2f} (2 shared cores: figures move between runs)")
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="driftline-worst-") as tmp:
            proc, base = start_server(tmp)
            try:
                health_probes(base, lambda: False, 50)  # warm up
                bare = health_probes(base, lambda: False, args.probes)
                bare_p99 = pct(bare, 0.99)
                print(
                    f"\nround {r + 1}: bare /health n={len(bare)} p50 {pct(bare, 0.5):.1f} ms "
                    f"p99 {bare_p99:.1f} ms max {max(bare):.1f} ms"
                )
                for name, body in bodies.items():
                    run = post_with_probes(base, proc.pid, name, body, args.posts)
                    print(run.line(bare_p99), flush=True)
            finally:
                proc.terminate()
                proc.wait(30)


if __name__ == "__main__":
    main()
