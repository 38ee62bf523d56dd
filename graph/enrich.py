"""Enrichment: the resources and `depends_on` edges the Terraform state declares, and what
they tell about a drift (its blast radius, the alerts and session calls around it)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from graph.model import CAUSED, DEPENDS_ON, FOLLOWED_BY, RELATED, ResourceNode
from graph.resources import dependencies, resource_node_id, resource_nodes
from graph.store import GraphStore
from monitor.tfstate import StateIndex

_BLAST_CACHE = 10_000
_BLAST_KEEP = 100


def load_state(store: GraphStore, index: StateIndex) -> None:
    """The state's resources and their dependencies, into an empty store."""
    for nid, inst in resource_nodes(index):
        store.put(nid, ResourceNode(inst))
        store.resource_pos[nid] = len(store.resources)
        store.resources.append(nid)
    for dep in dependencies(index):
        store.link(dep.source, dep.target, DEPENDS_ON, dep.via)


def reload_state(store: GraphStore, index: StateIndex) -> None:
    """Replace the resources and their `depends_on` edges (recorded in the store's delta);
    live nodes stay. A drift whose resource left the state loses its `affects` edge."""
    new = dict(resource_nodes(index))
    for nid in store.resources:
        if nid not in new:
            store.remove(nid)
    old_deps = _depends_on(store)
    store.resources, store.resource_pos = [], {}
    for nid, inst in new.items():
        store.resource_pos[nid] = len(store.resources)
        store.resources.append(nid)
        value = ResourceNode(inst)
        if nid in store:
            store.replace(nid, value)
        else:
            store.put(nid, value)
    new_deps = {(d.source, d.target): d.via for d in dependencies(index)}
    for (u, v), via in old_deps.items():
        if new_deps.get((u, v)) != via:
            store.unlink(u, v)
    for (u, v), via in new_deps.items():
        if old_deps.get((u, v)) != via:
            store.link(u, v, DEPENDS_ON, via)


def _depends_on(store: GraphStore) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for nid in store.resources:
        if nid in store:
            for target, attrs in store.out_edges(nid):
                if attrs["label"] == DEPENDS_ON:
                    out[(nid, target)] = attrs["via"]
    return out


def dependents(store: GraphStore, nid: str, depth: int) -> list[tuple[int, str]]:
    """(distance, node id) of every resource depending on `nid` within `depth` hops of
    reverse `depends_on`, nearest first."""
    seen = {nid}
    frontier = [nid]
    out: list[tuple[int, str]] = []
    for dist in range(1, depth + 1):
        nxt: list[str] = []
        for n in frontier:
            for src, attrs in store.in_edges(n):
                if attrs["label"] == DEPENDS_ON and src not in seen:
                    seen.add(src)
                    nxt.append(src)
        if not nxt:
            break
        nxt.sort()
        out.extend((dist, n) for n in nxt)
        frontier = nxt
    return out


class BlastRadius:
    """What depends on a resource, transitively; answers are cached until a state reload."""

    def __init__(self, store: GraphStore, depth: int) -> None:
        self.store = store
        self.depth = depth
        self._cache: OrderedDict[str, tuple[int, list[tuple[int, str]]]] = OrderedDict()

    def clear(self) -> None:
        self._cache.clear()

    def __call__(self, resource_address: str, limit: int = 10) -> dict[str, Any]:
        """`{count, addresses}` (nearest first) for a resource address or node id."""
        nid = (
            resource_address
            if resource_address.startswith("resource:")
            else resource_node_id(resource_address)
        )
        store = self.store
        hit = self._cache.get(nid)
        if hit is None:
            if nid not in store.resource_pos:
                return {"count": 0, "addresses": []}
            found = dependents(store, nid, self.depth)
            hit = (len(found), found[:_BLAST_KEEP])
            self._cache[nid] = hit
            if len(self._cache) > _BLAST_CACHE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(nid)
        count, first = hit
        addresses = [store.value(n).inst.address for _, n in first[: max(0, limit)] if n in store]
        return {"count": count, "addresses": addresses}


def related_events(store: GraphStore, drift_id: str, limit: int = 20) -> list[dict[str, Any]]:
    """Falco alerts related to a drift (or to the call that caused it), then the other
    calls of the same session around it; each is node data plus `relation`."""
    nid = drift_id if drift_id.startswith("drift:") else "drift:" + drift_id
    if nid not in store:
        return []
    cause = next((s for s, a in store.in_edges(nid) if a["label"] == CAUSED), None)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for n in (nid, cause):
        if n is None:
            continue
        for src, attrs in store.in_edges(n):
            if attrs["label"] == RELATED and src not in seen:
                seen.add(src)
                item = store.value(src).data(src)
                item["relation"] = "related"
                item["via"] = attrs.get("via")
                item["key"] = attrs.get("key")
                out.append(item)
    if cause is not None:
        out.extend(_session(store, cause, "session_before", limit, forward=False))
        out.extend(_session(store, cause, "session_after", limit, forward=True))
    return out[:limit]


def _session(
    store: GraphStore, start: str, relation: str, limit: int, forward: bool
) -> list[dict[str, Any]]:
    """Up to `limit` calls of a session, walking `followed_by` edges from `start`."""
    step = store.out_edges if forward else store.in_edges
    out: list[dict[str, Any]] = []
    cur = start
    for _ in range(limit):
        nxt = next((n for n, a in step(cur) if a["label"] == FOLLOWED_BY), None)
        if nxt is None:
            break
        cur = nxt
        item = store.value(cur).data(cur)
        item["relation"] = relation
        out.append(item)
    return out
