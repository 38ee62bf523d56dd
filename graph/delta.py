"""What one graph update changed, as the hub's `graph` messages carry it."""

from __future__ import annotations

from typing import Any

from graph.model import NodeValue, edge_element, edge_id, node_element


class GraphDelta:
    """What one update changed. Recorded cheaply while the graph changes (the builder
    appends to the raw lists); turned into Cytoscape elements (added, updated) and ids
    (removed) only when read. A removed node takes its edges with it; `removed.edges` lists
    only edges removed on their own. `reset` means the change was too big to send element
    by element: refetch /graph.
    """

    __slots__ = (
        "changed_nodes",
        "dropped_edges",
        "dropped_nodes",
        "limit",
        "new_edges",
        "new_nodes",
        "reason",
        "reset",
    )

    def __init__(self, limit: int = 5_000) -> None:
        self.limit = limit
        self.reset = False
        self.reason: str | None = None
        self.new_nodes: list[tuple[str, NodeValue]] = []
        self.changed_nodes: list[tuple[str, NodeValue]] = []
        self.new_edges: list[tuple[str, str, dict[str, Any]]] = []
        self.dropped_nodes: list[str] = []
        self.dropped_edges: list[tuple[str, str, str]] = []

    def seal(self) -> GraphDelta | None:
        """The finished delta: None when nothing changed, a reset when too much did."""
        n = len(self)
        if n > self.limit:
            self.new_nodes, self.changed_nodes, self.new_edges = [], [], []
            self.dropped_nodes, self.dropped_edges = [], []
            self.reset, self.reason = True, f"more than {self.limit} changes in one update"
            return self
        return self if n else None

    @property
    def added_nodes(self) -> list[dict[str, Any]]:
        return [node_element(nid, value) for nid, value in self.new_nodes]

    @property
    def updated_nodes(self) -> list[dict[str, Any]]:
        return [node_element(nid, value) for nid, value in self.changed_nodes]

    @property
    def added_edges(self) -> list[dict[str, Any]]:
        return [edge_element(u, v, attrs) for u, v, attrs in self.new_edges]

    @property
    def removed_nodes(self) -> list[str]:
        return list(self.dropped_nodes)

    @property
    def removed_edges(self) -> list[str]:
        return [edge_id(u, label, v) for u, label, v in self.dropped_edges]

    def __len__(self) -> int:
        return (
            len(self.new_nodes)
            + len(self.changed_nodes)
            + len(self.new_edges)
            + len(self.dropped_nodes)
            + len(self.dropped_edges)
        )

    def __bool__(self) -> bool:
        return self.reset or len(self) > 0

    def as_dict(self) -> dict[str, Any]:
        """The payload of a hub message of type `graph`."""
        if self.reset:
            return {"reset": True, "reason": self.reason}
        return {
            "reset": False,
            "added": {"nodes": self.added_nodes, "edges": self.added_edges},
            "removed": {"nodes": self.removed_nodes, "edges": self.removed_edges},
            "updated": {"nodes": self.updated_nodes},
        }
