"""Many idle subscribers: server memory per subscriber, and delivery of a trickle to all.

python -m bench.live_latency --idle [--subscribers 10000] [--rate 1] [--seconds 10]
                                    [--client-procs 4] [--only bare|driftline]

For Driftline and the bare broadcast (bench.live_latency's, same uvicorn), one after the
other: connect N subscribers (half SSE, half WS, held by --client-procs worker processes),
read the server's resident memory before and after (VmRSS), then POST one drift every 1/R
seconds and time its arrival at every subscriber (CLOCK_MONOTONIC is shared by processes),
so the percentiles cover all N, not a sample.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import resource
import tempfile
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.live_latency import (
    LagMeter,
    PipeInbox,
    Probe,
    ServerProcess,
    Target,
    Workers,
    bodies,
    connect_all,
    generate,
    health,
    machine_busy,
    ms,
    now,
    own_cpu,
    pct,
    run,
    server_for,
    thread_cpu,
)

KB = 1024


def rss(pid: int) -> int:
    """Resident memory of `pid` in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * KB
    return 0


def idle_drain(conn: Connection, port: int, target: Target, n_sse: int, n_ws: int) -> None:
    """Worker process: hold subscribers that stamp each event id's arrival."""
    run(_idle_drain(conn, port, target, n_sse, n_ws))


async def _idle_drain(conn: Connection, port: int, target: Target, n_sse: int, n_ws: int) -> None:
    inbox = PipeInbox(conn)
    subs, failed = await connect_all(port, target, n_sse, n_ws, probe=True, timeout=600)
    conn.send(("ready", len(subs), failed))
    assert await inbox.get(900) == "start"
    lag = LagMeter()
    await lag.start()
    cpu0, t0 = own_cpu(), now()
    assert await inbox.get(900) == "stop"
    await lag.stop()
    probes = [s for s in subs if isinstance(s, Probe)]
    # The answer is larger than a pipe holds: send it blocking, off the event loop's reader.
    inbox.close()
    os.set_blocking(conn.fileno(), True)
    conn.send(
        (
            "stats",
            {
                "arrivals": [p.arrivals for p in probes],
                "closed": sum(1 for s in subs if s.closed),
                "cpu": (own_cpu() - cpu0) / (now() - t0),
                "lag99": lag.summary()[0],
            },
        )
    )
    for s in subs:
        s.close()


async def gather_big(workers: Workers) -> list[Any]:
    """The workers' (large) answers, read blocking in a thread."""
    for box in workers.inboxes:  # all before the first await: no reader may run meanwhile
        box.close()
        os.set_blocking(box.conn.fileno(), True)
    return [
        await asyncio.wait_for(asyncio.to_thread(box.conn.recv), 300) for box in workers.inboxes
    ]


