"""Noise control: `/api/v1/suppressions`, `/custom-rules`, `/disabled-rules`,
`/apply-principals` and the rule catalogue `/api/v1/rules`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from monitor.noise.service import CUSTOM, DISABLED, PRINCIPAL, SUPPRESSION, Conflict
from web.envelope import ApiError, json_object, ok, page_data, page_params
from web.facade import api_of

Endpoint = Callable[[Request], Awaitable[Response]]
# The collection name each kind is listed under, and what its missing items are called.
NAMES = {
    SUPPRESSION: ("suppressions", "Suppression"),
    CUSTOM: ("custom_rules", "Custom rule"),
    DISABLED: ("disabled_rules", "Disabled rule"),
    PRINCIPAL: ("apply_principals", "Apply principal"),
}


def _actor(request: Request) -> str:
    """Who asks, as the audit log and `created_by` name them."""
    principal = getattr(request.state, "principal", None)
    if principal is None:
        return "unknown"
    return f"{principal.name} ({principal.key_id})"


async def _body(request: Request) -> dict[str, Any]:
    return json_object(await request.body(), "body")


def _refused(exc: ValueError) -> ApiError:
    if isinstance(exc, Conflict):
        return ApiError("CONFLICT", str(exc), 409)
    return ApiError("VALIDATION_ERROR", str(exc))


def _missing(kind: str, item_id: str) -> ApiError:
    return ApiError("NOT_FOUND", f"{NAMES[kind][1]} '{item_id}' not found", 404)


def list_items(kind: str) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        return ok({NAMES[kind][0]: api_of(request).noise_items(kind)})

    return endpoint


def create_item(kind: str) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        body = await _body(request)
        try:
            view = await api_of(request).add_noise(kind, body, _actor(request))
        except ValueError as exc:
            raise _refused(exc) from None
        return ok(view, status=201)

    return endpoint


def patch_item(kind: str) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        item_id = request.path_params["id"]
        body = await _body(request)
        try:
            view = await api_of(request).patch_noise(kind, item_id, body)
        except ValueError as exc:
            raise _refused(exc) from None
        if view is None:
            raise _missing(kind, item_id)
        return ok(view)

    return endpoint


def delete_item(kind: str) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        item_id = request.path_params["id"]
        try:
            gone = await api_of(request).remove_noise(kind, item_id)
        except ValueError as exc:
            raise _refused(exc) from None
        if gone is None:
            raise _missing(kind, item_id)
        return ok(gone)

    return endpoint


async def delete_principal(request: Request) -> Response:
    """DELETE /api/v1/apply-principals with {"principal": ...} (a name is no path segment:
    ARNs hold slashes)."""
    body = await _body(request)
    name = body.get("principal")
    if not isinstance(name, str) or not name.strip():
        raise ApiError("VALIDATION_ERROR", "principal must be an ARN, a role or a user name")
    try:
        gone = await api_of(request).remove_noise(PRINCIPAL, name.strip())
    except ValueError as exc:
        raise _refused(exc) from None
    if gone is None:
        raise _missing(PRINCIPAL, name)
    return ok(gone)


async def rules(request: Request) -> Response:
    """The built-in catalogue, a page at a time; `?event=` and `?service=` narrow it."""
    page, limit = page_params(request)
    items = api_of(request).rule_catalogue()
    for key in ("event", "service"):
        want = request.query_params.get(key)
        if want:
            items = [r for r in items if r[key] == want]
    start = (page - 1) * limit
    return ok(page_data("rules", items[start : start + limit], page, limit, len(items)))
