"""Live latency: ingest POST -> receipt on SSE and WebSocket, vs a bare broadcast, same run.

python -m bench.live_latency [--subscribers 1000] [--rate 1000] [--seconds 15] [--probes 40]
                             [--rounds 1] [--client-procs 1] [--bare-coalesce]
python -m bench.live_latency --idle ...   (many idle subscribers: see bench/live_idle.py)

Each server runs in its own process under the same uvicorn (uvloop, httptools, websockets):
Driftline (`monitor.app.cli serve` on the demo state) and a bare Starlette app that copies every
POSTed body into a bounded asyncio.Queue per client and writes it out with sse-starlette or
Starlette's WebSocket: no decoding, detection or storage, so the ratio is Driftline's own cost.
Every POST is one demo CloudTrail record (ModifyInstanceAttribute) with a unique event id and
instance type, so it makes exactly one new drift (flood control merges nothing); the bare
server gets the same bytes. Subscribers are hand-rolled asyncio sockets, half SSE, half WS:
most only drain bytes (in --client-procs worker processes); --probes of them, in the process
that sends the POSTs (one clock), look for each event id in the byte stream and time it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import dataclasses
import math
import multiprocessing
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
LISTENING = re.compile(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")
# The event id is fixed-width, so no id is a substring of another; it appears verbatim in the
# drift's SSE data / WS frame (Driftline) and in the raw body (bare broadcast).
MARKER = re.compile(rb"LAT(\d{8})Z")
MARKER_LEN = 12
SSE_READY = b"event: connected"
WS_READY = b'"subscribed"'
SUBSCRIBE = orjson.dumps({"type": "subscribe", "topic": "drifts"})
PING = b"\x89\x04"  # the uvicorn/websockets keepalive ping: 4 random bytes of payload
DRIFTLINE_QUEUE = (
    2000  # monitor.app.config.Config.subscriber_queue default, mirrored by the bare app
)
WS_HARD_LIMIT = 16 * 1024 * 1024


def now() -> float:
    return time.perf_counter()


# -- payloads -------------------------------------------------------------------------------


def bodies(total: int) -> list[bytes]:
    """`total` resize records, each with its own event id and instance type (one drift each)."""
    from tests.support.records import resize

    template = orjson.dumps(resize("LAT99999999Z", "t3.x99999999"))
    assert template.count(b"99999999") == 2
    return [template.replace(b"99999999", b"%08d" % i) for i in range(total)]


# -- servers --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """Where a server under test takes POSTs and serves SSE and WS."""

    name: str
    ingest: str
    sse: str
    ws: str
    checks_drift: bool
    auth: str = ""  # an Authorization header line (CRLF-terminated) for every request


DRIFTLINE = Target(
    "driftline", "/api/v1/ingest/cloudtrail", "/api/v1/stream?topics=drifts", "/ws", True
)
BARE = Target("bare", "/ingest", "/stream", "/ws", False)


class ServerProcess:
    """A server in its own process; its port is read back from uvicorn's startup line."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv = argv
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log: collections.deque[str] = collections.deque(maxlen=40)
        self._pump: threading.Thread | None = None

    async def start(self, timeout: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        found: asyncio.Future[int] = loop.create_future()
        self.proc = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
        )

        def settle(port: int | None) -> None:
            if found.done():
                return
            if port is None:
                found.set_exception(RuntimeError("server exited early:\n" + "".join(self.log)))
            else:
                found.set_result(port)

        def pump() -> None:
            # Keeps reading so a chatty server never blocks on a full pipe.
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                self.log.append(line.decode(errors="replace"))
                if not found.done() and (m := LISTENING.search(line)):
                    loop.call_soon_threadsafe(settle, int(m.group(1)))
            loop.call_soon_threadsafe(settle, None)

        self._pump = threading.Thread(target=pump, name="server-log", daemon=True)
        self._pump.start()
        self.port = await asyncio.wait_for(found, timeout)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def stop(self) -> None:
        if self.proc is None:
            return
        proc = self.proc
        if proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 15)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        if self._pump is not None:
            await asyncio.to_thread(self._pump.join, 5)
        self.proc = None


