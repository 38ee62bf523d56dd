"""The graph store: the networkx DiGraph, the ids of each node type in order, edge counts,
and eviction; every change is recorded in the delta being built.

Node attribute `v` holds a NodeValue; edge attribute dicts are `{label[, via][, key]}`,
shared between edges with the same label and reason and never mutated in place.
Memory is bounded by eviction: events, drifts and falco alerts leave oldest first, by age
and by count; actors and unmanaged nodes leave with their last edge; resources stay until a
state reload. Writes that networkx's public API makes measurably slower or bigger are kept in
one section at the end (with the figures); everything else uses the public API.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import networkx as nx

from graph.delta import GraphDelta
from graph.model import (
    ACTOR,
    DRIFT,
    EDGE_TYPES,
    EVENT,
    FALCO,
    RESOURCE,
    UNMANAGED,
    NodeValue,
)

_SHARED_ATTRS = 10_000
Forget = Callable[[str, NodeValue, float], None]
"""Called for each evicted item: its node id, value, and the time it was aged by."""


class GraphStore:
    """Nodes and edges, with the side indexes that keep updates and pages O(1)-ish."""

    def __init__(self) -> None:
        self.g: Any = nx.DiGraph()
        self.nodes = self.g.nodes  # a NodeView: node id -> attribute dict
        self.resources: list[str] = []
        self.resource_pos: dict[str, int] = {}
        self.unmanaged: dict[str, None] = {}
        self.actors: dict[str, None] = {}
        self.aging: dict[str, deque[tuple[float, str]]] = {
            EVENT: deque(),
            DRIFT: deque(),
            FALCO: deque(),
        }
        self.edge_counts: dict[str, int] = dict.fromkeys(EDGE_TYPES, 0)
        self.evicted: dict[str, int] = {EVENT: 0, DRIFT: 0, FALCO: 0}
        self.delta = GraphDelta(0)
        self._attrs: dict[Any, dict[str, Any]] = {}

    def begin(self, limit: int) -> GraphDelta:
        """Start recording a new delta (at most `limit` elements before it becomes a reset)."""
        self.delta = GraphDelta(limit)
        return self.delta

    # ---- reads -------------------------------------------------------------------------

    def __contains__(self, nid: str) -> bool:
        return nid in self.g

    def value(self, nid: str) -> Any:
        """The NodeValue of a node that exists (typed Any: callers know its kind)."""
        return self.nodes[nid]["v"]

    def out_edges(self, nid: str) -> Iterable[tuple[str, dict[str, Any]]]:
        """(target, attrs) of the edges leaving `nid`."""
        return self.g.succ[nid].items()

    def in_edges(self, nid: str) -> Iterable[tuple[str, dict[str, Any]]]:
        """(source, attrs) of the edges entering `nid`."""
        return self.g.pred[nid].items()

    def node_counts(self) -> dict[str, int]:
        return {
            RESOURCE: len(self.resources),
            UNMANAGED: len(self.unmanaged),
            ACTOR: len(self.actors),
            EVENT: len(self.aging[EVENT]),
            DRIFT: len(self.aging[DRIFT]),
            FALCO: len(self.aging[FALCO]),
        }

    def live_ids(self, kind: str) -> Iterable[str]:
        """Node ids of one type in insertion order (resources in state order)."""
        if kind == RESOURCE:
            return self.resources
        if kind == UNMANAGED:
            return self.unmanaged
        if kind == ACTOR:
            return self.actors
        return _ids(self.aging[kind])

    # ---- writes ------------------------------------------------------------------------

    def put(self, nid: str, value: NodeValue) -> None:
        """A new node (the caller knows it is not there yet)."""
        _add_node(self.g, nid, value)
        self.delta.new_nodes.append((nid, value))

    def put_timed(self, kind: str, nid: str, value: NodeValue, ts: float) -> None:
        """A new event, drift or alert, aged by `ts`."""
        _add_node(self.g, nid, value)  # put(), inlined: this runs for every live item
        self.delta.new_nodes.append((nid, value))
        self.aging[kind].append((ts, nid))

    def replace(self, nid: str, value: NodeValue) -> None:
        """A node's new value, recorded as changed when what it shows differs."""
        attrs = self.nodes[nid]
        old = attrs["v"]
        attrs["v"] = value
        if old.fields() != value.fields():
            self.delta.changed_nodes.append((nid, value))

    def link(
        self, u: str, v: str, label: str, via: str | None = None, key: str | None = None
    ) -> bool:
        """An edge between two existing nodes; False if they were already joined."""
        shared = (label, via, key) if via is not None else label
        attrs = self._attrs.get(shared)
        if attrs is None:
            attrs = {"label": label}
            if via is not None:
                attrs["via"] = via
            if key is not None:
                attrs["key"] = key
            if len(self._attrs) >= _SHARED_ATTRS:
                self._attrs.clear()  # keys churn; sharing restarts, nothing is lost
            self._attrs[shared] = attrs
        if not _share_edge(self.g, u, v, attrs):
            return False
        self.edge_counts[label] += 1
        self.delta.new_edges.append((u, v, attrs))
        return True

    def unlink(self, u: str, v: str) -> None:
        g = self.g
        if not g.has_edge(u, v):
            return
        label = g.succ[u][v]["label"]
        g.remove_edge(u, v)
        self.edge_counts[label] -= 1
        self.delta.dropped_edges.append((u, label, v))

    def remove(self, nid: str) -> NodeValue | None:
        """Remove a node and its edges, then the actors and unmanaged nodes it leaves without
        edges; returns its value (None if it was not there)."""
        g = self.g
        popped = _pop_node(g, nid)
        if popped is None:
            return None
        value, out_edges, in_edges = popped
        orphans = self._drop_edges(out_edges, in_edges)
        # The delta names the node only: removing a node removes its edges (Cytoscape's
        # `remove` does the same), which keeps eviction and its message small.
        self.delta.dropped_nodes.append(nid)
        if value.kind == ACTOR:
            self.actors.pop(nid, None)
        elif value.kind == UNMANAGED:
            self.unmanaged.pop(nid, None)
        succ, pred = g.succ, g.pred
        for other in orphans:
            if other in g and not succ[other] and not pred[other]:
                self.remove(other)
        return value

    def _drop_edges(self, out_edges: _Adj, in_edges: _Adj) -> list[str]:
        """Count out the edges of a node gone; the actors and unmanaged nodes at their other
        end may be left without edges."""
        counts = self.edge_counts
        orphans: list[str] = []
        for target, attrs in out_edges.items():
            counts[attrs["label"]] -= 1
            if target.startswith("unmanaged:"):
                orphans.append(target)
        for source, attrs in in_edges.items():
            counts[attrs["label"]] -= 1
            if source.startswith("actor:"):
                orphans.append(source)
        return orphans

    def evict(self, horizon: float, caps: Iterable[tuple[str, int]], forget: Forget) -> None:
        """Remove the timed items older than `horizon`, then the oldest over each cap."""
        for kind, cap in caps:
            q = self.aging[kind]
            gone = 0
            while q and (len(q) > cap or q[0][0] < horizon):
                ts, nid = q.popleft()
                value = self.remove(nid)
                if value is not None:
                    forget(nid, value, ts)
                gone += 1
            if gone:
                self.evicted[kind] += gone


