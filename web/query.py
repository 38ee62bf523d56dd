"""Strict query strings: every GET route takes exactly the parameters its OpenAPI entry names.

The allowed names are read from the served document, so the spec and the server cannot
disagree: a typo (`serverity=critical`) is a 400 naming it instead of a silent "everything".
A parameter may appear once, except one whose schema is an array (the graph's `type`): its
values, repeated or comma-separated, are alternatives (OR).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from web.envelope import ApiError
from web.openapi import SPEC

Endpoint = Callable[[Request], Awaitable[Response]]


def query_names(spec: dict[str, Any], path: str) -> dict[str, bool]:
    """The query parameters the spec gives a path's GET, each with whether it may repeat."""
    operation = spec["paths"].get(path, {}).get("get", {})
    names = {
        p["name"]: p["schema"].get("type") == "array"
        for p in operation.get("parameters", ())
        if p["in"] == "query"
    }
    # Credentials that travel in the query string (the streams' `?ticket=`).
    schemes = spec.get("components", {}).get("securitySchemes", {})
    for requirement in operation.get("security", spec.get("security", ())):
        for scheme in requirement:
            if schemes.get(scheme, {}).get("in") == "query":
                names[schemes[scheme]["name"]] = False
    return names


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


def strict(endpoint: Endpoint) -> Endpoint:
    """`endpoint` refusing the query parameters its route's /openapi.json entry does not name.

    Wrapped inside the route's access guard, so a caller without credentials gets a 401
    before anything about the parameters."""

    # wraps: the route table's checks can still see what the endpoint is.
    @functools.wraps(endpoint)
    async def handler(request: Request) -> Response:
        route = request.scope["route"]
        check_query(request, _allowed(route.path.replace(":path}", "}")))
        return await endpoint(request)

    handler.strict_query = True  # type: ignore[attr-defined]
    return handler


@functools.cache
def _allowed(path: str) -> dict[str, bool]:
    return query_names(SPEC, path)
