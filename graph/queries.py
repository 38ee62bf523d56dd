"""Read-only questions to the graph, answered as Cytoscape elements.

All functions run on the event loop thread, like the builder's updates, so they see a
consistent graph. Answers are bounded: pages (limit <= 1000), `max_elements` for the whole
graph, `max_neighbors` for neighbourhoods and blast radii.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Iterator
from itertools import islice, pairwise
from typing import Any

from graph.builder import GraphBuilder
from graph.model import (
    ACTOR,
    AFFECTS,
    CAUSED,
    DEPENDS_ON,
    DRIFT,
    EVENT,
    FALCO,
    FOLLOWED_BY,
    NODE_TYPES,
    PERFORMED,
    RELATED,
    RESOURCE,
    UNMANAGED,
    edge_element,
    node_element,
)

TIMED = (EVENT, DRIFT, FALCO)
# The labels of the edges leaving a node of each type (lets pages skip whole nodes).
OUT_LABELS: dict[str, frozenset[str]] = {
    RESOURCE: frozenset({DEPENDS_ON}),
    UNMANAGED: frozenset(),
    ACTOR: frozenset({PERFORMED}),
    EVENT: frozenset({CAUSED, FOLLOWED_BY}),
    DRIFT: frozenset({AFFECTS}),
    FALCO: frozenset({RELATED}),
}


def _type_of(nid: str) -> str:
    return nid.split(":", 1)[0]


def _in_window(ts: float | None, since: float | None, until: float | None) -> bool:
    if ts is None:
        return False
    return (since is None or ts >= since) and (until is None or ts <= until)


def _element(b: GraphBuilder, nid: str) -> dict[str, Any]:
    return node_element(nid, b.store.value(nid))


def resolve(b: GraphBuilder, ident: str) -> str | None:
    """A node id, accepting a bare resource address (`aws_vpc.main`) or drift id too."""
    g = b.g
    if ident in g:
        return ident
    for prefix in ("resource:", "drift:"):
        if prefix + ident in g:
            return prefix + ident
    return None


# ---- pages -------------------------------------------------------------------------------


def nodes_page(
    b: GraphBuilder,
    page: int,
    limit: int,
    types: Collection[str] | None = None,
    since: float | None = None,
    until: float | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """One page of nodes (resources in state order, then live nodes oldest first) and the
    total matching. With since/until only timed nodes (events, drifts, alerts, and actors and
    unmanaged resources by first sight) match."""
    kinds = [t for t in NODE_TYPES if types is None or t in types]
    offset = (page - 1) * limit
    out: list[str] = []
    if since is None and until is None:
        counts = b.node_counts()
        total = sum(counts[k] for k in kinds)
        for kind in kinds:
            n = counts[kind]
            if offset >= n:
                offset -= n
                continue
            need = limit - len(out)
            if kind == RESOURCE:
                out.extend(b.resources[offset : offset + need])
            elif kind in TIMED:
                out.extend(nid for _, nid in islice(b.aging[kind], offset, offset + need))
            else:
                out.extend(islice(b.live_ids(kind), offset, offset + need))
            offset = 0
            if len(out) >= limit:
                break
    else:
        value = b.store.value
        total = 0
        for kind in kinds:
            if kind == RESOURCE:
                continue
            for nid in b.live_ids(kind):
                if _in_window(value(nid).ts, since, until):
                    if offset <= total < offset + limit:
                        out.append(nid)
                    total += 1
    return [_element(b, nid) for nid in out], total


def _edge_ts(b: GraphBuilder, u: str, v: str) -> float | None:
    value = b.store.value
    ts: float | None = value(u).ts
    return ts if ts is not None else value(v).ts


def _all_ids(b: GraphBuilder) -> Iterator[tuple[str, str]]:
    for kind in NODE_TYPES:
        for nid in b.live_ids(kind):
            yield kind, nid


def edges_page(
    b: GraphBuilder,
    page: int,
    limit: int,
    types: Collection[str] | None = None,
    since: float | None = None,
    until: float | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """One page of edges (grouped by source node, in node order) and the total matching.
    With since/until an edge matches by the time of its timed end (depends_on never does)."""
    succ = b.g.succ
    offset = (page - 1) * limit
    out: list[dict[str, Any]] = []
    timed = since is not None or until is not None
    if not timed:
        total = sum(n for t, n in b.edge_counts.items() if types is None or t in types)
        seen = 0
        for kind, u in _all_ids(b):
            labels = OUT_LABELS[kind]
            wanted = labels if types is None else labels & set(types)
            if not wanted:
                continue
            adj = succ[u]
            if wanted == labels and seen + len(adj) <= offset:
                seen += len(adj)  # the whole node is before the page
                continue
            for v, attrs in adj.items():
                if attrs["label"] not in wanted:
                    continue
                if seen >= offset:
                    out.append(edge_element(u, v, attrs))
                    if len(out) >= limit:
                        return out, total
                seen += 1
        return out, total
    total = 0
    for kind, u in _all_ids(b):
        if kind == RESOURCE:
            continue
        for v, attrs in succ[u].items():
            if types is not None and attrs["label"] not in types:
                continue
            if not _in_window(_edge_ts(b, u, v), since, until):
                continue
            if offset <= total < offset + limit:
                out.append(edge_element(u, v, attrs))
            total += 1
    return out, total


# ---- the whole graph ---------------------------------------------------------------------


class _Selection:
    """Nodes picked for an answer, with the edges among them, within an element budget."""

    def __init__(self, b: GraphBuilder, budget: int, types: Collection[str] | None) -> None:
        self.b = b
        self.budget = budget
        self.types = types
        self.nodes: dict[str, None] = {}
        self.edges: list[tuple[str, str, dict[str, Any]]] = []
        self.full = False

    def allowed(self, nid: str) -> bool:
        return self.allows(_type_of(nid))

    def allows(self, kind: str) -> bool:
        return self.types is None or kind in self.types

    def add(self, nid: str) -> bool:
        """Add a node and its edges to nodes already picked; False once the budget is hit."""
        if nid in self.nodes:
            return True
        if self.full:
            return False
        g = self.b.g
        picked = self.nodes
        new = [(nid, v, a) for v, a in g.succ[nid].items() if v in picked]
        new.extend((u, nid, a) for u, a in g.pred[nid].items() if u in picked)
        if len(picked) + len(self.edges) + 1 + len(new) > self.budget:
            self.full = True
            return False
        picked[nid] = None
        self.edges.extend(new)
        return True

    def add_with_context(self, nid: str) -> None:
        """A live node, then the nodes that tell its story: cause, actor, target, alerts."""
        if not self.add(nid):
            return
        g = self.b.g
        for other, attrs in list(g.pred[nid].items()) + list(g.succ[nid].items()):
            label = attrs["label"]
            if label in (CAUSED, PERFORMED, AFFECTS, RELATED) and self.allowed(other):
                self.add(other)
                if label == CAUSED:  # drift <- event <- actor
                    for actor, a in g.pred[other].items():
                        if a["label"] == PERFORMED and self.allowed(actor):
                            self.add(actor)

    def answer(self) -> dict[str, Any]:
        nodes = [_element(self.b, nid) for nid in self.nodes]
        edges = [edge_element(u, v, a) for u, v, a in self.edges]
        return {"nodes": nodes, "edges": edges}


def _newest_first(b: GraphBuilder, kind: str) -> Iterator[tuple[float, str]]:
    return reversed(b.aging[kind])


def full_graph(
    b: GraphBuilder,
    types: Collection[str] | None = None,
    since: float | None = None,
    until: float | None = None,
    max_elements: int | None = None,
) -> dict[str, Any]:
    """The graph as Cytoscape elements, at most `max_elements` nodes + edges (`truncated`
    says whether anything matching was left out). Newest drifts come first, each with its
    event, actor, resource and alerts; then other events, alerts and the remaining resources.
    With since/until: the events, drifts and alerts in the window, with their actors and
    resources as context."""
    budget = min(max_elements or b.limits.max_elements, b.limits.max_elements)
    sel = _Selection(b, budget, types)
    timed = since is not None or until is not None
    for kind in (DRIFT, EVENT, FALCO):
        if not sel.allows(kind) or sel.full:
            continue
        for ts, nid in _newest_first(b, kind):
            if timed and not _in_window(ts, since, until):
                continue
            sel.add_with_context(nid)
            if sel.full:
                break
    if not timed:
        for kind in (ACTOR, UNMANAGED, RESOURCE):
            if sel.full or not sel.allows(kind):
                continue
            for nid in b.live_ids(kind):
                if not sel.add(nid):
                    break
    matching = _matching_nodes(b, types, since, until, sel)
    out = sel.answer()
    out["truncated"] = sel.full or len(sel.nodes) < matching
    out["total_nodes"] = b.g.number_of_nodes()
    out["total_edges"] = sum(b.edge_counts.values())
    out["max_elements"] = budget
    return out


def _matching_nodes(
    b: GraphBuilder,
    types: Collection[str] | None,
    since: float | None,
    until: float | None,
    sel: _Selection,
) -> int:
    if since is None and until is None:
        counts = b.node_counts()
        return sum(n for t, n in counts.items() if types is None or t in types)
    return len(sel.nodes)  # in a window the answer is what was reachable within budget


# ---- neighbourhoods ----------------------------------------------------------------------


def _edges_among(b: GraphBuilder, nodes: Iterable[str]) -> list[dict[str, Any]]:
    succ = b.g.succ
    picked = nodes if isinstance(nodes, (set, dict)) else set(nodes)
    return [edge_element(u, v, a) for u in picked for v, a in succ[u].items() if v in picked]


def neighbors(b: GraphBuilder, nid: str, depth: int) -> dict[str, Any]:
    """Every node within `depth` hops (either direction) and the edges among them."""
    g = b.g
    cap = b.limits.max_neighbors
    dist: dict[str, int] = {nid: 0}
    frontier = deque([nid])
    truncated = False
    while frontier and not truncated:
        n = frontier.popleft()
        d = dist[n]
        if d >= depth:
            continue
        for other in _adjacent(g, n):
            if other not in dist:
                if len(dist) >= cap:
                    truncated = True
                    break
                dist[other] = d + 1
                frontier.append(other)
    nodes = []
    for n, d in dist.items():
        el = _element(b, n)
        el["data"]["distance"] = d
        nodes.append(el)
    return {
        "center": nid,
        "depth": depth,
        "nodes": nodes,
        "edges": _edges_among(b, dist),
        "truncated": truncated,
    }


def _adjacent(g: Any, n: str) -> Iterator[str]:
    yield from g.succ[n]
    yield from g.pred[n]


def impact(b: GraphBuilder, nid: str, depth: int) -> dict[str, Any]:
    """Blast radius of a resource: what depends on it (reverse depends_on) within `depth`."""
    found = b.dependents(nid, depth)
    cap = b.limits.max_neighbors
    shown = found[: cap - 1]
    root = _element(b, nid)
    root["data"]["distance"] = 0
    nodes = [root]
    for d, n in shown:
        el = _element(b, n)
        el["data"]["distance"] = d
        nodes.append(el)
    picked = {nid, *(n for _, n in shown)}
    edges = [
        edge_element(u, v, a)
        for u in picked
        for v, a in b.g.succ[u].items()
        if v in picked and a["label"] == DEPENDS_ON
    ]
    return {
        "resource": nid,
        "depth": depth,
        "count": len(found),
        "by_distance": _by_distance(found),
        "nodes": nodes,
        "edges": edges,
        "truncated": len(shown) < len(found),
    }


def _by_distance(found: list[tuple[int, str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d, _ in found:
        out[str(d)] = out.get(str(d), 0) + 1
    return out


def path(b: GraphBuilder, source: str, target: str) -> dict[str, Any]:
    """The shortest path between two nodes, ignoring edge direction (edges keep theirs)."""
    g = b.g
    parent: dict[str, str | None] = {source: None}
    frontier = deque([source])
    while frontier and target not in parent:
        n = frontier.popleft()
        for other in _adjacent(g, n):
            if other not in parent:
                parent[other] = n
                frontier.append(other)
    if target not in parent:
        return {
            "from": source,
            "to": target,
            "found": False,
            "length": None,
            "nodes": [],
            "edges": [],
        }
    chain: list[str] = []
    cur: str | None = target
    while cur is not None:
        chain.append(cur)
        cur = parent[cur]
    chain.reverse()
    edges = []
    for a, c in pairwise(chain):
        if g.has_edge(a, c):
            edges.append(edge_element(a, c, g.succ[a][c]))
        else:
            edges.append(edge_element(c, a, g.succ[c][a]))
    return {
        "from": source,
        "to": target,
        "found": True,
        "length": len(chain) - 1,
        "nodes": [_element(b, n) for n in chain],
        "edges": edges,
    }


def node_detail(b: GraphBuilder, nid: str) -> dict[str, Any]:
    """One node's element with its degree per edge label."""
    g = b.g
    el = _element(b, nid)
    out_labels: dict[str, int] = {}
    in_labels: dict[str, int] = {}
    for a in g.succ[nid].values():
        out_labels[a["label"]] = out_labels.get(a["label"], 0) + 1
    for a in g.pred[nid].values():
        in_labels[a["label"]] = in_labels.get(a["label"], 0) + 1
    el["in_degree"] = g.in_degree(nid)
    el["out_degree"] = g.out_degree(nid)
    el["edges_in"] = in_labels
    el["edges_out"] = out_labels
    if _type_of(nid) == RESOURCE:
        el["blast_radius"] = b.blast_radius(nid)
    return el
