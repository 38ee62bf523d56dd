"""Ready live frames written straight to the server's transport, past the ASGI layers.

Fan-out cost is per write: every ASGI layer a message passes and every system call counts
once per subscriber. A message's SSE and WebSocket bytes are built once for all clients
(`monitor.hub.Message`); these writers put a subscriber's whole batch on its socket in one
write. They work only under uvicorn's httptools (SSE) and websockets sans-I/O (WebSocket)
protocols, whose transport, flow control and state they can see; anywhere else `of` gives
None and the caller uses plain ASGI `send`, as it also does whenever the client is slow.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

SERVER_SEND = "driftline.server_send"
# Above this many unsent bytes a client is slow: the ASGI path, which waits for it, takes over.
DIRECT_WRITE_LIMIT = 256 * 1024


class ServerSend:
    """ASGI middleware, outermost: keeps the server's own `send` in the scope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope[SERVER_SEND] = send
        await self.app(scope, receive, send)


def _server_object(scope: Scope) -> Any:
    """The protocol (WebSocket) or request cycle (HTTP) whose bound method `send` is."""
    return getattr(scope.get(SERVER_SEND), "__self__", None)


def _can_write(transport: Any) -> bool:
    return callable(getattr(transport, "write", None)) and callable(
        getattr(transport, "get_write_buffer_size", None)
    )


class FrameWriter:
    """WebSocket frames (server frames: unmasked, so the same bytes for every client).
    Uncompressed frames are valid under permessage-deflate too (RSV1 clear)."""

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.transport = protocol.transport

    @classmethod
    def of(cls, scope: Scope) -> FrameWriter | None:
        protocol = _server_object(scope)
        if (
            isinstance(getattr(protocol, "writable", None), asyncio.Event)
            and isinstance(getattr(protocol, "close_sent", None), bool)
            and _can_write(getattr(protocol, "transport", None))
        ):
            return cls(protocol)
        return None

    def write(self, data: bytes) -> bool:
        """Write `data` now if the connection takes it without waiting; False if not."""
        p, t = self.protocol, self.transport
        if (
            p.close_sent
            or t.is_closing()
            or not p.writable.is_set()
            or t.get_write_buffer_size() > DIRECT_WRITE_LIMIT
        ):
            return False
        t.write(data)
        return True


class ChunkWriter:
    """Chunks of a chunked HTTP/1.1 response body (SSE), once its start has gone out."""

    def __init__(self, cycle: Any) -> None:
        self.cycle = cycle
        self.transport = cycle.transport

    @classmethod
    def of(cls, scope: Scope) -> ChunkWriter | None:
        cycle = _server_object(scope)
        if (
            isinstance(getattr(cycle, "disconnected", None), bool)
            and isinstance(getattr(cycle, "response_complete", None), bool)
            and isinstance(getattr(getattr(cycle, "flow", None), "write_paused", None), bool)
            and hasattr(cycle, "chunked_encoding")
            and _can_write(getattr(cycle, "transport", None))
        ):
            return cls(cycle)
        return None

    def write(self, data: bytes) -> bool:
        """Write `data` as one chunk now if the connection takes it without waiting."""
        c, t = self.cycle, self.transport
        if (
            c.chunked_encoding is not True
            or c.disconnected
            or c.response_complete
            or c.flow.write_paused
            or t.get_write_buffer_size() > DIRECT_WRITE_LIMIT
        ):
            return False
        t.write(b"%x\r\n%s\r\n" % (len(data), data))
        return True
