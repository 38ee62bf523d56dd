"""Who is calling and may they: credentials on REST, WebSocket and SSE, roles per route.

Every route's endpoint is wrapped by `guard` (HTTP) or `guard_ws` (WebSocket) with the
permission it needs; a test walks the route table and fails on any endpoint left unwrapped.
Credentials, in order: `Authorization: Bearer <key>`; `Authorization: Basic` with the key as
the password (what Falco's http_output sends for a URL with user info); the session cookie
from POST /api/v1/auth/session (writes also need its X-CSRF-Token); a single-use `?ticket=`
from POST /api/v1/auth/ticket, on the two streaming routes only.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from monitor.auth import AuditEntry, Permission, Principal, allows
from monitor.auth.keys import NO_AUTH, ApiKey
from web.envelope import ApiError, error
from web.facade import api_of
from web.sessions import SESSION_COOKIE, Security

log = logging.getLogger("driftline.access")
Endpoint = Callable[[Request], Awaitable[Response]]
WsEndpoint = Callable[[WebSocket], Awaitable[None]]
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Bodies a browser can send cross-site without a CORS preflight are never accepted.
_JSON_TYPES = re.compile(r"^application/(json|x-ndjson|jsonl|json-seq|[\w.+-]+\+json)$")
# Response fields an audit row keeps (a created key's secret is not among them).
AUDIT_FIELDS = (
    "accepted",
    "rejected",
    "changes",
    "falco_alerts",
    "drifts",
    "status",
    "previous_status",
    "name",
    "role",
    "revoked_at",
    "id",
)
# Falco posts text/plain when json_output is off: say what to change, not just "no".
FALCO_PATH = "/api/v1/falco/events"
FALCO_TEXT_HINT = (
    "; this is Falco's plain-text output: set json_output: true and "
    "json_include_output_property: true in falco.yaml"
)
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="driftline"'}


def security(conn: HTTPConnection) -> Security:
    sec: Security = conn.app.state.security
    return sec


def _client(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "unknown"


def _denied(conn: HTTPConnection, why: str) -> ApiError:
    """A 401 for bad credentials; it counts against the client's failure budget."""
    security(conn).limiter.fail(_client(conn))
    return ApiError("UNAUTHORIZED", why, 401, CHALLENGE)


def _principal(key: ApiKey, via: str) -> Principal:
    return Principal(key.id, key.name, key.role, via)


