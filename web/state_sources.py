"""`/api/v1/state-sources`: the admin API over state sources (tokens are write-only)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from web.envelope import ApiError, json_object, ok
from web.facade import api_of

FIELDS = frozenset({"url", "token", "username", "password", "endpoint", "poll_seconds"})


async def list_sources(request: Request) -> Response:
    return ok({"state_sources": api_of(request).state_sources()})


async def create_source(request: Request) -> Response:
    """Add a source from {url, token?, username?, password?, endpoint?, poll_seconds?}."""
    body = json_object(await request.body(), "body")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise ApiError("VALIDATION_ERROR", f"unknown field(s): {', '.join(unknown)}")
    try:
        view = await api_of(request).add_state_source(body)
    except ValueError as exc:  # SourceError: the URL or an option cannot work
        code = "CONFLICT" if "already a state source" in str(exc) else "VALIDATION_ERROR"
        raise ApiError(code, str(exc)) from None
    return ok(view, status=201)


async def delete_source(request: Request) -> Response:
    source_id = request.path_params["id"]
    gone = await api_of(request).remove_state_source(source_id)
    if gone is None:
        raise ApiError("NOT_FOUND", f"State source '{source_id}' not found", 404)
    return ok(gone)
