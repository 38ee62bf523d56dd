"""The `{success, data}` / `{success, error}` envelopes, request validation and pagination."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from monitor.types import DriftKind, Severity, Status

MAX_LIMIT = 1000
# A billion pages of MAX_LIMIT items is past any store; larger numbers would overflow the
# SQL OFFSET (an int64), so they are refused as out of range (REST and the WS query alike).
MAX_PAGE = 1_000_000_000
DEFAULT_LIMIT = 50
# The API lists choices as the contract's enums give them, severities most severe first.
SEVERITIES = tuple(s.value for s in reversed(Severity))
DRIFT_KINDS = tuple(k.value for k in DriftKind)
DRIFT_STATUSES = tuple(s.value for s in Status)
STATUS_FOR_CODE = {
    "VALIDATION_ERROR": 400,
    "BAD_REQUEST": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "CONFLICT": 409,
    "PAYLOAD_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "RATE_LIMIT_EXCEEDED": 429,
    "INTERNAL_ERROR": 500,
    "SERVICE_UNAVAILABLE": 503,
    "INSUFFICIENT_STORAGE": 507,
}


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


class ApiError(Exception):
    """Raised anywhere in a handler; rendered as the error envelope."""

    def __init__(
        self,
        code: str,
        message: str,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or STATUS_FOR_CODE.get(code, 400)
        self.headers = headers


def ok(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse({"success": True, "data": data}, status_code=status)


def error(code: str, message: str, status: int | None = None) -> JSONResponse:
    return JSONResponse(
        {"success": False, "error": {"code": code, "message": message}},
        status_code=status or STATUS_FOR_CODE.get(code, 400),
    )


def json_object(raw: str | bytes, what: str) -> dict[str, Any]:
    """A request body or WebSocket message that must be one JSON object; 400 otherwise."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError("VALIDATION_ERROR", f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise ApiError("VALIDATION_ERROR", f"{what} must be a JSON object")
    return value


def page_params(request: Request) -> tuple[int, int]:
    """`page` (default 1, max MAX_PAGE) and `limit` (default 50, max 1000); else a 400."""
    return (
        _int_param(request, "page", 1, 1, MAX_PAGE),
        _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
    )


def _int_param(request: Request, name: str, default: int, lo: int, hi: int | None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError("VALIDATION_ERROR", f"{name} must be an integer, got {raw!r}") from None
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise ApiError("VALIDATION_ERROR", f"{name} must be {bound}, got {value}")
    return value


def choice_param(request: Request, name: str, allowed: tuple[str, ...]) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if raw not in allowed:
        raise ApiError(
            "VALIDATION_ERROR", f"{name} must be one of {', '.join(allowed)}; got {raw!r}"
        )
    return raw


def time_param(request: Request, name: str) -> str | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    from monitor.types import DecodeError
    from streams.timefmt import normalise_time

    try:
        return normalise_time(raw)
    except DecodeError:
        raise ApiError(
            "VALIDATION_ERROR", f"{name} must be an ISO 8601 time or epoch seconds, got {raw!r}"
        ) from None


def page_data(key: str, items: list[Any], page: int, limit: int, total: int) -> dict[str, Any]:
    return {
        key: items,
        "page": page,
        "limit": limit,
        "total": total,
        "pages": (total + limit - 1) // limit,
    }
