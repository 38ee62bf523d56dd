"""A real uvicorn server on a free 127.0.0.1 port, and real SSE/WebSocket client helpers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import uvicorn

from monitor.app.config import Config
from monitor.app.daemon import Daemon
from monitor.app.http_server import server_config
from monitor.app.web_api import web_app
from tests.support.asgi import admin_key, make_daemon

STARTUP_SECONDS = 20


@dataclass
class Running:
    daemon: Daemon
    base: str
    ws: str
    port: int
    client: httpx.AsyncClient
    key: str

    @property
    def auth(self) -> dict[str, str]:
        """The admin key's header, for WebSocket and other clients of the test's own."""
        return {"Authorization": f"Bearer {self.key}"}


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[Running]:
    """Start Driftline under uvicorn on a free port; stop it (and wait) on exit."""
    daemon = make_daemon(config)
    key = admin_key(daemon)
    # IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted connections only for TCP sockets;
    # without it every keep-alive request after the first waits ~40 ms (delayed ACK).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        server_config(
            web_app(daemon),
            config,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
            lifespan="on",
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = asyncio.get_running_loop().time() + STARTUP_SECONDS
    while not server.started:
        if task.done():
            task.result()
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"uvicorn did not start within {STARTUP_SECONDS} s")
        await asyncio.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    try:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=base, timeout=30, headers=headers) as client:
            yield Running(daemon, base, f"ws://127.0.0.1:{port}/ws", port, client, key)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)
        sock.close()


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Return once `condition()` holds; fail naming `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


class SSEReader:
    """Parses an SSE response into (id, event, data) tuples."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()

    async def next(self) -> tuple[int | None, str, Any]:
        event_id: int | None = None
        event = "message"
        data: list[str] = []
        async for line in self.lines:
            if line == "":
                if data:
                    return event_id, event, orjson.loads("\n".join(data))
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "id":
                event_id = int(value)
            elif key == "event":
                event = value
            elif key == "data":
                data.append(value)
        raise EOFError("stream ended")

    async def until(self, event: str) -> tuple[int | None, str, Any]:
        while True:
            got = await self.next()
            if got[1] == event:
                return got
