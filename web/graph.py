"""The graph API under /api/v1/graph: the whole graph, pages, one node, neighbourhoods,
blast radius, paths and stats, as Cytoscape elements in the usual envelope."""

from __future__ import annotations

from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from graph import queries
from graph.builder import GraphBuilder
from graph.model import EDGE_TYPES, NODE_TYPES, RESOURCE, parse_ts
from web.envelope import ApiError, ok, page_data, page_params, time_param
from web.facade import api_of

MAX_NEIGHBOR_DEPTH = 3
DEFAULT_IMPACT_DEPTH = 3


def builder_of(request: Request) -> GraphBuilder:
    return api_of(request).graph


def _types(request: Request, allowed: tuple[str, ...]) -> set[str] | None:
    """`type=drift,event` (or repeated `type=`); unknown names are a 400."""
    raw = [p for v in request.query_params.getlist("type") for p in v.split(",") if p.strip()]
    if not raw:
        return None
    wanted = {p.strip() for p in raw}
    bad = sorted(wanted - set(allowed))
    if bad:
        raise ApiError(
            "VALIDATION_ERROR", f"type must be among {', '.join(allowed)}; got {', '.join(bad)}"
        )
    return wanted


def _window(request: Request) -> tuple[float | None, float | None]:
    # since after until is an empty window, as on /drifts and /events (not a 400 the
    # document could not state).
    return parse_ts(time_param(request, "since")), parse_ts(time_param(request, "until"))


def _depth(request: Request, default: int, most: int) -> int:
    raw = request.query_params.get("depth")
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError("VALIDATION_ERROR", f"depth must be an integer, got {raw!r}") from None
    if not 1 <= value <= most:
        raise ApiError("VALIDATION_ERROR", f"depth must be between 1 and {most}, got {value}")
    return value


def _node(b: GraphBuilder, raw: str) -> str:
    """The node an id names (a bare resource address or drift id is accepted too)."""
    for candidate in (raw, unquote(raw)):
        if candidate:
            nid = queries.resolve(b, candidate)
            if nid is not None:
                return nid
    raise ApiError("NOT_FOUND", f"Node with ID '{raw}' not found")


async def graph(request: Request) -> Response:
    b = builder_of(request)
    types = _types(request, NODE_TYPES)
    since, until = _window(request)
    raw = request.query_params.get("limit")
    most = b.limits.max_elements
    cap: int | None = None
    if raw:
        try:
            cap = int(raw)
        except ValueError:
            raise ApiError("VALIDATION_ERROR", f"limit must be an integer, got {raw!r}") from None
        if not 1 <= cap <= most:
            raise ApiError("VALIDATION_ERROR", f"limit must be between 1 and {most}, got {cap}")
    return ok(queries.full_graph(b, types, since, until, cap))


async def nodes(request: Request) -> Response:
    b = builder_of(request)
    page, limit = page_params(request)
    types = _types(request, NODE_TYPES)
    since, until = _window(request)
    items, total = queries.nodes_page(b, page, limit, types, since, until)
    return ok(page_data("nodes", items, page, limit, total))


async def edges(request: Request) -> Response:
    b = builder_of(request)
    page, limit = page_params(request)
    types = _types(request, EDGE_TYPES)
    since, until = _window(request)
    items, total = queries.edges_page(b, page, limit, types, since, until)
    return ok(page_data("edges", items, page, limit, total))


async def node(request: Request) -> Response:
    b = builder_of(request)
    return ok(queries.node_detail(b, _node(b, request.path_params["id"])))


async def neighbors(request: Request) -> Response:
    b = builder_of(request)
    nid = _node(b, request.path_params["id"])
    depth = _depth(request, 1, MAX_NEIGHBOR_DEPTH)
    return ok(queries.neighbors(b, nid, depth))


async def impact(request: Request) -> Response:
    b = builder_of(request)
    nid = _node(b, request.path_params["id"])
    depth = _depth(request, DEFAULT_IMPACT_DEPTH, b.limits.max_impact_depth)
    if not nid.startswith(RESOURCE + ":"):
        raise ApiError(
            "VALIDATION_ERROR", f"impact is defined for resource nodes; '{nid}' is not one"
        )
    return ok(queries.impact(b, nid, depth))


async def path(request: Request) -> Response:
    b = builder_of(request)
    ends = []
    for name in ("from", "to"):
        raw = request.query_params.get(name)
        if not raw:
            raise ApiError("VALIDATION_ERROR", f"{name} is required (a node id)")
        ends.append(_node(b, raw))
    return ok(queries.path(b, ends[0], ends[1]))


async def stats(request: Request) -> Response:
    return ok(builder_of(request).stats())


ROUTES: list[Route] = [
    Route("/api/v1/graph", graph),
    Route("/api/v1/graph/nodes", nodes),
    Route("/api/v1/graph/nodes/{id:path}", node),
    Route("/api/v1/graph/edges", edges),
    Route("/api/v1/graph/neighbors/{id:path}", neighbors),
    Route("/api/v1/graph/impact/{id:path}", impact),
    Route("/api/v1/graph/path", path),
    Route("/api/v1/graph/stats", stats),
]
