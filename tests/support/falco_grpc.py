"""A fake Falco gRPC output (and version) service, and the servers that run it."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
import grpc.aio
import orjson
import pytest

from streams.falco_grpc import (
    LEGACY_SOURCES,
)
from streams.falco_pb import (
    outputs_pb2,
    outputs_pb2_grpc,
    schema_pb2,
    version_pb2,
    version_pb2_grpc,
)

# -- Falco's side ----------------------------------------------------------------------------


def wire(value: Any) -> str:
    """An output field value as Falco puts it in the map<string, string>."""
    if value is None:
        return "<NA>"
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def to_response(alert: dict[str, Any]) -> tuple[outputs_pb2.response, bool]:
    """A json_output alert as Falco's gRPC output sends it; True when its time fit a Timestamp."""
    res = outputs_pb2.response(
        rule=alert.get("rule") or "",
        output=alert.get("output") or "",
        hostname=alert.get("hostname") or "",
        tags=alert.get("tags") or (),
        priority=schema_pb2.priority.Value(str(alert["priority"]).upper()),
    )
    timed = False
    if alert.get("time"):
        try:
            res.time.FromJsonString(alert["time"])
            timed = True
        except ValueError:
            res.ClearField("time")
    source = alert.get("source")
    if source:
        res.source = source
        if source in LEGACY_SOURCES:
            res.source_deprecated = LEGACY_SOURCES.index(source)  # type: ignore[assignment]
    for key, value in (alert.get("output_fields") or {}).items():
        res.output_fields[key] = wire(value)
    return res, timed


class FakeFalco(outputs_pb2_grpc.serviceServicer):
    """Falco's gRPC output: one queue; `get` drains it, `sub` drains it on every request."""

    def __init__(self, responses: Iterable[outputs_pb2.response] = ()) -> None:
        self.queue: deque[outputs_pb2.response] = deque(responses)
        self.requests = 0

    def feed(self, responses: Iterable[outputs_pb2.response]) -> None:
        self.queue.extend(responses)

    async def get(
        self, request: outputs_pb2.request, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[outputs_pb2.response]:
        self.requests += 1
        while self.queue:
            yield self.queue.popleft()

    async def sub(
        self, request_iterator: AsyncIterator[outputs_pb2.request], context: Any
    ) -> AsyncIterator[outputs_pb2.response]:
        async for _ in request_iterator:
            self.requests += 1
            while self.queue:
                yield self.queue.popleft()


class FakeVersion(version_pb2_grpc.serviceServicer):
    async def version(
        self, request: version_pb2.request, context: grpc.aio.ServicerContext
    ) -> version_pb2.response:
        return version_pb2.response(version="0.43.0", major=0, minor=43, patch=0, engine_version=55)


class Servers:
    """Starts grpc.aio servers; the fixture stops any a test left running."""

    def __init__(self) -> None:
        self.running: list[grpc.aio.Server] = []

    async def start(
        self,
        address: str,
        falco: FakeFalco | None,
        *,
        version: bool = True,
        credentials: grpc.ServerCredentials | None = None,
    ) -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        if falco is not None:
            outputs_pb2_grpc.add_serviceServicer_to_server(falco, server)
        if version:
            version_pb2_grpc.add_serviceServicer_to_server(FakeVersion(), server)
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
        await server.start()
        self.running.append(server)
        return server, port

    async def stop(self, server: grpc.aio.Server) -> None:
        await server.stop(None)
        self.running.remove(server)


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    s = Servers()
    try:
        yield s
    finally:
        for server in list(s.running):
            await s.stop(server)