def _from_header(conn: HTTPConnection, header: str) -> Principal:
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        secret, via = value.strip(), "bearer"
    elif scheme == "basic":
        try:
            user, _, password = (
                base64.b64decode(value.strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            raise _denied(conn, "Authorization: Basic is not base64 of user:key") from None
        secret, via = password or user, "basic"
    else:
        raise _denied(conn, "Authorization must be 'Bearer <API key>'")
    key, refusal = api_of(conn).access.ring.authenticate(secret)
    if key is None or refusal:
        raise _denied(conn, f"API key {refusal or 'not accepted'}")
    return _principal(key, via)


def _from_session(conn: HTTPConnection, token: str) -> Principal:
    sec = security(conn)
    session = sec.sessions.get(token)
    if session is None:
        raise _denied(conn, "session expired or unknown; sign in again")
    key = sec.sessions.current_key(session, api_of(conn).access)
    if key is None:
        sec.sessions.end(token)
        raise _denied(conn, "the session's API key was revoked or has expired")
    unsafe = conn.scope["type"] == "http" and conn.scope["method"] in UNSAFE
    if unsafe and conn.headers.get("x-csrf-token") != session.csrf:
        raise ApiError("FORBIDDEN", "a session write needs its X-CSRF-Token header", 403)
    return _principal(key, "session")


def identify(conn: HTTPConnection, tickets: bool = False) -> Principal:
    """The caller, or an ApiError (401, or 429 once a client keeps failing)."""
    api = api_of(conn)
    if not api.settings.auth_enabled:
        return NO_AUTH
    retry = security(conn).limiter.retry_after(_client(conn))
    if retry:
        raise ApiError(
            "RATE_LIMIT_EXCEEDED",
            "too many failed authentication attempts; try again later",
            429,
            {"Retry-After": str(retry)},
        )
    header = conn.headers.get("authorization")
    if header:
        return _from_header(conn, header)
    if tickets and "ticket" in conn.query_params:
        sec = security(conn)
        key_id = sec.tickets.redeem(conn.query_params["ticket"])
        key = sec.sessions.key_by_id(key_id, api.access) if key_id else None
        if key is None:
            raise _denied(conn, "ticket unknown, used or expired (tickets last 60 s, once)")
        return _principal(key, "ticket")
    token = conn.cookies.get(SESSION_COOKIE)
    if token:
        return _from_session(conn, token)
    raise ApiError(
        "UNAUTHORIZED",
        "authentication required: send Authorization: Bearer <API key>",
        401,
        CHALLENGE,
    )


def authorize(principal: Principal, permission: Permission) -> None:
    if not allows(principal.role, permission):
        raise ApiError(
            "FORBIDDEN", f"role {principal.role} may not do this (needs {permission.value})", 403
        )


def _check_body_type(request: Request) -> None:
    """Writes with a body must say it is JSON: the CSRF-safe content types only."""
    if request.method not in UNSAFE:
        return
    has_body = request.headers.get("content-length", "0") != "0" or (
        "transfer-encoding" in request.headers
    )
    if not has_body:
        return
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not _JSON_TYPES.match(ctype):
        hint = FALCO_TEXT_HINT if request.url.path == FALCO_PATH and ctype == "text/plain" else ""
        raise ApiError(
            "UNSUPPORTED_MEDIA_TYPE",
            "Content-Type must be application/json (or application/x-ndjson), "
            f"not {ctype or 'none'}{hint}",
            415,
        )


def _summary(response: Response) -> dict[str, Any]:
    body = getattr(response, "body", b"")
    if not body or len(body) > 65536:
        return {}
    try:
        data = orjson.loads(body).get("data")
    except (orjson.JSONDecodeError, AttributeError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        k: data[k]
        for k in AUDIT_FIELDS
        if data.get(k) is not None and not isinstance(data[k], (dict, list))
    }


async def _audit(
    request: Request, principal: Principal, action: str, details: dict[str, Any]
) -> None:
    # The target is what the path names, else what the write created (a new key's id).
    target = "/".join(str(v) for v in request.path_params.values()) or details.pop("id", None)
    details.pop("id", None)
    entry = AuditEntry.by(principal, action, target, **details)
    await api_of(request).access.audit.append(entry)


def guard(
    permission: Permission, endpoint: Endpoint, action: str | None = None, tickets: bool = False
) -> Endpoint:
    """`endpoint` behind `permission`; unsafe methods are audited as `action`; `tickets`
    accepts a `?ticket=` too (the SSE stream, which EventSource cannot give a header)."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        if permission is Permission.PUBLIC:
            return await endpoint(request)
        principal = identify(request, tickets)
        authorize(principal, permission)
        _check_body_type(request)
        request.state.principal = principal
        if action is None or request.method not in UNSAFE:
            return await endpoint(request)
        try:
            response = await endpoint(request)
        except ApiError as exc:
            await _audit(request, principal, action, {"http_status": exc.status, "error": exc.code})
            raise
        await _audit(
            request, principal, action, {"http_status": response.status_code, **_summary(response)}
        )
        return response

    guarded.permission = permission  # type: ignore[attr-defined]
    return guarded


def guard_ws(permission: Permission, endpoint: WsEndpoint) -> WsEndpoint:
    """A WebSocket endpoint behind `permission`; a refused handshake gets an HTTP answer."""

    @functools.wraps(endpoint)
    async def guarded(ws: WebSocket) -> None:
        try:
            security(ws).check_origin(ws)
            principal = identify(ws, tickets=True)
            authorize(principal, permission)
        except ApiError as exc:
            await deny(ws, exc)
            return
        ws.state.principal = principal
        await endpoint(ws)

    guarded.permission = permission  # type: ignore[attr-defined]
    return guarded


async def deny(ws: WebSocket, exc: ApiError) -> None:
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        response = error(exc.code, exc.message, exc.status)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        await ws.send_denial_response(response)
    else:
        await ws.close(code=1008, reason=exc.message[:120])
