"""The live causal graph: built from the state, then updated by every committed batch.

`GraphBuilder` is the face the pipeline, the daemon and the web layer see; the work is done
by the graph store and its eviction (`graph.store`), observation of batches
(`graph.observe`) and enrichment from the state (`graph.enrich`).
Everything runs on the event loop thread: `observe` is called synchronously by the pipeline.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

from graph import enrich
from graph.correlate import KeyIndex
from graph.delta import GraphDelta
from graph.model import EDGE_TYPES, NODE_TYPES, GraphLimits
from graph.observe import Observation, iso
from graph.store import GraphStore
from monitor.clock import utc_now
from monitor.tfstate import StateIndex
from monitor.types import ChangeEvent, Clock, Drift, FalcoAlert, Observer

log = logging.getLogger("driftline.graph")


class GraphBuilder:
    """The graph (store, live observation, state enrichment) behind one object."""

    def __init__(
        self, index: StateIndex, limits: GraphLimits | None = None, clock: Clock = utc_now
    ) -> None:
        self.limits = (limits or GraphLimits()).validate()
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self.store = GraphStore()
        self.live = Observation(self.store, self.limits, clock, self.counters)
        self.index = index
        self._blast = enrich.BlastRadius(self.store, self.limits.max_impact_depth)
        enrich.load_state(self.store, index)
        self.store.begin(0)  # the load is no delta: nobody has seen the graph yet

    # ---- updates -----------------------------------------------------------------------

    def observe(
        self, changes: list[ChangeEvent], drifts: list[Drift], alerts: list[FalcoAlert]
    ) -> GraphDelta | None:
        """Add one committed batch; returns what changed (None if nothing did)."""
        return self.live.observe(changes, drifts, alerts)

    def observer(self, publish: Callable[[GraphDelta], object] | None = None) -> Observer:
        """A pipeline observer: updates the graph and hands each delta to `publish`. A failure
        is logged and counted, never raised into the ingest that has already committed."""

        def observe(
            changes: list[ChangeEvent], drifts: list[Drift], alerts: list[FalcoAlert]
        ) -> None:
            try:
                delta = self.live.observe(changes, drifts, alerts)
                if delta is not None and publish is not None:
                    publish(delta)
            except Exception:
                self.counters["observe_errors"] += 1
                log.exception("graph update failed; the graph may miss this batch")

        return observe

    def reload_state(self, index: StateIndex) -> GraphDelta | None:
        """Replace the resources and their `depends_on` edges; live nodes stay. A drift whose
        resource left the state loses its `affects` edge."""
        delta = self.store.begin(self.limits.max_delta_elements)
        enrich.reload_state(self.store, index)
        self.index = index
        self._blast.clear()
        self.counters["state_reloads"] += 1
        return delta.seal()

    # ---- enrichment --------------------------------------------------------------------

    def dependents(self, nid: str, depth: int) -> list[tuple[int, str]]:
        """(distance, node id) of every resource depending on `nid` within `depth` hops of
        reverse `depends_on`, nearest first."""
        return enrich.dependents(self.store, nid, depth)

    def blast_radius(self, resource_address: str, limit: int = 10) -> dict[str, Any]:
        """What depends on a resource, transitively: `{count, addresses}` (nearest first)."""
        return self._blast(resource_address, limit)

    def related_events(self, drift_id: str, limit: int = 20) -> list[dict[str, Any]]:
        """Falco alerts related to a drift (or to the call that caused it), then the other
        calls of the same session around it; each is node data plus `relation`."""
        return enrich.related_events(self.store, drift_id, limit)

    # ---- sizes -------------------------------------------------------------------------

    def node_counts(self) -> dict[str, int]:
        return self.store.node_counts()

    def live_ids(self, kind: str) -> Iterable[str]:
        """Node ids of one type in insertion order (resources in state order)."""
        return self.store.live_ids(kind)

    def stats(self) -> dict[str, Any]:
        """total_nodes, total_edges, node_types, edge_types, and the bounds in force."""
        lim = self.limits
        live = self.live
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
            "prelude_actors": len(live.prelude),
            "context_actors": len(live.context),
            "correlation_keys": len(live.targets) + len(live.alert_keys),
            "newest_item_time": None if live.high_water is None else iso(live.high_water),
            "limits": {
                "retention_seconds": lim.retention_seconds,
                "max_events": lim.max_events,
                "max_drifts": lim.max_drifts,
                "max_alerts": lim.max_alerts,
                "window_seconds": lim.window_seconds,
                "max_elements": lim.max_elements,
            },
        }

    # ---- the parts, for queries and tests ----------------------------------------------

    @property
    def g(self) -> Any:
        """The networkx DiGraph (read it; change it only through the store)."""
        return self.store.g

    @property
    def resources(self) -> list[str]:
        return self.store.resources

    @property
    def unmanaged(self) -> dict[str, None]:
        return self.store.unmanaged

    @property
    def actors(self) -> dict[str, None]:
        return self.store.actors

    @property
    def aging(self) -> dict[str, deque[tuple[float, str]]]:
        return self.store.aging

    @property
    def edge_counts(self) -> dict[str, int]:
        return self.store.edge_counts

    @property
    def evicted(self) -> dict[str, int]:
        return self.store.evicted

    @property
    def session_last(self) -> dict[str, str]:
        return self.live.session_last

    @property
    def prelude(self) -> dict[str, deque[ChangeEvent]]:
        return self.live.prelude

    @property
    def context(self) -> OrderedDict[str, Any]:
        return self.live.context

    @property
    def targets(self) -> KeyIndex:
        return self.live.targets

    @property
    def alert_keys(self) -> KeyIndex:
        return self.live.alert_keys

    @property
    def high_water(self) -> float | None:
        return self.live.high_water
