"""The app in memory: httpx over ASGITransport, no server and no socket."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from monitor.app.config import Config
from monitor.app.daemon import Daemon
from monitor.app.web_api import web_app
from monitor.engine import load_rules
from rules.catalogue import Catalogue
from rules.severity import SeverityRules


@functools.cache
def default_rules() -> tuple[Catalogue, SeverityRules]:
    """The bundled rules, parsed once per test session (they are read-only once built)."""
    return load_rules()


def make_daemon(config: Config) -> Daemon:
    """A daemon for `config`, reusing the parsed rules unless the config names its own."""
    rules = None if config.severity_rules else default_rules()
    return Daemon(config.validate(), rules=rules)


def admin_key(daemon: Daemon) -> str:
    """A fresh admin key for a test's clients (auth is on, as in production)."""
    secret, _ = daemon.access.keys.create("tests", "admin", "tests")
    return secret


@dataclass(frozen=True)
class InMemory:
    daemon: Daemon
    client: httpx.AsyncClient
    key: str


@contextlib.asynccontextmanager
async def in_memory(config: Config) -> AsyncIterator[InMemory]:
    """Driftline's app with a started daemon; ASGITransport runs no lifespan, so this does."""
    daemon = make_daemon(config)
    transport = httpx.ASGITransport(app=web_app(daemon))
    key = admin_key(daemon)
    await daemon.start()
    try:
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://localhost",
            timeout=30,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        ) as client:
            yield InMemory(daemon, client, key)
    finally:
        await daemon.stop()
