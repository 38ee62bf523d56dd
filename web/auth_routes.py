"""Routes of access control: browser sessions and tickets, API keys, the audit log."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from monitor.auth import AuditFilter, Principal
from monitor.auth.keys import KeyOpError
from web.access import security
from web.envelope import (
    ApiError,
    _int_param,
    json_object,
    ok,
    page_data,
    page_params,
    time_param,
)
from web.facade import api_of
from web.sessions import SESSION_COOKIE, TICKET_SECONDS


def _principal(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


async def whoami(request: Request) -> Response:
    return ok(_principal(request).as_dict())


async def start_session(request: Request) -> Response:
    """Trade a key (Authorization header) for an HttpOnly session cookie and a CSRF token."""
    principal = _principal(request)
    if principal.via not in ("bearer", "basic"):
        raise ApiError("BAD_REQUEST", "sign in with Authorization: Bearer <API key>")
    access = api_of(request).access
    key = access.keys.get(principal.key_id)
    if key is None:
        raise ApiError("UNAUTHORIZED", "the key is gone", 401)
    sessions = security(request).sessions
    token, session = sessions.start(key)
    response = ok(
        {
            **principal.as_dict(),
            "via": "session",
            "csrf_token": session.csrf,
            "expires_in": int(sessions.seconds),
        },
        status=201,
    )
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(sessions.seconds),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def end_session(request: Request) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        security(request).sessions.end(token)
    response = ok({"signed_out": True})
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


async def ticket(request: Request) -> Response:
    """A single-use, 60-second ticket for `GET /api/v1/stream?ticket=` or `/ws?ticket=`."""
    issued = security(request).tickets.issue(_principal(request).key_id)
    return ok({"ticket": issued, "expires_in": int(TICKET_SECONDS)}, status=201)


async def list_keys(request: Request) -> Response:
    keys = await asyncio.to_thread(api_of(request).access.keys.list)
    return ok({"api_keys": [k.as_dict() for k in keys]})


async def create_key(request: Request) -> Response:
    body = json_object(await request.body(), "body")
    name, role, days = body.get("name"), body.get("role"), body.get("expires_in_days")
    if not isinstance(name, str) or not isinstance(role, str):
        raise ApiError("VALIDATION_ERROR", "name and role are required strings")
    if days is not None and (isinstance(days, bool) or not isinstance(days, (int, float))):
        raise ApiError("VALIDATION_ERROR", "expires_in_days must be a number of days")
    principal = _principal(request)
    access = api_of(request).access
    try:
        secret, key = await asyncio.to_thread(
            access.keys.create, name, role, f"{principal.name} ({principal.key_id})", days
        )
    except KeyOpError as exc:
        raise ApiError("VALIDATION_ERROR", str(exc)) from None
    # The only time the secret is ever returned.
    return ok({"key": secret, **key.as_dict()}, status=201)


async def revoke_key(request: Request) -> Response:
    access = api_of(request).access
    try:
        key = await asyncio.to_thread(access.revoke, request.path_params["id"])
    except KeyOpError as exc:
        raise ApiError("NOT_FOUND", str(exc), 404) from None
    security(request).sessions.end_all_for(key.id)
    return ok(key.as_dict())


async def audit_log(request: Request) -> Response:
    page, limit = page_params(request)
    q = request.query_params
    f = AuditFilter(
        actor=q.get("actor") or None,
        action=q.get("action") or None,
        since=time_param(request, "since"),
        until=time_param(request, "until"),
    )
    rows, total = await asyncio.to_thread(api_of(request).access.audit.page, f, page, limit)
    return ok(page_data("entries", rows, page, limit, total))


async def audit_verify(request: Request) -> Response:
    expected = _int_param(request, "expected_min_seq", 0, 0, None)
    result = await asyncio.to_thread(api_of(request).access.audit.verify, expected)
    return ok(result.as_dict())