def bare_app(queue_size: int, coalesce: bool = False) -> Any:
    """Starlette + sse-starlette + WebSocket broadcast of every POSTed body, nothing else.

    With `coalesce`, an SSE client's wake-up writes everything queued as one chunk (as
    Driftline does), and a WS client sends everything queued before waiting again.
    """
    from sse_starlette import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    class Client:
        __slots__ = ("lagged", "queue")

        def __init__(self) -> None:
            self.queue: asyncio.Queue[tuple[bytes, str]] = asyncio.Queue(queue_size)
            self.lagged = False

    clients: set[Client] = set()
    dropped = [0]

    async def ingest(request: Request) -> Response:
        body = await request.body()
        item = (b"event: drift\ndata: " + body + b"\n\n", body.decode())
        for c in list(clients):
            try:
                c.queue.put_nowait(item)
            except asyncio.QueueFull:
                c.lagged = True
                clients.discard(c)
                dropped[0] += 1
        return Response(b'{"accepted":1}', 202, media_type="application/json")

    async def stream(request: Request) -> Response:
        c = Client()
        clients.add(c)

        async def events() -> Any:
            try:
                yield b"event: connected\ndata: {}\n\n"
                while True:
                    sse, _ = await c.queue.get()
                    if c.lagged:
                        return
                    if coalesce and not c.queue.empty():
                        chunk = [sse]
                        while not c.queue.empty():
                            chunk.append(c.queue.get_nowait()[0])
                        sse = b"".join(chunk)
                    yield sse
            finally:
                clients.discard(c)

        return EventSourceResponse(
            events(),
            ping=30,
            send_timeout=None,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        c = Client()
        clients.add(c)

        async def writer() -> None:
            await websocket.send_text('{"type":"subscribed"}')
            while True:
                texts = [(await c.queue.get())[1]]
                if c.lagged:
                    await websocket.close(1013)
                    return
                while coalesce and not c.queue.empty():
                    texts.append(c.queue.get_nowait()[1])
                for text in texts:
                    await websocket.send_text(text)

        task = asyncio.create_task(writer())
        try:
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass
        except WebSocketDisconnect:
            pass
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            clients.discard(c)

    async def stats(request: Request) -> Response:
        return JSONResponse({"subscribers": len(clients), "lagged": dropped[0]})

    return Starlette(
        routes=[
            Route("/ingest", ingest, methods=["POST"]),
            Route("/stream", stream),
            Route("/stats", stats),
            WebSocketRoute("/ws", ws),
        ]
    )


def serve_bare(queue_size: int, coalesce: bool) -> None:
    """Run the bare app the way `driftline serve` runs Driftline (same uvicorn settings)."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            bare_app(queue_size, coalesce),
            host=HOST,
            port=0,
            log_level="info",
            ws_max_size=WS_HARD_LIMIT,
            timeout_graceful_shutdown=5,
            access_log=False,
        )
    )
    server.run()


# -- CPU accounting -------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) per thread of `pid`."""
    out: dict[int, float] = {}
    with contextlib.suppress(FileNotFoundError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                raw = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            rest = raw.rsplit(")", 1)[1].split()
            out[int(tid)] = (int(rest[11]) + int(rest[12])) / TICK
    return out


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + parts[4]
    return float(sum(parts) - idle), float(sum(parts))


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class LagMeter:
    """How late this process's event loop runs a 10 ms timer: the client's own saturation."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            t = now()
            await asyncio.sleep(0.01)
            self.samples.append(now() - t - 0.01)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def summary(self) -> tuple[float, float]:
        s = sorted(self.samples) or [0.0]
        return pct(s, 0.99), s[-1]


# -- subscribers ----------------------------------------------------------------------------


def masked(opcode: int, payload: bytes) -> bytes:
    """One client frame (clients must mask); payloads here are under 126 bytes."""
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + key + body


def sse_request(port: int, path: str, auth: str = "") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n{auth}Accept: text/event-stream\r\n"
        "Cache-Control: no-cache\r\n\r\n"
    ).encode()


def ws_request(port: int, path: str, auth: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n{auth}Upgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


class Sub(asyncio.Protocol):
    """A subscriber that reads and discards; counts bytes; answers WS keepalive pings."""

    def __init__(self, request: bytes, ws: bool) -> None:
        self.request = request
        self.ws = ws
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.is_ready = False
        self.upgraded = not ws
        self.head = b""
        self.nbytes = 0
        self.closed = False
        self.closed_at = 0.0
        self._ping_tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport but have its methods.
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.nbytes += len(data)
        if self.is_ready:
            if self.ws and (b"\x89" in data or self._ping_tail):
                self._pong(data)
            self.seen(data)
            return
        self.head += data
        if not self.upgraded:
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 101 " not in self.head[:end]:
                self._fail(self.head[:end].decode(errors="replace"))
                return
            self.upgraded = True
            assert self.transport is not None
            self.transport.write(masked(0x1, SUBSCRIBE))
        if (WS_READY if self.ws else SSE_READY) in self.head:
            self.is_ready = True
            self.head = b""
            if not self.ready.done():
                self.ready.set_result(None)

    def _pong(self, data: bytes) -> None:
        buf = self._ping_tail + data if self._ping_tail else data
        self._ping_tail = b""
        at = buf.find(PING)
        while at >= 0:
            if at + 6 > len(buf):
                self._ping_tail = buf[at:]
                return
            assert self.transport is not None
            self.transport.write(masked(0xA, buf[at + 2 : at + 6]))
            at = buf.find(PING, at + 6)
        if buf.endswith(b"\x89"):
            self._ping_tail = b"\x89"

    def seen(self, data: bytes) -> None:
        """Called with every chunk after the subscription is confirmed."""

    def _fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.closed_at = now()
        self._fail(f"closed before ready: {exc}")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class Probe(Sub):
    """A subscriber that records when each event id first arrives."""

    def __init__(self, request: bytes, ws: bool) -> None:
        super().__init__(request, ws)
        self.arrivals: dict[int, float] = {}
        self._tail = b""

    def seen(self, data: bytes) -> None:
        t = now()
        buf = self._tail + data
        got = self.arrivals
        for m in MARKER.finditer(buf):
            got.setdefault(int(m.group(1)), t)
        self._tail = buf[-(MARKER_LEN - 1) :]


async def connect_all(
    port: int, target: Target, n_sse: int, n_ws: int, probe: bool, timeout: float = 90.0
) -> tuple[list[Sub], int]:
    """Open and confirm `n_sse` + `n_ws` subscriptions; (subscribers, failures)."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(64)  # the server's accept backlog stays far from full
    kind: Callable[[bytes, bool], Sub] = Probe if probe else Sub

    async def one(ws: bool) -> Sub:
        async with gate:
            req = (
                ws_request(port, target.ws, target.auth)
                if ws
                else sse_request(port, target.sse, target.auth)
            )
            _, sub = await loop.create_connection(lambda: kind(req, ws), HOST, port)
            await asyncio.wait_for(sub.ready, 30)
            return sub

    jobs = [one(False) for _ in range(n_sse)] + [one(True) for _ in range(n_ws)]
    got = await asyncio.wait_for(asyncio.gather(*jobs, return_exceptions=True), timeout)
    subs = [g for g in got if isinstance(g, Sub)]
    return subs, len(got) - len(subs)


# -- drain worker process -------------------------------------------------------------------


def drain_process(conn: Connection, port: int, target: Target, n_sse: int, n_ws: int) -> None:
    """Entry point of a worker process holding drain subscribers."""
    run(_drain(conn, port, target, n_sse, n_ws))


async def _drain(conn: Connection, port: int, target: Target, n_sse: int, n_ws: int) -> None:
    inbox = PipeInbox(conn)
    subs, failed = await connect_all(port, target, n_sse, n_ws, probe=False)
    conn.send(("ready", len(subs), failed))
    assert await inbox.get() == "start"
    lag = LagMeter()
    await lag.start()
    cpu0, t0 = own_cpu(), now()
    assert await inbox.get() == "stop"
    cpu, elapsed = own_cpu() - cpu0, now() - t0
    await lag.stop()
    lag99, lagmax = lag.summary()
    conn.send(
        (
            "stats",
            {
                "sse_bytes": [s.nbytes for s in subs if not s.ws],
                "ws_bytes": [s.nbytes for s in subs if s.ws],
                "sse_closed": sum(1 for s in subs if not s.ws and s.closed),
                "ws_closed": sum(1 for s in subs if s.ws and s.closed),
                "cpu": cpu / elapsed,
                "lag99": lag99,
                "lagmax": lagmax,
            },
        )
    )
    for s in subs:
        s.close()
    inbox.close()


class PipeInbox:
    """Messages from a multiprocessing pipe, awaited on the event loop."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(conn.fileno(), self._read)

    def _read(self) -> None:
        try:
            self.queue.put_nowait(self.conn.recv())
        except EOFError:
            self.loop.remove_reader(self.conn.fileno())
            self.queue.put_nowait(EOFError("worker pipe closed"))

    async def get(self, timeout: float = 180.0) -> Any:
        item = await asyncio.wait_for(self.queue.get(), timeout)
        if isinstance(item, EOFError):
            raise item
        return item

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.conn.fileno())


@dataclass
class Workers:
    """The drain worker processes of one run."""

    procs: list[Any] = field(default_factory=list)
    inboxes: list[PipeInbox] = field(default_factory=list)

    def send(self, msg: str) -> None:
        for box in self.inboxes:
            box.conn.send(msg)

    async def gather(self) -> list[Any]:
        return [await box.get() for box in self.inboxes]

    async def stop(self) -> None:
        for box in self.inboxes:
            box.close()
            box.conn.close()
        for p in self.procs:
            await asyncio.to_thread(p.join, 15)
            if p.is_alive():
                p.terminate()
                await asyncio.to_thread(p.join, 5)


# -- load -----------------------------------------------------------------------------------


@dataclass
class Load:
    """What the POST side did: when each request went out and how long its ack took."""

    sent_at: list[float]
    acked_in: list[float]
    scheduled: list[float]
    bad: int = 0
    bad_sample: str = ""
    window: float = 0.0
    t0: float = 0.0


async def post_worker(
    port: int, target: Target, data: list[bytes], jobs: asyncio.Queue[int | None], load: Load
) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    prefix = (
        f"POST {target.ingest} HTTP/1.1\r\nHost: {HOST}:{port}\r\n{target.auth}"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()
    try:
        while (i := await jobs.get()) is not None:
            body = data[i]
            req = prefix + b"%d\r\n\r\n" % len(body) + body
            load.sent_at[i] = t = now()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            size = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    size = int(line[15:])
            reply = await reader.readexactly(size)
            load.acked_in[i] = now() - t
            ok = head[9:12] == b"202"
            if ok and target.checks_drift:
                ok = orjson.loads(reply)["data"]["drifts"] == 1
            if not ok:
                load.bad += 1
                load.bad_sample = (head[:12] + b" " + reply[:200]).decode(errors="replace")
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def generate(
    port: int, target: Target, data: list[bytes], rate: float, connections: int, grace: float
) -> Load:
    """POST data[i] at t0 + i/rate from a pool of keep-alive connections."""
    total = len(data)
    nan = math.nan
    load = Load([nan] * total, [nan] * total, [nan] * total)
    jobs: asyncio.Queue[int | None] = asyncio.Queue()
    workers = [
        asyncio.create_task(post_worker(port, target, data, jobs, load)) for _ in range(connections)
    ]
    t0 = load.t0 = now() + 0.05
    for i in range(total):
        due = t0 + i / rate
        load.scheduled[i] = due
        delay = due - now()
        if delay > 0:
            await asyncio.sleep(delay)
        jobs.put_nowait(i)
    load.window = total / rate
    for _ in workers:
        jobs.put_nowait(None)
    # A saturated server can leave a backlog: give it `grace`, then stop sending.
    _, pending = await asyncio.wait(workers, timeout=max(0.0, t0 + load.window + grace - now()))
    for w in pending:
        w.cancel()
    results = await asyncio.gather(*workers, return_exceptions=True)
    errors = [
        r
        for r in results
        if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)
    ]
    if errors:
        load.bad_sample = load.bad_sample or repr(errors[0])
    return load


# -- one run --------------------------------------------------------------------------------


def pct(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return math.nan
    k = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


@dataclass
class Result:
    """The figures of one server's run."""

    target: Target
    lines: list[str] = field(default_factory=list)
    p50: float = math.nan
    p99: float = math.nan
    valid: bool = True
    rate: float = 0.0
    note: str = ""
    latencies: list[float] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.lines.append(text)
        print(text, flush=True)


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


async def health(port: int, target: Target) -> dict[str, Any]:
    import httpx

    path = "/api/v1/health" if target.checks_drift else "/stats"
    headers = dict([target.auth.strip().split(": ", 1)]) if target.auth else {}
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=30) as c:
        body: dict[str, Any] = (await c.get(path, headers=headers)).json()
    return body


async def run_target(
    target: Target, server: ServerProcess, args: argparse.Namespace, data: list[bytes]
) -> Result:
    res = Result(target)
    label = {
        "driftline": "Driftline (monitor.app.cli serve, demo state, SQLite store in a temp dir)",
        "bare": "bare broadcast (Starlette + sse-starlette + Starlette WebSocket, same uvicorn)",
    }[target.name]
    if target is BARE and args.bare_coalesce:
        label += ", coalescing"
    res.say(f"\n== {label} ==")
    n = args.subscribers
    n_sse, n_ws = n - n // 2, n // 2
    probes = min(args.probes, n)
    p_sse, p_ws = probes - probes // 2, probes // 2
    p_sse, p_ws = min(p_sse, n_sse), min(p_ws, n_ws)
    d_sse, d_ws = n_sse - p_sse, n_ws - p_ws
    workers = Workers()
    probe_subs: list[Probe] = []
    try:
        await server.start()
        port = server.port
        t_connect = now()
        ctx = multiprocessing.get_context("spawn")
        k = max(1, args.client_procs)
        for w in range(k):
            ours, theirs = ctx.Pipe()
            share_sse = d_sse // k + (1 if w < d_sse % k else 0)
            share_ws = d_ws // k + (1 if w < d_ws % k else 0)
            proc = ctx.Process(
                target=drain_process, args=(theirs, port, target, share_sse, share_ws), daemon=True
            )
            proc.start()
            theirs.close()
            workers.procs.append(proc)
            workers.inboxes.append(PipeInbox(ours))
        subs, failed = await connect_all(port, target, p_sse, p_ws, probe=True)
        probe_subs = [s for s in subs if isinstance(s, Probe)]
        for _tag, _ready, lost in await workers.gather():
            failed += lost
        connected = n - failed
        res.say(
            f"subscribers: {connected}/{n} connected ({n_sse} SSE, {n_ws} WS; "
            f"{len(probe_subs)} probes) in {now() - t_connect:.1f} s"
        )
        if failed:
            res.say(f"  !! {failed} subscribers failed to connect")

        lag = LagMeter()
        await lag.start()
        warm_n = int(args.warmup * args.rate)
        total = len(data)
        cpu_srv0: dict[int, float] = {}
        mark: dict[str, float] = {}

        async def sample_at_warm_end() -> None:
            # CPU is counted over the measured part only, not connection set-up or warm-up.
            await asyncio.sleep(args.warmup)
            cpu_srv0.update(thread_cpu(server.pid))
            mark["busy0"], mark["total0"] = machine_busy()
            mark["own0"], mark["t0"] = own_cpu(), now()

        workers.send("start")
        sampler = asyncio.create_task(sample_at_warm_end())
        load = await generate(port, target, data, args.rate, args.connections, args.grace)
        await sampler
        t1 = now()
        cpu_srv1 = thread_cpu(server.pid)
        busy1, total1 = machine_busy()
        own1 = own_cpu()
        sent = [i for i in range(total) if not math.isnan(load.sent_at[i])]
        # Let deliveries finish, bounded: a probe that was dropped never catches up.
        deadline = now() + args.settle
        while now() < deadline:
            live = [p for p in probe_subs if not p.closed]
            if all(len(p.arrivals) >= len(sent) for p in live):
                break
            await asyncio.sleep(0.05)
        await lag.stop()
        info = await health(port, target)
        workers.send("stop")
        stats = [s for tag, s in await workers.gather() if tag == "stats"]

        # ---- figures ----
        elapsed = t1 - mark["t0"]
        measured = [i for i in sent if i >= warm_n]
        in_window = sum(1 for i in sent if i >= warm_n and load.sent_at[i] <= t1)
        # Saturated runs send nothing past the warm-up: then the POSTs that did go out.
        timed = measured or sent
        lag_send = sorted(load.sent_at[i] - load.scheduled[i] for i in timed)
        acks = sorted(x for x in (load.acked_in[i] for i in timed) if not math.isnan(x))
        acked = sum(1 for i in sent if not math.isnan(load.acked_in[i]))
        res.say(
            f"load: {len(sent)}/{total} POSTs sent, {acked} acked ({warm_n} warm-up); "
            f"{len(sent) / (t1 - load.t0):,.0f}/s over the run, {in_window / elapsed:,.0f}/s in "
            f"the measured {elapsed:.1f} s (target {args.rate:,.0f}/s)"
        )
        res.say(
            f"  POST ack{'' if measured else ' (whole run)'}: p50 {ms(pct(acks, 0.5))}  "
            f"p99 {ms(pct(acks, 0.99))}  "
            f"max {ms(acks[-1] if acks else math.nan)};  send behind schedule p99 "
            f"{ms(pct(lag_send, 0.99))}"
        )
        if load.bad or total - len(sent):
            res.say(
                f"  !! {load.bad} POSTs with an unexpected answer, {total - len(sent)} never sent"
                + (f"; e.g. {load.bad_sample}" if load.bad_sample else "")
            )
        lat: dict[bool, list[float]] = {False: [], True: []}
        missing = 0
        for p in probe_subs:
            arr = p.arrivals
            bucket = lat[p.ws]
            for i in measured:
                a = arr.get(i)
                if a is None:
                    missing += 1
                else:
                    bucket.append(a - load.sent_at[i])
        # Whole run, warm-up included: what a saturated server still managed to deliver.
        every: list[float] = []
        last_arrival = load.t0
        for p in probe_subs:
            for i in sent:
                a = p.arrivals.get(i)
                if a is not None:
                    every.append(a - load.sent_at[i])
                    last_arrival = max(last_arrival, a)
        every.sort()
        per_sub = len(every) / max(1, len(probe_subs)) / max(1e-9, last_arrival - load.t0)
        res.say(
            f"whole run: {len(every):,}/{len(sent) * len(probe_subs):,} pairs; p50 "
            f"{ms(pct(every, 0.5))}  p99 {ms(pct(every, 0.99))}  max "
            f"{ms(every[-1] if every else math.nan)};  {per_sub:,.0f} messages/s per subscriber "
            f"= {per_sub * (n - failed):,.0f} deliveries/s of fan-out"
        )
        both = sorted(lat[False] + lat[True])
        pairs = len(measured) * len(probe_subs)
        res.p50, res.p99 = pct(both, 0.5), pct(both, 0.99)
        res.rate = in_window / elapsed
        res.latencies = both or every
        if not both:
            # Saturated: nothing past the warm-up got out; the whole run is all there is.
            res.p50, res.p99, res.valid = pct(every, 0.5), pct(every, 0.99), False
            res.rate = len(sent) / (t1 - load.t0)
            res.note = (
                f"saturated ({res.rate:,.0f}/s of {args.rate:,.0f}/s), no POST past the warm-up "
                "went out: figures from the whole run"
            )
        elif res.rate < 0.95 * args.rate:
            res.valid = False
            res.note = f"saturated: achieved {res.rate:,.0f}/s of {args.rate:,.0f}/s"

        res.say(
            f"delivery: {len(both):,}/{pairs:,} (probe, message) pairs received;  "
            f"p50 {ms(pct(both, 0.5))}  p99 {ms(pct(both, 0.99))}  "
            f"max {ms(both[-1] if both else math.nan)}"
        )
        for ws in (False, True):
            s = sorted(lat[ws])
            res.say(
                f"  {'WS ' if ws else 'SSE'} probes: {len(s):,} pairs, p50 {ms(pct(s, 0.5))}  "
                f"p99 {ms(pct(s, 0.99))}"
            )
        if missing:
            share = missing / max(1, pairs)
            if share > 0.01:
                res.valid = False
                res.note = res.note or f"{share:.1%} of deliveries lost"
            res.say(
                f"  !! {missing:,} pairs never arrived ({share:.1%})"
                + (": p50/p99 describe only the survivors" if share > 0.01 else "")
            )
        probes_closed = sum(1 for p in probe_subs if p.closed)
        sse_closed = sum(s["sse_closed"] for s in stats) + sum(
            1 for p in probe_subs if p.closed and not p.ws
        )
        ws_closed = sum(s["ws_closed"] for s in stats) + sum(
            1 for p in probe_subs if p.closed and p.ws
        )
        if target.checks_drift:
            hub = info["data"]["components"]["hub"]
            dropped = (
                f"hub.lagged_disconnects {hub['lagged_disconnects']}, "
                f"hub.subscribers at end {hub['subscribers']}"
            )
        else:
            dropped = f"lagged {info['lagged']}, subscribers at end {info['subscribers']}"
        res.say(
            f"dropped by the server: {dropped};  streams closed: {sse_closed} SSE, "
            f"{ws_closed} WS ({probes_closed} of them probes)"
        )
        # Every subscriber of a kind gets the same stream: a drain well short of the probes'
        # byte count was either dropped or could not read fast enough.
        for ws, key in ((False, "sse_bytes"), (True, "ws_bytes")):
            ref = sorted(p.nbytes for p in probe_subs if p.ws == ws and not p.closed)
            if not ref:
                continue
            median = ref[len(ref) // 2]
            counts = [b for s in stats for b in s[key]]
            short = sum(1 for b in counts if b < 0.99 * median)
            if short:
                res.say(
                    f"  !! {short}/{len(counts)} {'WS' if ws else 'SSE'} drains got under 99% of "
                    f"the probes' {median:,} bytes"
                )
        srv = {tid: cpu_srv1.get(tid, 0.0) - cpu_srv0.get(tid, 0.0) for tid in cpu_srv1}
        main_thread = srv.get(server.pid, 0.0)
        others = sum(srv.values()) - main_thread
        machine = (busy1 - mark["busy0"]) / max(1.0, total1 - mark["total0"])
        lag99, lagmax = lag.summary()
        drain_cpu = sum(s["cpu"] for s in stats)
        drain_lag = max((s["lag99"] for s in stats), default=0.0)
        own = (own1 - mark["own0"]) / elapsed
        cores = os.cpu_count() or 1
        # What the rest of the machine used meanwhile (other jobs share these cores).
        foreign = machine * cores - (main_thread + others) / elapsed - own - drain_cpu
        # Deliveries inside the CPU window, from the probes' arrival times (saturation-proof).
        got = sum(1 for p in probe_subs for a in p.arrivals.values() if mark["t0"] <= a <= t1)
        deliveries = got / max(1, len(probe_subs)) * (n - failed)
        per = (main_thread + others) / deliveries * 1e6 if deliveries else math.nan
        res.say(
            f"server CPU: event-loop thread {main_thread / elapsed:.0%} of a core, other threads "
            f"{others / elapsed:.0%} ({per:.1f} us CPU per delivery);  "
            f"machine busy {machine:.0%} of {cores} cores, of which {max(0.0, foreign):.2f} cores "
            "used by other processes"
        )
        res.say(
            f"client CPU: load+probes {own:.0%}, drains {drain_cpu:.0%} ({len(stats)} procs);  "
            f"client loop lag p99 {ms(lag99)} (max {ms(lagmax)}), drains p99 {ms(drain_lag)}"
        )
        if lag99 > 0.005 or drain_lag > 0.005:
            res.say(
                "  !! a client event loop ran late by > 5 ms: part of the latency is the client's"
            )
    finally:
        for p in probe_subs:
            p.close()
        await workers.stop()
        await server.stop()
    return res


# -- main -----------------------------------------------------------------------------------


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


async def bench(args: argparse.Namespace) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * args.subscribers + 512
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    total = int(args.rate * (args.warmup + args.seconds))
    data = bodies(total)
    print(
        f"live latency: {args.subscribers} subscribers (half SSE, half WS; {args.probes} probes), "
        f"{args.rate:,.0f} POST/s for {args.warmup:g} s warm-up + {args.seconds:g} s measured, "
        f"{len(data[0])} byte records, {args.connections} POST connections, "
        f"{args.client_procs} drain process(es); machine: {os.cpu_count()} cores"
    )
    results: dict[str, list[Result]] = {"bare": [], "driftline": []}
    names = args.only or ["bare", "driftline"]
    with tempfile.TemporaryDirectory(prefix="driftline-bench-") as tmp:
        for r in range(args.rounds):
            if args.rounds > 1:
                print(f"\n-- round {r + 1}/{args.rounds}")
            # Alternating the order spreads the machine's other load evenly over both.
            for name in names if r % 2 == 0 else names[::-1]:
                # A fresh store each run: the same event ids again would be deduplicated.
                target, server = server_for(name, args, Path(tmp) / f"run{r}")
                results[name].append(await run_target(target, server, args, data))
    if not (results["bare"] and results["driftline"]):
        return 0
    print("\n== summary ==")
    if args.rounds > 1:
        for r, (b, d) in enumerate(zip(results["bare"], results["driftline"], strict=True)):
            print(
                f"round {r + 1}: p99 driftline {ms(d.p99)}, bare {ms(b.p99)}, "
                f"ratio {d.p99 / b.p99:.2f}x"
            )
    bare, dl = pooled(results["bare"]), pooled(results["driftline"])
    ratio = dl.p99 / bare.p99 if bare.p99 > 0 else math.nan
    what = f"pooled over {args.rounds} rounds" if args.rounds > 1 else "measured window"
    print(f"achieved rate: driftline {dl.rate:,.0f}/s, bare {bare.rate:,.0f}/s")
    print(f"p50 ({what}): driftline {ms(dl.p50)}, bare {ms(bare.p50)}")
    print(f"p99 ({what}): driftline {ms(dl.p99)}, bare {ms(bare.p99)}")
    print(f"ratio driftline p99 / bare p99: {ratio:.2f}x  (target <= 1.5x)")
    print(f"driftline p99 {ms(dl.p99)}  (target <= 50 ms)")
    met = dl.valid and bare.valid and dl.p99 <= 0.050 and ratio <= 1.5
    for res in (bare, dl):
        if not res.valid:
            print(
                f"!! {res.target.name}: {res.note}; its percentiles do not describe the target load"
            )
    print("target met" if met else "target NOT met")
    return 0


def pooled(runs: list[Result]) -> Result:
    """One result from several rounds: percentiles over all their pairs."""
    every = sorted(x for r in runs for x in r.latencies)
    notes = [r.note for r in runs if r.note]
    return Result(
        runs[0].target,
        p50=pct(every, 0.5),
        p99=pct(every, 0.99),
        valid=all(r.valid for r in runs),
        rate=sum(r.rate for r in runs) / len(runs),
        note="; ".join(notes),
        latencies=every,
    )


def server_for(name: str, args: argparse.Namespace, data_dir: Path) -> tuple[Target, ServerProcess]:
    """The server process for `name`, not started."""
    if name == "bare":
        argv = [sys.executable, "-m", "bench.live_latency", "--serve-bare"]
        argv += ["--bare-queue", str(args.bare_queue)]
        if args.bare_coalesce:
            argv.append("--bare-coalesce")
        return BARE, ServerProcess(argv, {})
    argv = [sys.executable, "-m", "monitor.app.cli", "serve"]
    argv += ["--state", str(ROOT / "monitor/app/demo/demo.tfstate"), "--data-dir", str(data_dir)]
    # info, because uvicorn logs the bound port at info; the access log is only on at debug.
    argv += ["--port", "0", "--log-level", "info"]
    env = dict(kv.split("=", 1) for kv in args.driftline_env)
    if args.no_auth:
        return DRIFTLINE, ServerProcess([*argv, "--no-auth"], env)
    # Auth on, as `driftline serve` runs by default: an admin key (reads the stream, ingests).
    made = subprocess.run(
        [
            *(sys.executable, "-m", "monitor.app.cli", "keys", "create"),
            *("--data-dir", str(data_dir), "--name", "bench", "--role", "admin"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    auth = f"Authorization: Bearer {made.stdout.strip()}\r\n"
    return dataclasses.replace(DRIFTLINE, auth=auth), ServerProcess(argv, env)


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if "--idle" in given:
        # The many-idle-subscribers mode (memory per subscriber, delivery to all).
        from bench import live_idle

        return live_idle.main([a for a in given if a != "--idle"])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--subscribers", type=int, default=1000, help="N, half SSE, half WS")
    ap.add_argument("--rate", type=float, default=1000.0, help="R, POSTs (drifts) per second")
    ap.add_argument("--seconds", type=float, default=15.0, help="measured duration")
    ap.add_argument("--warmup", type=float, default=3.0, help="unmeasured lead-in")
    ap.add_argument("--probes", type=int, default=40, help="timed subscribers among the N")
    ap.add_argument(
        "--rounds", type=int, default=1, help="alternate the two servers this many times, pooled"
    )
    ap.add_argument("--connections", type=int, default=32, help="keep-alive POST connections")
    ap.add_argument("--client-procs", type=int, default=1, help="processes holding the drains")
    ap.add_argument("--settle", type=float, default=5.0, help="wait for late deliveries")
    ap.add_argument("--grace", type=float, default=5.0, help="backlog allowed after the load")
    ap.add_argument("--bare-queue", type=int, default=DRIFTLINE_QUEUE, help="bare queue size")
    ap.add_argument(
        "--bare-coalesce",
        action="store_true",
        help="bare server writes all queued messages per wake-up (one SSE chunk), as Driftline",
    )
    ap.add_argument(
        "--driftline-env",
        action="append",
        default=[],
        metavar="DRIFTLINE_X=V",
        help="extra settings for the Driftline server (e.g. DRIFTLINE_SYNCHRONOUS=NORMAL)",
    )
    ap.add_argument("--only", action="append", choices=["bare", "driftline"])
    ap.add_argument(
        "--no-auth", action="store_true", help="run Driftline with --no-auth (auth cost)"
    )
    ap.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_bare:
        serve_bare(args.bare_queue, args.bare_coalesce)
        return 0
    code: int = run(bench(args))
    return code


if __name__ == "__main__":
    sys.exit(main())
