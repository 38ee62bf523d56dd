"""A request id for every HTTP request and WebSocket: taken from `X-Request-ID` when it is a
plain token (a proxy's), else made here; answered in `X-Request-ID` and set for log lines."""

from __future__ import annotations

import contextvars
import re
import secrets

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "driftline_request_id", default=None
)
# Anything else a client sends is replaced: the id lands in log lines verbatim.
_TOKEN = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class RequestId:
    """Sets REQUEST_ID for the request's task (uvicorn logs its access line inside it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if _TOKEN.fullmatch(given) else secrets.token_hex(8)
        token = REQUEST_ID.set(request_id)

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            REQUEST_ID.reset(token)
