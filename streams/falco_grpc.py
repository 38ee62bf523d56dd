"""Falco's gRPC outputs API (Falco 0.43 and older) as a live source of decoded alerts.

Falco keeps the alerts of its gRPC output in one queue: `get` streams what is queued and ends,
`sub` answers every request the client sends on its stream with what is queued. Either way an
alert Falco hands out once is gone from its queue, so a reconnecting client neither misses what
was queued while it was away nor sees anything twice. Falco 0.44 removed the gRPC output; newer
Falco reaches Driftline through http_output instead (docs/falco-grpc.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

import grpc
import grpc.aio

from monitor.clock import utc_now
from monitor.types import Clock, Decoded, DecodeError, OnItems
from streams.falco import SourceFor, decode_alert, no_source
from streams.falco_pb import outputs_pb2, outputs_pb2_grpc, version_pb2, version_pb2_grpc

log = logging.getLogger("driftline.falco_grpc")

Mode = Literal["sub", "get"]
Sleep = Callable[[float], Awaitable[None]]

# Falco's own spelling in json_output, indexed by the falco.schema.priority wire value.
PRIORITY_NAMES = (
    "Emergency",
    "Alert",
    "Critical",
    "Error",
    "Warning",
    "Notice",
    "Informational",
    "Debug",
)
# falco.schema.source wire values, as Falco names the sources in json_output.
LEGACY_SOURCES = ("syscall", "k8s_audit", "internal", "plugin")
# Connection failures; any other status from the version call means Falco answered.
_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class TlsFiles(NamedTuple):
    """PEM files for mutual TLS: the CA that signed Falco's server cert, and the client pair."""

    ca_cert: str | Path
    client_cert: str | Path
    client_key: str | Path


class ConnectError(Exception):
    """The channel could not be set up (unreadable TLS file, unreachable server)."""


def response_to_alert(res: outputs_pb2.response) -> dict[str, Any]:
    """One gRPC `response` as the alert object Falco's json_output writes for it."""
    fields = dict(res.output_fields)
    priority = res.priority
    doc: dict[str, Any] = {
        "rule": res.rule,
        "output": res.output,
        "priority": PRIORITY_NAMES[priority]
        if 0 <= priority < len(PRIORITY_NAMES)
        else str(priority),
        "output_fields": fields,
    }
    if res.HasField("time"):
        try:
            doc["time"] = res.time.ToJsonString()
        except ValueError as exc:
            raise DecodeError("bad timestamp", str(exc)) from None
    source = res.source
    if not source:
        legacy = res.source_deprecated
        # 0 (syscall) is also what an unset field reads as; an alert carrying ct.* fields
        # without a source is left unnamed so decode_alert still recognises it as CloudTrail.
        if not (legacy == 0 and "ct.name" in fields) and 0 <= legacy < len(LEGACY_SOURCES):
            source = LEGACY_SOURCES[legacy]
    if source:
        doc["source"] = source
    if res.hostname:
        doc["hostname"] = res.hostname
    if res.tags:
        doc["tags"] = list(res.tags)
    return doc


def decode_response(res: outputs_pb2.response, source_for: SourceFor = no_source) -> Decoded:
    """A response decoded like any Falco alert; a bad one becomes its DecodeError, never raises."""
    try:
        return decode_alert(response_to_alert(res), source_for)
    except DecodeError as exc:
        return exc
    except Exception as exc:  # a decoder bug must not end the stream
        return DecodeError("bad Falco alert", f"{type(exc).__name__}: {exc}")


def _is_unix(target: str) -> bool:
    return target.startswith(("unix:", "unix-abstract:"))


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConnectError(f"cannot read TLS file {path}: {exc.strerror or exc}") from None


def _rpc_error(exc: grpc.aio.AioRpcError) -> str:
    details = exc.details() or ""
    return f"{exc.code().name}: {details}" if details else exc.code().name


