"""The live causal graph: built from the state, then updated by every committed batch.

Which cloud calls become `event` nodes (the rest cost a few dictionary lookups):
- every call that caused a drift;
- the context of a drift, "what else did they do around it": the same actor's other
  non-read-only calls (failed ones included) within `window_seconds` of the drift, at most
  `context_per_drift` after it and the last `prelude_per_actor` before it (kept in a small
  per-actor buffer of the calls themselves, `prelude_actors` actors at most).
Terraform's own calls and AWS service calls never drift, so they never qualify. The share
of an actor's traffic that can become nodes is bounded per drift, so one busy attacker (or a
busy automation role that drifted once) cannot flood the graph or the update path.

Memory is bounded: events, drifts and falco alerts leave by age (`retention_seconds`,
measured against the newest item time seen, so replays of old logs work) and by count;
actors and unmanaged nodes leave with their last edge; resources stay until a state reload.
Everything runs on the event loop thread: `observe` is called synchronously by the pipeline.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import networkx as nx

from graph.correlate import KeyIndex, alert_keys, drift_keys, event_keys
from graph.model import (
    ACTOR,
    AFFECTS,
    CAUSED,
    DEPENDS_ON,
    DRIFT,
    EDGE_TYPES,
    EVENT,
    FALCO,
    FOLLOWED_BY,
    NODE_TYPES,
    PERFORMED,
    RELATED,
    RESOURCE,
    UNMANAGED,
    ActorNode,
    DriftNode,
    EventNode,
    FalcoNode,
    GraphDelta,
    GraphLimits,
    NodeValue,
    ResourceNode,
    UnmanagedNode,
    parse_ts,
)
from graph.resources import dependencies, resource_node_id, resource_nodes
from monitor.clock import utc_now
from monitor.tfstate import StateIndex
from monitor.types import ChangeEvent, Clock, Drift, FalcoAlert

log = logging.getLogger("driftline.graph")
_BLAST_CACHE = 10_000
_BLAST_KEEP = 100
_SHARED_ATTRS = 10_000


class _Context:
    """The window (ISO 8601 to the second) around an actor's latest drift."""

    __slots__ = ("end", "left", "start")

    def __init__(self, start: str, end: str, left: int) -> None:
        self.start = start
        self.end = end
        self.left = left


