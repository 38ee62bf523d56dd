"""uvicorn as `driftline serve` runs it: the same settings for the command, tests and benches.

uvicorn times out idle keep-alive connections but not a request whose headers never finish
arriving: a client trickling bytes held its socket (and memory) for as long as it liked. The
h11 protocol here closes a connection whose request headers are not complete within
`header_read_seconds`; the ingest handlers bound the body with `body_read_seconds`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from monitor.app.config import Config

log = logging.getLogger("driftline.http")
WS_HARD_LIMIT = 16 * 1024 * 1024  # the protocol's cap; the app's own limit answers politely


class HeaderTimeoutProtocol(H11Protocol):
    """h11 with a deadline for a request's headers (set per server by `protocol_for`)."""

    header_seconds = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_watch()
        super().connection_lost(exc)

    def _waiting_for_headers(self) -> bool:
        # IDLE: no complete request yet; between requests uvicorn's keep-alive timer rules.
        return self.conn.their_state is h11.IDLE and self.timeout_keep_alive_task is None

    def _watch_headers(self) -> None:
        if not self._waiting_for_headers():
            self._stop_watch()
        elif self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_seconds, self._headers_late)

    def _stop_watch(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._waiting_for_headers() and not self.transport.is_closing():
            log.debug(
                "%s: request headers not complete in %g s: closed", self.client, self.header_seconds
            )
            self.transport.close()


def protocol_for(header_seconds: float) -> type[HeaderTimeoutProtocol]:
    """The h11 protocol class with this header deadline."""
    return type("HeaderTimeout", (HeaderTimeoutProtocol,), {"header_seconds": header_seconds})


def server_config(app: Any, config: Config, **over: Any) -> uvicorn.Config:
    """uvicorn's settings for `app` under `config`; `over` replaces any of them (tests)."""
    settings: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "log_level": config.log_level,
        "ws_max_size": WS_HARD_LIMIT,
        "timeout_graceful_shutdown": 5,
        "access_log": config.access_log or config.log_level == "debug",
        # serve configures logging itself (monitor/app/logs.py): uvicorn's lines in its format.
        "log_config": None,
        "http": protocol_for(config.header_read_seconds),
    }
    settings.update(over)
    return uvicorn.Config(app, **settings)