class FalcoGrpcSource:
    """Falco alerts from its gRPC outputs API, in batches to `on_items`, reconnecting until stop."""

    def __init__(
        self,
        target: str,
        on_items: OnItems,
        *,
        mode: Mode = "sub",
        tls: tuple[str | Path, str | Path, str | Path] | None = None,
        insecure: bool = False,
        server_name: str | None = None,
        source_for: SourceFor = no_source,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        batch_max: int = 500,
        batch_wait: float = 0.05,
        poll_interval: float = 0.1,
        connect_timeout: float = 5.0,
        queue_max: int | None = None,
        drain_timeout: float = 5.0,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = utc_now,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if mode not in ("sub", "get"):
            raise ValueError(f"mode must be 'sub' or 'get', not {mode!r}")
        if not target:
            raise ValueError("empty Falco gRPC target")
        if not _is_unix(target) and tls is None and not insecure:
            raise ValueError(
                f"{target} is a TCP address and Falco's TCP gRPC server always uses mutual TLS: "
                "give tls=(ca_cert, client_cert, client_key), or insecure=True for a plaintext peer"
            )
        if tls is not None and len(tls) != 3:
            raise ValueError("tls must be (ca_cert, client_cert, client_key)")
        if batch_max < 1 or batch_wait < 0 or poll_interval <= 0:
            raise ValueError("batch_max >= 1, batch_wait >= 0 and poll_interval > 0 are required")
        if backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ValueError("0 < backoff_initial <= backoff_max is required")
        self.target = target
        self.mode: Mode = mode
        self._on_items = on_items
        self._tls = TlsFiles(*tls) if tls is not None else None
        self._server_name = server_name
        self._source_for = source_for
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._batch_max = batch_max
        self._batch_wait = batch_wait
        self._poll_interval = poll_interval
        self._connect_timeout = connect_timeout
        self._queue_max = queue_max or 4 * batch_max
        self._drain_timeout = drain_timeout
        self._sleep = sleep
        self._clock = clock
        self._rand = rand
        self._queue: asyncio.Queue[Decoded] | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._deliver_task: asyncio.Task[None] | None = None
        self._state = "idle"
        self._logged_down = False
        self._connected_since: str | None = None
        self._sessions = 0
        self._last_error: str | None = None
        self._version: dict[str, Any] | None = None
        self._received = 0
        self._rejected = 0
        self._delivered = 0
        self._batches = 0
        self._deliver_errors = 0
        self._dropped_at_stop = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin connecting and streaming in the background; returns at once."""
        if self._run_task is not None:
            raise RuntimeError("FalcoGrpcSource already started")
        self._queue = asyncio.Queue(self._queue_max)
        self._state = "connecting"
        self._deliver_task = asyncio.create_task(self._deliver(), name="falco-grpc-deliver")
        self._run_task = asyncio.create_task(self._run(), name="falco-grpc-stream")

    async def stop(self) -> None:
        """Close the stream, hand over what was already received (bounded wait), and stop."""
        run, deliver, queue = self._run_task, self._deliver_task, self._queue
        if run is None or deliver is None or queue is None:
            return
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        if not deliver.done():
            try:
                await asyncio.wait_for(queue.join(), self._drain_timeout)
            except TimeoutError:
                self._dropped_at_stop = queue.qsize()
                log.warning(
                    "Falco gRPC %s: stopped with %d received alert(s) not handed over",
                    self.target,
                    self._dropped_at_stop,
                )
        deliver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await deliver
        self._state = "stopped"
        self._connected_since = None

    def status(self) -> dict[str, Any]:
        """State and counters for /health."""
        return {
            "state": self._state,
            "connected": self._state == "connected",
            "target": self.target,
            "mode": self.mode,
            "tls": self._tls is not None,
            "connected_since": self._connected_since,
            "falco_version": self._version,
            "alerts_received": self._received,
            "alerts_rejected": self._rejected,
            "alerts_delivered": self._delivered,
            "batches": self._batches,
            "pending": self._queue.qsize() if self._queue is not None else 0,
            "reconnects": max(0, self._sessions - 1),
            "deliver_errors": self._deliver_errors,
            "dropped_at_stop": self._dropped_at_stop,
            "last_error": self._last_error,
        }

    # -- connection --------------------------------------------------------------------------

    def _delay(self, attempt: int) -> float:
        base = min(self._backoff_max, self._backoff_initial * 2 ** min(attempt, 32))
        # "Equal jitter": never retry in lockstep with other clients, never sooner than half.
        return base / 2 + base / 2 * self._rand()

    def _channel(self) -> grpc.aio.Channel:
        options: list[tuple[str, Any]] = []
        if self._server_name:
            options.append(("grpc.ssl_target_name_override", self._server_name))
        if self._tls is None:
            return grpc.aio.insecure_channel(self.target, options=options)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(self._tls.ca_cert),
            private_key=_read(self._tls.client_key),
            certificate_chain=_read(self._tls.client_cert),
        )
        return grpc.aio.secure_channel(self.target, credentials, options=options)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            connected = False
            received = self._received
            began = loop.time()
            try:
                channel = self._channel()
                try:
                    await self._connect(channel)
                    connected = True
                    await self._stream(channel)
                    error = "stream ended by the server"
                finally:
                    await channel.close(None)
            except grpc.aio.AioRpcError as exc:
                error = _rpc_error(exc)
                if connected and exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    error += " (is grpc_output.enabled true in falco.yaml?)"
            except ConnectError as exc:
                error = str(exc)
            except Exception as exc:  # keep the source alive whatever the transport throws
                error = f"{type(exc).__name__}: {exc}"
                log.exception("Falco gRPC %s: unexpected error", self.target)
            # Only a session that proved itself resets the backoff: a Falco that accepts the
            # connection and then fails every stream must not be hammered twice a second.
            if connected and (
                self._received > received or loop.time() - began >= self._backoff_max
            ):
                attempt = 0
            self._disconnected(error, was_connected=connected)
            self._state = "backoff"
            await self._sleep(self._delay(attempt))
            attempt += 1
            self._state = "connecting"

    async def _connect(self, channel: grpc.aio.Channel) -> None:
        """Ask Falco its version; this is also how an unreachable server shows itself."""
        stub = version_pb2_grpc.serviceStub(channel)
        version: dict[str, Any] | None = None
        try:
            res = await stub.version(version_pb2.request(), timeout=self._connect_timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _UNREACHABLE:
                raise
            # Reachable but no (working) version service: not a reason to give up the stream.
            log.debug("Falco gRPC %s: no version (%s)", self.target, _rpc_error(exc))
        else:
            version = {
                "version": res.version,
                "major": res.major,
                "minor": res.minor,
                "patch": res.patch,
                "prerelease": res.prerelease,
                "build": res.build,
            }
            if res.engine_version:
                version["engine_version"] = res.engine_version
        self._version = version
        self._sessions += 1
        self._state = "connected"
        self._connected_since = self._clock()
        self._logged_down = False
        log.info(
            "Falco gRPC %s: connected (%s, Falco %s)",
            self.target,
            self.mode,
            version["version"] if version else "version unknown",
        )

    def _disconnected(self, error: str, *, was_connected: bool) -> None:
        self._last_error = error
        self._connected_since = None
        # Once per outage, not once per retry: a Falco that stays down would flood the log.
        if was_connected or not self._logged_down:
            log.warning("Falco gRPC %s: %s; reconnecting with backoff", self.target, error)
            self._logged_down = True
        else:
            log.debug("Falco gRPC %s: still unavailable: %s", self.target, error)

    # -- streaming ---------------------------------------------------------------------------

    async def _stream(self, channel: grpc.aio.Channel) -> None:
        stub = outputs_pb2_grpc.serviceStub(channel)
        if self.mode == "get":
            while True:
                async for res in stub.get(outputs_pb2.request()):
                    await self._accept(res)
                await asyncio.sleep(self._poll_interval)
        call = stub.sub()
        asker = asyncio.create_task(self._ask(call), name="falco-grpc-ask")
        try:
            async for res in call:
                await self._accept(res)
        finally:
            asker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asker
            call.cancel()

    async def _ask(self, call: Any) -> None:
        """Falco's `sub` sends what is queued in answer to each request, so keep asking."""
        request = outputs_pb2.request()
        # A failed write means the call is over; the reading side reports how it ended.
        with contextlib.suppress(Exception):
            while not call.done():
                await call.write(request)
                await asyncio.sleep(self._poll_interval)

    async def _accept(self, res: outputs_pb2.response) -> None:
        self._received += 1
        item = decode_response(res, self._source_for)
        if isinstance(item, DecodeError):
            self._rejected += 1
        assert self._queue is not None
        # A full queue blocks here, and gRPC flow control then slows Falco down.
        await self._queue.put(item)

    # -- hand-over ---------------------------------------------------------------------------

    async def _deliver(self) -> None:
        assert self._queue is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self._batch_wait
            while len(batch) < self._batch_max:
                if not queue.empty():
                    batch.append(queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        batch.append(await queue.get())
                except TimeoutError:
                    break
            await self._hand_over(batch)
            for _ in batch:
                queue.task_done()

    async def _hand_over(self, batch: list[Decoded]) -> None:
        attempt = 0
        while True:
            try:
                await self._on_items(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._deliver_errors += 1
                self._last_error = f"on_items failed: {type(exc).__name__}: {exc}"
                if attempt == 0:
                    log.warning(
                        "Falco gRPC %s: could not hand over %d item(s) (%s); retrying",
                        self.target,
                        len(batch),
                        self._last_error,
                    )
                await self._sleep(self._delay(attempt))
                attempt += 1
                continue
            self._batches += 1
            self._delivered += len(batch)
            return
