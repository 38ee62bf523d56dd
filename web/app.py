"""The Starlette application: routes, error envelopes, CORS and the facade's lifespan."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route, WebSocketRoute
from starlette.types import ASGIApp

from monitor.auth import Permission
from monitor.store import StorageFault, storage_fault
from web import (
    auth_routes,
    graph,
    health,
    ingest,
    live,
    live_ws,
    metrics,
    noise_routes,
    outputs,
    rest,
    state_sources,
)
from web.access import guard, guard_ws
from web.envelope import ApiError, JSONResponse, error
from web.facade import Api, api_of
from web.openapi import spec_for
from web.query import strict
from web.request_id import RequestId
from web.security import SecurityMiddleware
from web.sessions import Security
from web.transport import ServerSend

log = logging.getLogger("driftline.web")


async def openapi(request: Request) -> Response:
    return JSONResponse(spec_for(api_of(request).graph.limits))


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


async def _sqlite_error(request: Request, exc: Exception) -> Response:
    # From a store of the data dir other than the drifts' (the API keys, the audit log).
    fault = storage_fault(exc, "data dir")
    if fault is None:
        raise exc  # a bug: the 500 handler logs it
    log.error("%s %s: %s", request.method, request.url.path, fault)
    return await _storage_fault(request, fault)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error("INTERNAL_ERROR", "internal error; see the server log", 500)


R, L, IN, A, S, P = (
    Permission.READ,
    Permission.LIFECYCLE,
    Permission.INGEST,
    Permission.ADMIN,
    Permission.SESSION,
    Permission.PUBLIC,
)


def routes() -> list[Route | WebSocketRoute]:
    """Every route with the permission it needs (web.access); writes name their audit action.
    Every GET takes only the query parameters its /openapi.json entry names (web.query)."""
    return [
        Route("/livez", guard(P, strict(health.livez))),
        Route("/readyz", guard(P, strict(health.readyz))),
        Route("/health", guard(P, strict(health.health_status))),
        Route("/api/v1/health", guard(R, strict(health.health))),
        Route("/api/v1/state", guard(R, strict(rest.state_meta))),
        Route("/api/v1/state/resources", guard(R, strict(rest.state_resources))),
        Route("/api/v1/state/resources/{address:path}", guard(R, strict(rest.state_resource))),
        Route("/api/v1/events", guard(R, strict(rest.events))),
        Route("/api/v1/events/{id}", guard(R, strict(rest.event))),
        Route("/api/v1/drifts", guard(R, strict(rest.drifts))),
        Route("/api/v1/drifts/summary", guard(R, strict(rest.drift_summary))),
        Route("/api/v1/drifts/{id}", guard(R, strict(rest.drift))),
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
        Route("/api/v1/stats", guard(R, strict(rest.stats))),
        Route("/api/v1/dead-letters", guard(R, strict(rest.dead_letters))),
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
        Route("/api/v1/stream", guard(R, strict(live.stream), tickets=True)),
        *(Route(r.path, guard(R, strict(r.endpoint))) for r in graph.ROUTES),
        Route("/api/v1/auth/whoami", guard(R, strict(auth_routes.whoami))),
        Route("/api/v1/auth/session", guard(S, auth_routes.start_session), methods=["POST"]),
        Route("/api/v1/auth/session", guard(S, auth_routes.end_session), methods=["DELETE"]),
        Route("/api/v1/auth/ticket", guard(S, auth_routes.ticket), methods=["POST"]),
        Route("/api/v1/api-keys", guard(A, strict(auth_routes.list_keys))),
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
        Route("/api/v1/state-sources", guard(A, strict(state_sources.list_sources))),
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
        *_noise_routes(),
        *output_routes(),
        Route("/api/v1/audit-log", guard(A, strict(auth_routes.audit_log))),
        Route("/api/v1/audit-log/verify", guard(A, strict(auth_routes.audit_verify))),
        Route("/openapi.json", guard(R, strict(openapi))),
        Route("/metrics", guard(R, strict(metrics.metrics))),
        WebSocketRoute("/ws", guard_ws(R, live_ws.websocket)),
    ]


def _noise_routes() -> list[Route]:
    """Suppressions are an analyst's; rules and apply principals are configuration."""
    n = noise_routes
    out = [Route("/api/v1/rules", guard(R, strict(n.rules)))]
    for path, kind, audit, read, write in (
        ("/api/v1/suppressions", "suppression", "suppression", L, L),
        ("/api/v1/custom-rules", "custom_rule", "custom_rule", R, A),
        ("/api/v1/disabled-rules", "disabled_rule", "disabled_rule", R, A),
    ):
        out += [
            Route(path, guard(read, strict(n.list_items(kind)))),
            Route(path, guard(write, n.create_item(kind), audit + ".create"), methods=["POST"]),
            Route(
                path + "/{id}",
                guard(write, n.delete_item(kind), audit + ".delete"),
                methods=["DELETE"],
            ),
        ]
        if kind != "disabled_rule":
            out.append(
                Route(
                    path + "/{id}",
                    guard(write, n.patch_item(kind), audit + ".update"),
                    methods=["PATCH"],
                )
            )
    principals = "/api/v1/apply-principals"
    out += [
        Route(principals, guard(R, strict(n.list_items("apply_principal")))),
        Route(
            principals,
            guard(A, n.create_item("apply_principal"), "apply_principal.create"),
            methods=["POST"],
        ),
        Route(
            principals,
            guard(A, n.delete_principal, "apply_principal.delete"),
            methods=["DELETE"],
        ),
    ]
    return out


def output_routes() -> list[Route]:
    """Outputs: viewers read, admins write (secrets are write-only)."""
    one, deliveries = "/api/v1/outputs/{id}", "/api/v1/outputs/{id}/deliveries"
    return [
        Route("/api/v1/outputs", guard(R, strict(outputs.list_outputs))),
        Route(
            "/api/v1/outputs",
            guard(A, outputs.create_output, "output.create"),
            methods=["POST"],
        ),
        Route(one, guard(R, strict(outputs.get_output))),
        Route(one, guard(A, outputs.patch_output, "output.update"), methods=["PATCH"]),
        Route(one, guard(A, outputs.delete_output, "output.delete"), methods=["DELETE"]),
        Route(one + "/test", guard(A, outputs.test_output, "output.test"), methods=["POST"]),
        Route(deliveries, guard(R, strict(outputs.deliveries))),
        Route(
            deliveries + "/{did}/retry",
            guard(A, outputs.retry_delivery, "output.retry"),
            methods=["POST"],
        ),
        Route(
            "/api/v1/config/webhooks/test",
            guard(A, outputs.test_webhook, "output.test"),
            methods=["POST"],
        ),
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
            StorageFault: _storage_fault,
            sqlite3.Error: _sqlite_error,
            Exception: _internal_error,
        },
        lifespan=lifespan,
    )
    app.state.api = api
    s = api.settings
    app.state.security = Security(s.cors_origins, s.auth_failures_per_minute, s.session_hours)
    return app
