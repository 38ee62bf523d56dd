"""A local HTTP receiver standing in for a webhook, Slack or PagerDuty, with failure injection.

Each request takes the next behaviour from a script (then `default`): answer 200, answer a
status (with headers), hold the answer until released (a slow or hung receiver), or close
the connection without an answer. Every request is recorded as it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> dict:  # type: ignore[type-arg]
        return orjson.loads(self.body)


@dataclass
class Behaviour:
    """What to do with one request: `status` (+ `headers`), after `hold` is set if given;
    `close`: drop the connection unanswered."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hold: asyncio.Event | None = None
    close: bool = False


OK = Behaviour()


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: list[Behaviour] = []
        self.default = OK
        self.arrived = asyncio.Event()  # set on every request
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.received.append(Received(lines[0].split()[1], headers, body, time.time()))
                self.arrived.set()
                how = self.script.pop(0) if self.script else self.default
                if how.hold is not None:
                    await how.hold.wait()
                if how.close:
                    break
                extra = "".join(f"{k}: {v}\r\n" for k, v in how.headers.items())
                writer.write(
                    f"HTTP/1.1 {how.status} X\r\ncontent-length: 2\r\n{extra}\r\nok".encode()
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def delivery_ids(self) -> list[str]:
        return [r.headers["driftline-delivery-id"] for r in self.received]


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


def refused_url() -> str:
    """A URL nothing listens on (a port just freed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def verify_signature(secret: str, header: str, body: bytes, tolerance: float = 300) -> bool:
    """A receiver's check, written from docs/outputs.md: `t=<unix>,v1=<hex>`, where the hex
    is HMAC-SHA256(secret, "<t>." + raw body); the timestamp must be recent."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))