class GraphBuilder:
    """The graph store (a networkx DiGraph) plus the side indexes that keep updates O(1)-ish.

    Node attribute `v` holds a NodeValue; edge attribute dicts are `{label[, via][, key]}`,
    shared between edges with the same label and reason and never mutated in place.
    """

    def __init__(
        self, index: StateIndex, limits: GraphLimits | None = None, clock: Clock = utc_now
    ) -> None:
        self.limits = (limits or GraphLimits()).validate()
        self.clock = clock
        self.g: Any = nx.DiGraph()
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
        self.counters: Counter[str] = Counter()
        self.session_last: dict[str, str] = {}  # session -> its latest event node
        # actor key -> the calls it made last (the records are kept, so that buffering a
        # call costs an append; bounded by prelude_actors x prelude_per_actor)
        self.prelude: dict[str, deque[ChangeEvent]] = {}
        # actor key -> the window around its latest drift, and context calls left
        self.context: OrderedDict[str, _Context] = OrderedDict()
        self.targets = KeyIndex(self.limits.recent_per_key)  # events and drifts by key
        self.alert_keys = KeyIndex(self.limits.recent_per_key)
        self.high_water: float | None = None
        self._latest: float | None = None  # item times past this are clamped to it
        self.index = index
        self._attrs: dict[Any, dict[str, Any]] = {}
        self._blast: OrderedDict[str, tuple[int, list[tuple[int, str]]]] = OrderedDict()
        self._delta = GraphDelta(0)
        self._load_state(index)

    # ---- state -------------------------------------------------------------------------

    def _load_state(self, index: StateIndex) -> None:
        g = self.g
        for nid, inst in resource_nodes(index):
            g.add_node(nid, v=ResourceNode(inst))
            self.resource_pos[nid] = len(self.resources)
            self.resources.append(nid)
        for dep in dependencies(index):
            self._link(dep.source, dep.target, DEPENDS_ON, dep.via)

    def reload_state(self, index: StateIndex) -> GraphDelta | None:
        """Replace the resources and their `depends_on` edges; live nodes stay. A drift whose
        resource left the state loses its `affects` edge."""
        g = self.g
        self._delta = c = GraphDelta(self.limits.max_delta_elements)
        new = dict(resource_nodes(index))
        for nid in self.resources:
            if nid not in new:
                self._remove(nid)
        old_deps: dict[tuple[str, str], str] = {}
        for nid in self.resources:
            if nid in g:
                for target, attrs in g._succ[nid].items():
                    if attrs["label"] == DEPENDS_ON:
                        old_deps[(nid, target)] = attrs["via"]
        self.resources, self.resource_pos = [], {}
        for nid, inst in new.items():
            self.resource_pos[nid] = len(self.resources)
            self.resources.append(nid)
            value = ResourceNode(inst)
            if nid in g:
                old = g._node[nid]["v"]
                g._node[nid]["v"] = value
                if old.fields() != value.fields():
                    c.changed_nodes.append((nid, value))
            else:
                g.add_node(nid, v=value)
                c.new_nodes.append((nid, value))
        new_deps = {(d.source, d.target): d.via for d in dependencies(index)}
        for (u, v), via in old_deps.items():
            if new_deps.get((u, v)) != via:
                self._unlink(u, v)
        for (u, v), via in new_deps.items():
            if old_deps.get((u, v)) != via:
                self._link(u, v, DEPENDS_ON, via)
        self.index = index
        self._blast.clear()
        self.counters["state_reloads"] += 1
        return c.seal()

    # ---- live updates ------------------------------------------------------------------

    def observe(
        self, changes: list[ChangeEvent], drifts: list[Drift], alerts: list[FalcoAlert]
    ) -> GraphDelta | None:
        """Add one committed batch; returns what changed (None if nothing did)."""
        self._delta = c = GraphDelta(self.limits.max_delta_elements)
        wall = parse_ts(self.clock())
        self._latest = wall + self.limits.future_skew_seconds if wall is not None else None
        by_event: dict[str, Drift] = {}
        pending: list[EventNode] = []
        if drifts:
            for d in drifts:
                by_event.setdefault(d.event_id, d)
            self._open_context(drifts, pending)
        context = self.context
        prelude = self.prelude if self.limits.prelude_per_actor > 0 else None
        # The loop below runs for every call of every batch: it is written out by hand.
        for ev in changes:
            if by_event:
                eid = ev.event_id
                if eid in by_event:
                    pending.append(EventNode.of_change(ev))
                    del by_event[eid]
                    continue
            rec = ev.record
            ro = rec.get("readOnly")
            if ro is True or (ro.__class__ is str and ro.lower() == "true"):
                continue
            uid = rec.get("userIdentity")
            key = uid.get("arn") or uid.get("principalId") if uid.__class__ is dict else None
            if not key or key.__class__ is not str:
                key = ev.actor.key
            if context:
                window = context.get(key)
                if window is not None:
                    # ISO 8601 UTC to the second compares as text: no parsing per call.
                    when = ev.event_time[:19]
                    if window.start <= when <= window.end:
                        if window.left > 0:
                            window.left -= 1
                            pending.append(EventNode.of_change(ev))
                        continue
                    if when > window.end:
                        del context[key]
            if prelude is not None:
                buf = prelude.get(key)
                if buf is None:
                    self._remember(key, ev)
                else:
                    buf.append(ev)
        for d in by_event.values():  # drifts whose change was not passed in
            pending.append(EventNode.of_drift(d))
        for en in pending:
            if en.ts is None:
                en.ts = parse_ts(en.time)
        if len(pending) > 1:
            pending.sort(key=lambda e: e.ts or 0.0)
        for en in pending:
            self._add_event(en)
        for d in drifts:
            self._add_drift(d)
        for a in alerts:
            self._add_alert(a)
        self._evict()
        return c.seal()

    def observer(
        self, publish: Callable[[GraphDelta], object] | None = None
    ) -> Callable[[list[ChangeEvent], list[Drift], list[FalcoAlert]], None]:
        """A pipeline observer: updates the graph and hands each delta to `publish`. A failure
        is logged and counted, never raised into the ingest that has already committed."""

        def observe(
            changes: list[ChangeEvent], drifts: list[Drift], alerts: list[FalcoAlert]
        ) -> None:
            try:
                delta = self.observe(changes, drifts, alerts)
                if delta is not None and publish is not None:
                    publish(delta)
            except Exception:
                self.counters["observe_errors"] += 1
                log.exception("graph update failed; the graph may miss this batch")

        return observe

    def _open_context(self, drifts: list[Drift], pending: list[EventNode]) -> None:
        """Each drifting actor's recent calls join the graph, and its next few will."""
        lim = self.limits
        window = lim.window_seconds
        context = self.context
        last: tuple[str, float | None, str, str] = ("", None, "", "")
        for d in drifts:
            if d.event_time == last[0]:  # one call's drifts share their time
                ts, start, end = last[1], last[2], last[3]
            else:
                ts = parse_ts(d.event_time)
                if ts is None:
                    continue
                start, end = _iso(ts - window)[:19], _iso(ts + window)[:19]
                last = (d.event_time, ts, start, end)
            if ts is None:
                continue
            key = d.actor.key
            current = context.get(key)
            if current is None or current.end < end:
                context[key] = _Context(start, end, lim.context_per_drift)
                context.move_to_end(key)
                if len(context) > lim.prelude_actors:
                    context.popitem(last=False)
            earlier = self.prelude.pop(key, None)
            for ev in earlier or ():
                if ev.event_id == d.event_id:
                    continue
                ets = parse_ts(ev.event_time)
                if ets is not None and ts - window <= ets <= ts + window:
                    node = EventNode.of_change(ev)
                    node.ts = ets
                    pending.append(node)

    def _remember(self, key: str, ev: ChangeEvent) -> None:
        """A new actor's buffer (the oldest actor's goes when there are too many)."""
        prelude = self.prelude
        prelude[key] = deque((ev,), maxlen=self.limits.prelude_per_actor)
        if len(prelude) > self.limits.prelude_actors:
            del prelude[next(iter(prelude))]

    def _stamp(self, ts: float | None) -> float | None:
        """The time to age an item by, or None when it is already past retention."""
        if ts is None:
            ts = self.high_water if self.high_water is not None else self._latest or 0.0
        elif self._latest is not None and ts > self._latest:
            ts = self._latest
        hw = self.high_water
        if hw is None or ts > hw:
            self.high_water = hw = ts
        if ts < hw - self.limits.retention_seconds:
            self.counters["too_old"] += 1
            return None
        return ts

    def _add_event(self, en: EventNode) -> None:
        g = self.g
        nid = "event:" + en.event_id
        if nid in g:
            return
        ts = self._stamp(en.ts)
        if ts is None:
            return
        self._put(nid, en)
        self.aging[EVENT].append((ts, nid))
        aid = "actor:" + en.actor.key
        known = g._node.get(aid)
        if known is None:
            self._put(aid, ActorNode(en.actor, en.time, ts))
            self.actors[aid] = None
        else:
            en.actor = known["v"].actor  # one Actor per actor node, not one per event
        self._link(aid, nid, PERFORMED)
        session = en.session
        if session:
            prev = self.session_last.get(session)
            if prev is not None and prev in g:
                self._link(prev, nid, FOLLOWED_BY)
            self.session_last[session] = nid
        en.keys = event_keys(en)
        self._correlate(nid, ts, en.keys)

    def _add_drift(self, d: Drift) -> None:
        g = self.g
        nid = "drift:" + d.id
        if nid in g:
            return
        ts = self._stamp(parse_ts(d.event_time))
        if ts is None:
            return
        value = DriftNode.of(d, ts)
        self._put(nid, value)
        self.aging[DRIFT].append((ts, nid))
        cause = "event:" + d.event_id
        if cause in g:
            self._link(cause, nid, CAUSED)
        target = resource_node_id(d.resource_address) if d.resource_address else None
        if target is None or target not in g:
            target = f"unmanaged:{d.resource_type}:{d.resource_id}"
            if target not in g:
                self._put(target, UnmanagedNode(d.resource_type, d.resource_id, d.event_time, ts))
                self.unmanaged[target] = None
        self._link(nid, target, AFFECTS)
        self._correlate(nid, ts, drift_keys(value))

    def _correlate(self, nid: str, ts: float, keys: tuple[tuple[str, str], ...]) -> None:
        """`related` edges from alerts seen near this event/drift; then remember its keys."""
        window = self.limits.window_seconds
        room = self.limits.related_per_item
        g = self.g
        for key, via in keys:
            if room > 0:
                for alert in self.alert_keys.near(key, ts, window, room):
                    if alert in g and nid not in g._succ[alert]:
                        self._link(alert, nid, RELATED, via, key)
                        room -= 1
                        if room <= 0:
                            break
            self.targets.add(key, ts, nid)

    def _add_alert(self, a: FalcoAlert) -> None:
        g = self.g
        nid = "falco:" + a.id
        if nid in g:
            return
        ts = self._stamp(parse_ts(a.time))
        if ts is None:
            return
        keys = alert_keys(a)
        value = FalcoNode.of(a, ts, keys)
        self._put(nid, value)
        self.aging[FALCO].append((ts, nid))
        window = self.limits.window_seconds
        room = self.limits.related_per_item
        succ = g._succ[nid]
        for key, via in keys:
            if room > 0:
                for target in self.targets.near(key, ts, window, room):
                    if target in g and target not in succ:
                        self._link(nid, target, RELATED, via, key)
                        room -= 1
                        if room <= 0:
                            break
            self.alert_keys.add(key, ts, nid)

    # ---- nodes, edges and removal ------------------------------------------------------

    def _put(self, nid: str, value: NodeValue) -> None:
        """A new node, written the way DiGraph.add_node writes it (without its per-call
        cache bookkeeping: nothing here uses networkx's cached backends)."""
        g = self.g
        g._succ[nid] = {}
        g._pred[nid] = {}
        g._node[nid] = {"v": value}
        self._delta.new_nodes.append((nid, value))

    def _link(
        self, u: str, v: str, label: str, via: str | None = None, key: str | None = None
    ) -> None:
        g = self.g
        succ = g._succ[u]
        if v in succ:
            return
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
        # Written like DiGraph.add_edge does, but sharing the attribute dict: a state of
        # 100,000 resources has hundreds of thousands of depends_on edges.
        succ[v] = attrs
        g._pred[v][u] = attrs
        self.edge_counts[label] += 1
        self._delta.new_edges.append((u, v, attrs))

    def _unlink(self, u: str, v: str) -> None:
        g = self.g
        attrs = g._succ[u].pop(v, None)
        if attrs is None:
            return
        del g._pred[v][u]
        self.edge_counts[attrs["label"]] -= 1
        self._delta.dropped_edges.append((u, attrs["label"], v))

    def _remove(self, nid: str, ts: float | None = None) -> None:
        """Remove a node and its edges; then actors and unmanaged nodes left without edges."""
        g = self.g
        node = g._node.pop(nid, None)
        if node is None:
            return
        value = node["v"]
        succ, pred = g._succ, g._pred
        counts = self.edge_counts
        orphans: list[str] = []
        # The delta names the node only: removing a node removes its edges (Cytoscape's
        # `remove` does the same), which keeps eviction and its message small.
        for target, attrs in succ.pop(nid).items():
            counts[attrs["label"]] -= 1
            del pred[target][nid]
            if target.startswith("unmanaged:"):
                orphans.append(target)
        for source, attrs in pred.pop(nid).items():
            counts[attrs["label"]] -= 1
            del succ[source][nid]
            if source.startswith("actor:"):
                orphans.append(source)
        self._delta.dropped_nodes.append(nid)
        kind = value.kind
        if ts is not None:  # an aged item: its keys were registered with this time
            if kind == EVENT:
                session = value.session
                if session and self.session_last.get(session) == nid:
                    del self.session_last[session]
                discard = self.targets.discard
                for key, _ in value.keys:
                    discard(key, ts, nid)
            elif kind == DRIFT:
                self.targets.discard("res:" + value.resource_id, ts, nid)
            elif kind == FALCO:
                discard = self.alert_keys.discard
                for key, _ in value.keys:
                    discard(key, ts, nid)
        elif kind == ACTOR:
            self.actors.pop(nid, None)
        elif kind == UNMANAGED:
            self.unmanaged.pop(nid, None)
        for other in orphans:
            if not succ[other] and not pred[other]:
                self._remove(other)

    def _evict(self) -> None:
        hw = self.high_water
        if hw is None:
            return
        horizon = hw - self.limits.retention_seconds
        lim = self.limits
        caps = ((EVENT, lim.max_events), (DRIFT, lim.max_drifts), (FALCO, lim.max_alerts))
        for kind, cap in caps:
            q = self.aging[kind]
            gone = 0
            while q and (len(q) > cap or q[0][0] < horizon):
                ts, nid = q.popleft()
                self._remove(nid, ts)
                gone += 1
            if gone:
                self.evicted[kind] += gone

    # ---- drift enrichment --------------------------------------------------------------

    def dependents(self, nid: str, depth: int) -> list[tuple[int, str]]:
        """(distance, node id) of every resource depending on `nid` within `depth` hops of
        reverse `depends_on`, nearest first."""
        pred = self.g._pred
        seen = {nid}
        frontier = [nid]
        out: list[tuple[int, str]] = []
        for dist in range(1, depth + 1):
            nxt: list[str] = []
            for n in frontier:
                for src, attrs in pred[n].items():
                    if attrs["label"] == DEPENDS_ON and src not in seen:
                        seen.add(src)
                        nxt.append(src)
            if not nxt:
                break
            nxt.sort()
            out.extend((dist, n) for n in nxt)
            frontier = nxt
        return out

    def blast_radius(self, resource_address: str, limit: int = 10) -> dict[str, Any]:
        """What depends on a resource, transitively: `{count, addresses}` (nearest first)."""
        nid = (
            resource_address
            if resource_address.startswith("resource:")
            else resource_node_id(resource_address)
        )
        hit = self._blast.get(nid)
        if hit is None:
            if nid not in self.resource_pos:
                return {"count": 0, "addresses": []}
            found = self.dependents(nid, self.limits.max_impact_depth)
            hit = (len(found), found[:_BLAST_KEEP])
            self._blast[nid] = hit
            if len(self._blast) > _BLAST_CACHE:
                self._blast.popitem(last=False)
        else:
            self._blast.move_to_end(nid)
        count, first = hit
        nodes = self.g._node
        addresses = [nodes[n]["v"].inst.address for _, n in first[: max(0, limit)] if n in nodes]
        return {"count": count, "addresses": addresses}

    def related_events(self, drift_id: str, limit: int = 20) -> list[dict[str, Any]]:
        """Falco alerts related to a drift (or to the call that caused it), then the other
        calls of the same session around it; each is node data plus `relation`."""
        g = self.g
        nid = drift_id if drift_id.startswith("drift:") else "drift:" + drift_id
        if nid not in g:
            return []
        pred = g._pred
        cause = next((s for s, a in pred[nid].items() if a["label"] == CAUSED), None)
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for n in (nid, cause):
            if n is None:
                continue
            for src, attrs in pred[n].items():
                if attrs["label"] == RELATED and src not in seen:
                    seen.add(src)
                    item = g._node[src]["v"].data(src)
                    item["relation"] = "related"
                    item["via"] = attrs.get("via")
                    item["key"] = attrs.get("key")
                    out.append(item)
        if cause is not None:
            for relation, step in (("session_before", pred), ("session_after", g._succ)):
                cur = cause
                for _ in range(limit):
                    cur = next((n for n, a in step[cur].items() if a["label"] == FOLLOWED_BY), None)
                    if cur is None:
                        break
                    item = g._node[cur]["v"].data(cur)
                    item["relation"] = relation
                    out.append(item)
        return out[:limit]

    # ---- sizes -------------------------------------------------------------------------

    def node_counts(self) -> dict[str, int]:
        return {
            RESOURCE: len(self.resources),
            UNMANAGED: len(self.unmanaged),
            ACTOR: len(self.actors),
            EVENT: len(self.aging[EVENT]),
            DRIFT: len(self.aging[DRIFT]),
            FALCO: len(self.aging[FALCO]),
        }

    def stats(self) -> dict[str, Any]:
        """total_nodes, total_edges, node_types, edge_types, and the bounds in force."""
        lim = self.limits
        nodes = self.node_counts()
        return {
            "total_nodes": self.g.number_of_nodes(),
            "total_edges": sum(self.edge_counts.values()),
            "node_types": {t: nodes[t] for t in NODE_TYPES},
            "edge_types": {t: self.edge_counts.get(t, 0) for t in EDGE_TYPES},
            "evicted": dict(self.evicted),
            "too_old": self.counters.get("too_old", 0),
            "observe_errors": self.counters.get("observe_errors", 0),
            "state_reloads": self.counters.get("state_reloads", 0),
            "prelude_actors": len(self.prelude),
            "context_actors": len(self.context),
            "correlation_keys": len(self.targets) + len(self.alert_keys),
            "newest_item_time": None if self.high_water is None else _iso(self.high_water),
            "limits": {
                "retention_seconds": lim.retention_seconds,
                "max_events": lim.max_events,
                "max_drifts": lim.max_drifts,
                "max_alerts": lim.max_alerts,
                "window_seconds": lim.window_seconds,
                "max_elements": lim.max_elements,
            },
        }

    def live_ids(self, kind: str) -> Iterable[str]:
        """Node ids of one type in insertion order (resources in state order)."""
        if kind == RESOURCE:
            return self.resources
        if kind == UNMANAGED:
            return self.unmanaged
        if kind == ACTOR:
            return self.actors
        return (nid for _, nid in self.aging[kind])


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
