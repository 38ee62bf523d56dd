"""The Starlette application: routes, error envelopes, CORS and the facade's lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route, WebSocketRoute

from monitor.store import StorageFault
from web import graph, health, ingest, live, rest
from web.envelope import ApiError, JSONResponse, error
from web.facade import Api, api_of
from web.openapi import SPEC, spec_for
from web.query import strict_routes

log = logging.getLogger("driftline.web")


async def openapi(request: Request) -> Response:
    return JSONResponse(spec_for(api_of(request).graph.limits))


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error(exc.code, exc.message, exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE"}.get(
        exc.status_code, "BAD_REQUEST" if exc.status_code < 500 else "INTERNAL_ERROR"
    )
    message = "no such endpoint: " + request.url.path if exc.status_code == 404 else str(exc.detail)
    response = error(code, message, exc.status_code)
    if exc.status_code == 405:
        # RFC 9110: a 405 lists the methods the resource has (from every route of the path).
        response.headers["Allow"] = _allowed(request)
    return response


def _allowed(request: Request) -> str:
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches(request.scope)
            if match != Match.NONE:
                methods |= route.methods
    return ", ".join(sorted(methods))


async def _storage_fault(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StorageFault)
    # Nothing of the request was stored: the sender keeps it and retries later.
    if exc.full:
        return error("INSUFFICIENT_STORAGE", f"not stored: {exc}", 507)
    return error("SERVICE_UNAVAILABLE", f"not stored: {exc}", 503)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error("INTERNAL_ERROR", "internal error; see the server log", 500)


def routes() -> list[BaseRoute]:
    return strict_routes(_routes(), SPEC)


def _routes() -> list[BaseRoute]:
    return [
        Route("/livez", health.livez),
        Route("/readyz", health.readyz),
        Route("/health", health.health_status),
        Route("/api/v1/health", health.health),
        Route("/api/v1/state", rest.state_meta),
        Route("/api/v1/state/resources", rest.state_resources),
        Route("/api/v1/state/resources/{address:path}", rest.state_resource),
        Route("/api/v1/events", rest.events),
        Route("/api/v1/events/{id}", rest.event),
        Route("/api/v1/drifts", rest.drifts),
        Route("/api/v1/drifts/summary", rest.drift_summary),
        Route("/api/v1/drifts/{id}", rest.drift),
        Route("/api/v1/drifts/{id}", rest.patch_drift, methods=["PATCH"]),
        Route("/api/v1/drifts/{id}/resolve", rest.resolve_drift, methods=["POST"]),
        Route("/api/v1/stats", rest.stats),
        Route("/api/v1/dead-letters", rest.dead_letters),
        Route("/api/v1/falco/events", ingest.falco_events, methods=["POST"]),
        Route("/api/v1/ingest/cloudtrail", ingest.cloudtrail, methods=["POST"]),
        Route("/api/v1/ingest/k8s-audit", ingest.k8s_audit, methods=["POST"]),
        Route("/api/v1/ingest/gcp-audit", ingest.gcp_audit, methods=["POST"]),
        Route("/api/v1/ingest/azure-activity", ingest.azure_activity, methods=["POST"]),
        Route("/api/v1/stream", live.stream),
        *graph.ROUTES,
        Route("/openapi.json", openapi),
        WebSocketRoute("/ws", live.websocket),
    ]


def create_app(api: Api) -> Starlette:
    """The ASGI app; `api` starts and stops with it."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await api.start()
        try:
            yield
        finally:
            await api.stop()

    app = Starlette(
        routes=routes(),
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=api.settings.cors_origins,
                allow_methods=["GET", "POST", "PATCH", "OPTIONS"],
                allow_headers=["*"],
                expose_headers=["*"],
            )
        ],
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            StorageFault: _storage_fault,
            Exception: _internal_error,
        },
        lifespan=lifespan,
    )
    app.state.api = api
    return app
