"""`/metrics` (Prometheus text format) and the optional loopback port that serves it alone."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from web.facade import api_of


async def metrics(request: Request) -> Response:
    """The daemon's metrics (the route is guarded for READ; the metrics port is not)."""
    body, content_type = await api_of(request).metrics()
    return Response(body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


class MetricsPort:
    """On the metrics port (bound to loopback by `serve`), GET /metrics without a key and
    nothing else: a scraper on the host needs no credentials, and the port exposes no API."""

    def __init__(self, app: ASGIApp, port: int | None) -> None:
        self.app = app
        self.port = port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        if self.port is None or scope["type"] == "lifespan" or not server or server[1] != self.port:
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            return  # a WebSocket handshake on this port is refused by closing it
        request = Request(scope, receive)
        if request.url.path != "/metrics":
            response: Response = PlainTextResponse("only /metrics here", 404)
        elif request.method not in ("GET", "HEAD"):
            response = PlainTextResponse("method not allowed", 405, headers={"Allow": "GET"})
        else:
            response = await metrics(request)
        await response(scope, receive, send)


OPENAPI_PATH = {
    "get": {
        "summary": "Prometheus metrics (text format); also on metrics_port without a key",
        "parameters": [],
        "responses": {
            "200": {
                "description": "the metrics",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    }
}
