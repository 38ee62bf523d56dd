"""Graph vocabulary: node and edge types, node values, limits and Cytoscape elements."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from monitor.actors import Actor
from monitor.tfstate import ResourceInstance
from monitor.types import ChangeEvent, Drift, FalcoAlert

RESOURCE = "resource"
DRIFT = "drift"
EVENT = "event"
FALCO = "falco"
ACTOR = "actor"
UNMANAGED = "unmanaged"
NODE_TYPES = (RESOURCE, UNMANAGED, ACTOR, EVENT, DRIFT, FALCO)

DEPENDS_ON = "depends_on"
PERFORMED = "performed"
CAUSED = "caused"
AFFECTS = "affects"
RELATED = "related"
FOLLOWED_BY = "followed_by"
EDGE_TYPES = (DEPENDS_ON, PERFORMED, CAUSED, AFFECTS, RELATED, FOLLOWED_BY)


def parse_ts(text: str | None) -> float | None:
    """Epoch seconds of an ISO 8601 time (as `normalise_time` writes it), None if unreadable."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _shared(text: Any) -> Any:
    """One copy of the strings thousands of nodes repeat (names, regions, accounts, IPs)."""
    return sys.intern(text) if isinstance(text, str) and len(text) < 64 else text


def node_id(kind: str, key: str) -> str:
    return f"{kind}:{key}"


def edge_id(source: str, label: str, target: str) -> str:
    """Edges are unique per (source, target); the id says what they are."""
    return f"{label}:{source}->{target}"