def _ids(q: deque[tuple[float, str]]) -> Iterator[str]:
    return (nid for _, nid in q)


# ---- networkx internals: the one place that touches them ---------------------------------
# Measured (bench data in one process, observe alone over 100,000 calls with 20,000
# resources, best of 7, alternating): with DiGraph.add_node / remove_node and the succ/pred
# views the update took 1.84 us/call, with _add_node / _pop_node 1.59 (the builder before
# the split: 1.45). Edges: see _share_edge.

_Adj = dict[str, dict[str, Any]]


def _add_node(g: Any, nid: str, value: NodeValue) -> None:
    """What DiGraph.add_node does for a new node, minus the cache clearing."""
    g._succ[nid] = {}
    g._pred[nid] = {}
    g._node[nid] = {"v": value}


def _pop_node(g: Any, nid: str) -> tuple[NodeValue, _Adj, _Adj] | None:
    """What DiGraph.remove_node does, handing back the node's value and its edges
    (target -> attrs, source -> attrs); None if it was not there."""
    node = g._node.pop(nid, None)
    if node is None:
        return None
    succ, pred = g._succ, g._pred
    out_edges: _Adj = succ.pop(nid)
    in_edges: _Adj = pred.pop(nid)
    for target in out_edges:
        del pred[target][nid]
    for source in in_edges:
        del succ[source][nid]
    return node["v"], out_edges, in_edges


def _share_edge(g: Any, u: str, v: str, attrs: dict[str, Any]) -> bool:
    """Join u -> v (False if they already are) with `attrs` as the edge's attribute dict.

    DiGraph.add_edge copies the
    attributes into a new dict per edge; measured with it instead (bench.graph_cost
    --resources 20000 --events 200000 --memory-events 50000): 968 B per resource node for
    the state graph instead of 819 (+18%), 2,400 B per live node instead of 1,754 (+37%).
    This is what add_edge does minus the copy and the cache clearing (nothing here uses
    networkx's cached backends); the caller has added both ends.
    """
    succ = g._succ[u]
    if v in succ:
        return False
    succ[v] = attrs
    g._pred[v][u] = attrs
    return True