async def run_idle(
    target: Target, server: ServerProcess, args: argparse.Namespace, data: list[bytes]
) -> dict[str, float]:
    """One server's run; its figures (per-subscriber bytes, delivery p50/p99)."""
    print(f"\n== {target.name} ==", flush=True)
    n = args.subscribers
    workers = Workers()
    try:
        await server.start()
        port = server.port
        await health(port, target)
        base = rss(server.pid)
        t_connect = now()
        ctx = multiprocessing.get_context("spawn")
        k = max(1, args.client_procs)
        n_sse, n_ws = n - n // 2, n // 2
        for w in range(k):
            ours, theirs = ctx.Pipe()
            share = (n_sse // k + (w < n_sse % k), n_ws // k + (w < n_ws % k))
            proc = ctx.Process(target=idle_drain, args=(theirs, port, target, *share), daemon=True)
            proc.start()
            theirs.close()
            workers.procs.append(proc)
            workers.inboxes.append(PipeInbox(ours))
        ready = [await box.get(900) for box in workers.inboxes]
        connected = sum(r[1] for r in ready)
        failed = sum(r[2] for r in ready)
        took = now() - t_connect
        await asyncio.sleep(args.settle)
        held = rss(server.pid)
        per_sub = (held - base) / max(1, connected)
        print(
            f"subscribers: {connected}/{n} connected in {took:.1f} s ({failed} failed); server "
            f"RSS {base / KB / KB:.0f} MB before, {held / KB / KB:.0f} MB after: "
            f"{per_sub / KB:.1f} KB per subscriber",
            flush=True,
        )
        workers.send("start")
        cpu0, (busy0, total0), t0 = thread_cpu(server.pid), machine_busy(), now()
        load = await generate(port, target, data, args.rate, 4, args.settle)
        await asyncio.sleep(args.settle)
        cpu1, (busy1, total1), t1 = thread_cpu(server.pid), machine_busy(), now()
        info = await health(port, target)
        workers.send("stop")
        stats = [s for tag, s in await gather_big(workers) if tag == "stats"]
        sent = [i for i in range(len(data)) if not math.isnan(load.sent_at[i])]
        lat: list[float] = []
        missing = 0
        for s in stats:
            for arrivals in s["arrivals"]:
                for i in sent:
                    a = arrivals.get(i)
                    if a is None:
                        missing += 1
                    else:
                        lat.append(a - load.sent_at[i])
        lat.sort()
        pairs = len(sent) * connected
        server_cpu = sum(cpu1.get(t, 0.0) - cpu0.get(t, 0.0) for t in cpu1) / (t1 - t0)
        cores = os.cpu_count() or 1
        machine = (busy1 - busy0) / max(1.0, total1 - total0)
        if target.checks_drift:
            hub = info["data"]["components"]["hub"]
            dropped = f"lagged disconnects {hub['lagged_disconnects']}"
        else:
            dropped = f"lagged {info['lagged']}"
        print(
            f"delivery of {len(sent)} drifts to every subscriber: {len(lat):,}/{pairs:,} pairs; "
            f"p50 {ms(pct(lat, 0.5))}  p99 {ms(pct(lat, 0.99))}  "
            f"max {ms(lat[-1] if lat else math.nan)}"
            + (f";  !! {missing:,} never arrived" if missing else ""),
            flush=True,
        )
        print(
            f"server: {dropped}, streams closed {sum(s['closed'] for s in stats)}; CPU "
            f"{server_cpu:.0%} of a core; machine busy {machine:.0%} of {cores} cores; "
            f"drains' loop lag p99 {ms(max((s['lag99'] for s in stats), default=0.0))}",
            flush=True,
        )
        return {"per_sub": per_sub, "p50": pct(lat, 0.5), "p99": pct(lat, 0.99)}
    finally:
        await workers.stop()
        await server.stop()


async def bench(args: argparse.Namespace) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * args.subscribers + 512
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need), hard))
    print(
        f"idle subscribers: {args.subscribers} (half SSE, half WS, {args.client_procs} client "
        f"processes), {args.rate:g} drift/s for {args.seconds:g} s; machine: "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    data = bodies(max(1, int(args.rate * args.seconds)))
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="driftline-idle-") as tmp:
        for name in args.only or ["bare", "driftline"]:
            target, server = server_for(name, args, Path(tmp) / name)
            out[name] = await run_idle(target, server, args, data)
    print(f"\n== summary (load average now {os.getloadavg()[0]:.2f}) ==")
    for name, r in out.items():
        print(f"{name}: {r['per_sub'] / KB:.1f} KB per subscriber, delivery p99 {ms(r['p99'])}")
    if "bare" in out and "driftline" in out:
        d, b = out["driftline"], out["bare"]
        print(
            f"ratio driftline / bare: memory {d['per_sub'] / b['per_sub']:.2f}x, "
            f"p99 {d['p99'] / b['p99']:.2f}x"
        )
    if "driftline" in out:
        d = out["driftline"]
        met = d["per_sub"] <= 30 * KB and d["p99"] <= 1.0
        print(
            f"driftline: {d['per_sub'] / KB:.1f} KB per subscriber (target <= 30 KB), p99 "
            f"{ms(d['p99'])} (target <= 1 s): {'target met' if met else 'target NOT met'}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--subscribers", type=int, default=10_000, help="N, half SSE, half WS")
    ap.add_argument("--rate", type=float, default=1.0, help="drifts per second")
    ap.add_argument("--seconds", type=float, default=10.0, help="how long the trickle lasts")
    ap.add_argument("--client-procs", type=int, default=4, help="processes holding subscribers")
    ap.add_argument("--settle", type=float, default=3.0, help="pause after connecting and after")
    ap.add_argument("--only", action="append", choices=["bare", "driftline"])
    ap.add_argument("--bare-queue", type=int, default=2000, help=argparse.SUPPRESS)
    ap.add_argument("--driftline-env", action="append", default=[], help=argparse.SUPPRESS)
    ap.add_argument("--no-auth", action="store_true", help="run Driftline with --no-auth")
    args = ap.parse_args(argv)
    args.bare_coalesce = False
    code: int = run(bench(args))
    return code