@dataclass(frozen=True, slots=True)
class GraphLimits:
    """Retention, caps and correlation settings (see docs/graph.md)."""

    retention_seconds: float = 24 * 3600
    max_events: int = 50_000
    max_alerts: int = 20_000
    max_drifts: int = 50_000
    window_seconds: float = 600  # falco alert <-> event/drift correlation window
    related_per_item: int = 5  # at most this many `related` edges made for one new node
    recent_per_key: int = 64  # recent items remembered per correlation key
    context_per_drift: int = 3  # the drifting actor's next calls shown after a drift
    prelude_per_actor: int = 2  # its last calls before a drift (buffered per actor)
    prelude_actors: int = 1_000  # actors with buffered calls / open context windows
    max_elements: int = 5_000  # /graph answer cap (nodes + edges)
    max_delta_elements: int = 5_000  # a bigger change is published as a reset
    max_neighbors: int = 2_000  # nodes in one neighbors/impact answer
    max_impact_depth: int = 10
    future_skew_seconds: float = 300  # item times this far past the clock are not trusted

    def validate(self) -> GraphLimits:
        for name in (
            "max_events",
            "max_alerts",
            "max_drifts",
            "related_per_item",
            "recent_per_key",
            "prelude_actors",
            "max_elements",
            "max_delta_elements",
            "max_neighbors",
            "max_impact_depth",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"graph limit {name} must be positive, got {getattr(self, name)}")
        for name in ("prelude_per_actor", "context_per_drift"):
            if getattr(self, name) < 0:
                raise ValueError(f"graph limit {name} must not be negative")
        for name in ("retention_seconds", "window_seconds", "future_skew_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"graph limit {name} must not be negative")
        return self


class NodeValue:
    """What a node holds (as networkx node attribute `v`); `data()` is its Cytoscape data.

    The subclasses are slots dataclasses, not frozen ones, only because a frozen dataclass
    costs a `object.__setattr__` per field to build and nodes are built on the ingest path;
    nothing mutates a value once it is in the graph.
    """

    __slots__ = ()
    kind: ClassVar[str]
    ts: float | None

    def label(self) -> str:
        raise NotImplementedError

    def fields(self) -> dict[str, Any]:
        raise NotImplementedError

    def data(self, nid: str) -> dict[str, Any]:
        out = {"id": nid, "label": self.label(), "type": self.kind}
        out.update(self.fields())
        return out


@dataclass(slots=True)
class ResourceNode(NodeValue):
    kind: ClassVar[str] = RESOURCE
    inst: ResourceInstance
    ts: None = None

    def label(self) -> str:
        return self.inst.address

    def fields(self) -> dict[str, Any]:
        inst = self.inst
        return {
            "resource_type": inst.type,
            "address": inst.address,
            "resource_id": inst.resource_id,
            "provider": inst.provider_name,
            "module": inst.module,
            "state_path": inst.state_path,
        }


@dataclass(slots=True)
class UnmanagedNode(NodeValue):
    kind: ClassVar[str] = UNMANAGED
    resource_type: str
    resource_id: str
    time: str
    ts: float

    def label(self) -> str:
        return f"{self.resource_type} {self.resource_id}"

    def fields(self) -> dict[str, Any]:
        return {
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "time": self.time,
        }


@dataclass(slots=True)
class ActorNode(NodeValue):
    kind: ClassVar[str] = ACTOR
    actor: Actor
    time: str
    ts: float

    def label(self) -> str:
        a = self.actor
        return a.user_name or a.arn or a.principal_id or a.type

    def fields(self) -> dict[str, Any]:
        a = self.actor
        return {
            "actor_type": a.type,
            "arn": a.arn,
            "principal_id": a.principal_id,
            "user_name": a.user_name,
            "account_id": a.account_id,
            "role": a.role,
            "time": self.time,
        }


@dataclass(slots=True)
class EventNode(NodeValue):
    """A cloud call, reduced to what the graph shows (the record itself is not kept); `ts`
    is filled in when first needed."""

    kind: ClassVar[str] = EVENT
    event_id: str
    event_name: str
    event_source: str
    time: str
    ts: float | None
    provider: str
    region: str | None
    account_id: str | None
    source_ip: str | None
    error_code: str | None
    session: str | None
    actor: Actor
    keys: tuple[tuple[str, str], ...] = ()  # correlation keys (kept to unregister them)

    @classmethod
    def of_change(cls, ev: ChangeEvent) -> EventNode:
        return cls(
            ev.event_id,
            _shared(ev.event_name),
            _shared(ev.event_source),
            ev.event_time,
            None,
            ev.provider,
            _shared(ev.region),
            _shared(ev.account_id),
            _shared(ev.source_ip),
            _shared(ev.error_code),
            ev.session,
            ev.actor,
        )

    @classmethod
    def of_drift(cls, d: Drift) -> EventNode:
        """The event as a drift remembers it (when the change itself was not passed in)."""
        return cls(
            d.event_id,
            d.event_name,
            d.event_source,
            d.event_time,
            parse_ts(d.event_time),
            d.provider,
            d.region,
            d.account_id,
            d.source_ip,
            None,
            d.actor.principal_id,
            d.actor,
        )

    def label(self) -> str:
        return self.event_name

    def fields(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event_name": self.event_name,
            "event_source": self.event_source,
            "time": self.time,
            "provider": self.provider,
            "region": self.region,
            "account_id": self.account_id,
            "source_ip": self.source_ip,
            "error_code": self.error_code,
            "session": self.session,
            "actor": self.actor.user_name or self.actor.arn,
        }


@dataclass(slots=True)
class DriftNode(NodeValue):
    kind: ClassVar[str] = DRIFT
    drift_id: str
    drift_kind: str
    severity: str
    resource_type: str
    resource_id: str
    resource_address: str | None
    field: str | None
    event_id: str
    event_name: str
    time: str
    ts: float | None
    detected_at: str

    @classmethod
    def of(cls, d: Drift, ts: float | None) -> DriftNode:
        return cls(
            d.id,
            d.kind.value,
            d.severity,
            d.resource_type,
            d.resource_id,
            d.resource_address,
            d.field,
            d.event_id,
            d.event_name,
            d.event_time,
            ts,
            d.detected_at,
        )

    def label(self) -> str:
        what = self.resource_address or f"{self.resource_type} {self.resource_id}"
        return f"{self.drift_kind}: {what}" + (f" ({self.field})" if self.field else "")

    def fields(self) -> dict[str, Any]:
        return {
            "drift_id": self.drift_id,
            "kind": self.drift_kind,
            "severity": self.severity,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "resource_address": self.resource_address,
            "field": self.field,
            "event_id": self.event_id,
            "event_name": self.event_name,
            "time": self.time,
            "detected_at": self.detected_at,
        }


@dataclass(slots=True)
class FalcoNode(NodeValue):
    kind: ClassVar[str] = FALCO
    alert_id: str
    rule: str
    priority: str
    severity: str
    time: str
    ts: float | None
    source: str | None
    hostname: str | None
    keys: tuple[tuple[str, str], ...] = ()  # correlation keys (kept to unregister them)

    @classmethod
    def of(
        cls, a: FalcoAlert, ts: float | None, keys: tuple[tuple[str, str], ...] = ()
    ) -> FalcoNode:
        return cls(a.id, a.rule, a.priority, a.severity, a.time, ts, a.source, a.hostname, keys)

    def label(self) -> str:
        return self.rule

    def fields(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "rule": self.rule,
            "priority": self.priority,
            "severity": self.severity,
            "time": self.time,
            "source": self.source,
            "hostname": self.hostname,
        }


def node_element(nid: str, value: NodeValue) -> dict[str, Any]:
    """A Cytoscape node element: `{data: {id, label, type, ...}}`."""
    return {"data": value.data(nid)}


def edge_element(source: str, target: str, attrs: dict[str, Any]) -> dict[str, Any]:
    """A Cytoscape edge element: `{data: {id, source, target, label, ...}}`."""
    label = attrs["label"]
    data = {"id": edge_id(source, label, target), "source": source, "target": target}
    data.update(attrs)
    return {"data": data}
