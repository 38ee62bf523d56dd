"""Strict query strings: every GET route takes exactly the parameters its OpenAPI entry names.

The allowed names are read from the served document, so the spec and the server cannot
disagree: a typo (`serverity=critical`) is a 400 naming it instead of a silent "everything".
A parameter may appear once, except one whose schema is an array (the graph's `type`): its
values, repeated or comma-separated, are alternatives (OR).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from web.envelope import ApiError

Endpoint = Callable[[Request], Awaitable[Response]]


def query_names(spec: dict[str, Any], path: str) -> dict[str, bool]:
    """The query parameters the spec gives a path's GET, each with whether it may repeat."""
    operation = spec["paths"].get(path, {}).get("get", {})
    return {
        p["name"]: p["schema"].get("type") == "array"
        for p in operation.get("parameters", ())
        if p["in"] == "query"
    }


def check_query(request: Request, allowed: dict[str, bool]) -> None:
    """A 400 naming unknown parameters, or single-valued ones given more than once."""
    seen = Counter(k for k, _ in request.query_params.multi_items())
    unknown = sorted(set(seen) - set(allowed))
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise ApiError(
            "VALIDATION_ERROR",
            f"unknown query parameter(s): {', '.join(unknown)}; this endpoint takes: {known}",
        )
    repeated = sorted(k for k, n in seen.items() if n > 1 and not allowed[k])
    if repeated:
        raise ApiError(
            "VALIDATION_ERROR",
            f"query parameter(s) given more than once: {', '.join(repeated)}; each takes one value",
        )


def _checked(endpoint: Endpoint, allowed: dict[str, bool]) -> Endpoint:
    async def handler(request: Request) -> Response:
        check_query(request, allowed)
        return await endpoint(request)

    handler.__name__ = getattr(endpoint, "__name__", "handler")
    handler.__doc__ = endpoint.__doc__
    return handler


def strict_routes(routes: Sequence[BaseRoute], spec: dict[str, Any]) -> list[BaseRoute]:
    """`routes` with every GET endpoint checking its query string against `spec`."""
    out: list[BaseRoute] = []
    for route in routes:
        if isinstance(route, Route) and route.methods and "GET" in route.methods:
            path = route.path.replace(":path}", "}")
            allowed = query_names(spec, path)
            route = Route(
                route.path,
                _checked(route.endpoint, allowed),
                methods=sorted(route.methods - {"HEAD"}),
                name=route.name,
            )
        out.append(route)
    return out
