"""The Starlette application: routes, error envelopes, CORS and the facade's lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp

from monitor.auth import Permission
from web import auth_routes, graph, ingest, live, live_ws, metrics, rest, state_sources
from web.access import guard, guard_ws, guarded_stream
from web.envelope import ApiError, JSONResponse, error
from web.facade import Api
from web.openapi import SPEC
from web.request_id import RequestId
from web.security import SecurityMiddleware
from web.sessions import Security
from web.transport import ServerSend

log = logging.getLogger("driftline.web")


async def openapi(request: Request) -> Response:
    return JSONResponse(SPEC)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    response = error(exc.code, exc.message, exc.status)
    response.headers.update(exc.headers or {})
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE"}.get(
        exc.status_code, "BAD_REQUEST" if exc.status_code < 500 else "INTERNAL_ERROR"
    )
    message = "no such endpoint: " + request.url.path if exc.status_code == 404 else str(exc.detail)
    return error(code, message, exc.status_code)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error("INTERNAL_ERROR", "internal error; see the server log", 500)


async def public_health(request: Request) -> Response:
    """`/health` for anyone (load balancers): the status and nothing else."""
    full = await rest.health(request)
    status = orjson.loads(bytes(full.body))["data"]["status"]
    return JSONResponse({"success": True, "data": {"status": status}}, full.status_code)


R, L, IN, A, S, P = (
    Permission.READ,
    Permission.LIFECYCLE,
    Permission.INGEST,
    Permission.ADMIN,
    Permission.SESSION,
    Permission.PUBLIC,
)


def routes() -> list[Route | WebSocketRoute]:
    """Every route with the permission it needs (web.access); writes name their audit action."""
    return [
        Route("/health", guard(P, public_health)),
        Route("/api/v1/health", guard(R, rest.health)),
        Route("/api/v1/state", guard(R, rest.state_meta)),
        Route("/api/v1/state/resources", guard(R, rest.state_resources)),
        Route("/api/v1/state/resources/{address:path}", guard(R, rest.state_resource)),
        Route("/api/v1/events", guard(R, rest.events)),
        Route("/api/v1/events/{id}", guard(R, rest.event)),
        Route("/api/v1/drifts", guard(R, rest.drifts)),
        Route("/api/v1/drifts/summary", guard(R, rest.drift_summary)),
        Route("/api/v1/drifts/{id}", guard(R, rest.drift)),
        Route(
            "/api/v1/drifts/{id}",
            guard(L, rest.patch_drift, "drift.update"),
            methods=["PATCH"],
        ),
        Route(
            "/api/v1/drifts/{id}/resolve",
            guard(L, rest.resolve_drift, "drift.resolve"),
            methods=["POST"],
        ),
        Route("/api/v1/stats", guard(R, rest.stats)),
        Route("/api/v1/dead-letters", guard(R, rest.dead_letters)),
        *(
            Route(path, guard(IN, handler, "ingest." + fmt), methods=["POST"])
            for path, handler, fmt in (
                ("/api/v1/falco/events", ingest.falco_events, "falco"),
                ("/api/v1/ingest/cloudtrail", ingest.cloudtrail, "cloudtrail"),
                ("/api/v1/ingest/k8s-audit", ingest.k8s_audit, "k8s_audit"),
                ("/api/v1/ingest/gcp-audit", ingest.gcp_audit, "gcp_audit"),
                ("/api/v1/ingest/azure-activity", ingest.azure_activity, "azure_activity"),
            )
        ),
        Route("/api/v1/stream", guarded_stream(live.stream)),
        *(Route(r.path, guard(R, r.endpoint)) for r in graph.ROUTES),
        Route("/api/v1/auth/whoami", guard(R, auth_routes.whoami)),
        Route("/api/v1/auth/session", guard(S, auth_routes.start_session), methods=["POST"]),
        Route("/api/v1/auth/session", guard(S, auth_routes.end_session), methods=["DELETE"]),
        Route("/api/v1/auth/ticket", guard(S, auth_routes.ticket), methods=["POST"]),
        Route("/api/v1/api-keys", guard(A, auth_routes.list_keys)),
        Route(
            "/api/v1/api-keys",
            guard(A, auth_routes.create_key, "api_key.create"),
            methods=["POST"],
        ),
        Route(
            "/api/v1/api-keys/{id}",
            guard(A, auth_routes.revoke_key, "api_key.revoke"),
            methods=["DELETE"],
        ),
        Route("/api/v1/state-sources", guard(A, state_sources.list_sources)),
        Route(
            "/api/v1/state-sources",
            guard(A, state_sources.create_source, "state_source.create"),
            methods=["POST"],
        ),
        Route(
            "/api/v1/state-sources/{id}",
            guard(A, state_sources.delete_source, "state_source.delete"),
            methods=["DELETE"],
        ),
        Route("/api/v1/audit-log", guard(A, auth_routes.audit_log)),
        Route("/api/v1/audit-log/verify", guard(A, auth_routes.audit_verify)),
        Route("/openapi.json", guard(R, openapi)),
        Route("/metrics", guard(R, metrics.metrics)),
        WebSocketRoute("/ws", guard_ws(R, live_ws.websocket)),
    ]


class App(Starlette):
    """Starlette with `ServerSend` outside even its error middleware."""

    def build_middleware_stack(self) -> ASGIApp:
        return ServerSend(super().build_middleware_stack())


def create_app(api: Api) -> Starlette:
    """The ASGI app; `api` starts and stops with it."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await api.start()
        try:
            yield
        finally:
            await api.stop()

    app = App(
        routes=routes(),
        middleware=[
            Middleware(RequestId),
            Middleware(SecurityMiddleware, allowed_hosts=api.settings.allowed_hosts),
            Middleware(metrics.MetricsPort, port=api.settings.metrics_port),
            Middleware(
                CORSMiddleware,
                allow_origins=api.settings.cors_origins,
                allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
                allow_headers=["*"],
                expose_headers=["*"],
            ),
        ],
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        lifespan=lifespan,
    )
    app.state.api = api
    s = api.settings
    app.state.security = Security(s.cors_origins, s.auth_failures_per_minute, s.session_hours)
    return app
