"""Observation: turning each committed batch of changes, drifts and alerts into nodes and edges.

Which cloud calls become `event` nodes (the rest cost a few dictionary lookups):
- every call that caused a drift;
- the context of a drift, "what else did they do around it": the same actor's other
  non-read-only calls (failed ones included) within `window_seconds` of the drift, at most
  `context_per_drift` after it and the last `prelude_per_actor` before it (kept in a small
  per-actor buffer of the calls themselves, `prelude_actors` actors at most).
Terraform's own calls and AWS service calls never drift, so they never qualify. The share
of an actor's traffic that can become nodes is bounded per drift, so one busy attacker (or a
busy automation role that drifted once) cannot flood the graph or the update path.

Items are aged against the newest item time seen (so replays of old logs work), clamped to
the clock plus `future_skew_seconds`. Everything runs on the event loop thread.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from datetime import UTC, datetime

from graph.correlate import Key, KeyIndex, alert_keys, drift_keys, event_keys
from graph.delta import GraphDelta
from graph.model import (
    AFFECTS,
    CAUSED,
    DRIFT,
    EVENT,
    FALCO,
    FOLLOWED_BY,
    PERFORMED,
    RELATED,
    ActorNode,
    DriftNode,
    EventNode,
    FalcoNode,
    GraphLimits,
    NodeValue,
    UnmanagedNode,
    parse_ts,
)
from graph.resources import resource_node_id
from graph.store import GraphStore
from monitor.types import ChangeEvent, Clock, Drift, FalcoAlert


class _Context:
    """The window (ISO 8601 to the second) around an actor's latest drift."""

    __slots__ = ("end", "left", "start")

    def __init__(self, start: str, end: str, left: int) -> None:
        self.start = start
        self.end = end
        self.left = left


class Observation:
    """The live side of the graph: events, drifts, alerts, their actors and correlations."""

    def __init__(
        self, store: GraphStore, limits: GraphLimits, clock: Clock, counters: Counter[str]
    ) -> None:
        self.store = store
        self.limits = limits
        self.clock = clock
        self.counters = counters
        self.session_last: dict[str, str] = {}  # session -> its latest event node
        # actor key -> the calls it made last (the records are kept, so that buffering a
        # call costs an append; bounded by prelude_actors x prelude_per_actor)
        self.prelude: dict[str, deque[ChangeEvent]] = {}
        # actor key -> the window around its latest drift, and context calls left
        self.context: OrderedDict[str, _Context] = OrderedDict()
        self.targets = KeyIndex(limits.recent_per_key)  # events and drifts by key
        self.alert_keys = KeyIndex(limits.recent_per_key)
        self.high_water: float | None = None
        self._latest: float | None = None  # item times past this are clamped to it

    def observe(
        self, changes: list[ChangeEvent], drifts: list[Drift], alerts: list[FalcoAlert]
    ) -> GraphDelta | None:
        """Add one committed batch; returns what changed (None if nothing did)."""
        delta = self.store.begin(self.limits.max_delta_elements)
        wall = parse_ts(self.clock())
        self._latest = wall + self.limits.future_skew_seconds if wall is not None else None
        by_event: dict[str, Drift] = {}
        pending: list[EventNode] = []
        if drifts:
            for d in drifts:
                by_event.setdefault(d.event_id, d)
            self._open_context(drifts, pending)
        self._pick(changes, by_event, pending)
        # drifts whose change was not passed in
        pending.extend(EventNode.of_drift(d) for d in by_event.values())
        self._add_events(pending)
        for d in drifts:
            self._add_drift(d)
        for a in alerts:
            self._add_alert(a)
        self._evict()
        return delta.seal()

    # ---- which calls become events -----------------------------------------------------

    def _pick(
        self, changes: list[ChangeEvent], by_event: dict[str, Drift], pending: list[EventNode]
    ) -> None:
        """The calls that drifted or fall in a drifting actor's window join `pending`; the
        others are buffered as their actor's prelude."""
        context = self.context
        prelude = self.prelude if self.limits.prelude_per_actor > 0 else None
        # This runs for every call of every batch: it is written out by hand.
        for ev in changes:
            if by_event and ev.event_id in by_event:
                del by_event[ev.event_id]
                pending.append(EventNode.of_change(ev))
                continue
            if ev.read_only:
                continue
            key = ev.actor_key
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
                    if when > window.end:  # the calls have moved past the window
                        del context[key]
            if prelude is not None:
                buf = prelude.get(key)
                if buf is None:
                    self._remember(key, ev)
                else:
                    buf.append(ev)

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
                start, end = iso(ts - window)[:19], iso(ts + window)[:19]
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
            self._replay_prelude(key, d.event_id, ts, pending)

    def _replay_prelude(self, key: str, event_id: str, ts: float, pending: list[EventNode]) -> None:
        """The actor's buffered calls within the window of its drift at `ts` join `pending`."""
        window = self.limits.window_seconds
        for ev in self.prelude.pop(key, None) or ():
            if ev.event_id == event_id:
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

    # ---- nodes and edges ---------------------------------------------------------------

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

    def _add_events(self, pending: list[EventNode]) -> None:
        for en in pending:
            if en.ts is None:
                en.ts = parse_ts(en.time)
        if len(pending) > 1:
            pending.sort(key=lambda e: e.ts or 0.0)
        for en in pending:
            self._add_event(en)

    def _add_event(self, en: EventNode) -> None:
        store = self.store
        g = store.g
        nid = "event:" + en.event_id
        if nid in g:
            return
        ts = self._stamp(en.ts)
        if ts is None:
            return
        store.put_timed(EVENT, nid, en, ts)
        aid = "actor:" + en.actor.key
        if aid in g:
            en.actor = store.nodes[aid]["v"].actor  # one Actor per actor node, not one per event
        else:
            store.put(aid, ActorNode(en.actor, en.time, ts))
            store.actors[aid] = None
        store.link(aid, nid, PERFORMED)
        session = en.session
        if session:
            prev = self.session_last.get(session)
            if prev is not None and prev in g:
                store.link(prev, nid, FOLLOWED_BY)
            self.session_last[session] = nid
        en.keys = event_keys(en)
        self._correlate(nid, ts, en.keys, from_alert=False)

    def _add_drift(self, d: Drift) -> None:
        store = self.store
        g = store.g
        nid = "drift:" + d.id
        if nid in g:
            return
        ts = self._stamp(parse_ts(d.event_time))
        if ts is None:
            return
        value = DriftNode.of(d, ts)
        store.put_timed(DRIFT, nid, value, ts)
        cause = "event:" + d.event_id
        if cause in g:
            store.link(cause, nid, CAUSED)
        target = resource_node_id(d.resource_address) if d.resource_address else None
        if target is None or target not in g:
            target = f"unmanaged:{d.resource_type}:{d.resource_id}"
            if target not in g:
                store.put(target, UnmanagedNode(d.resource_type, d.resource_id, d.event_time, ts))
                store.unmanaged[target] = None
        store.link(nid, target, AFFECTS)
        self._correlate(nid, ts, drift_keys(value), from_alert=False)

    def _add_alert(self, a: FalcoAlert) -> None:
        nid = "falco:" + a.id
        if nid in self.store.g:
            return
        ts = self._stamp(parse_ts(a.time))
        if ts is None:
            return
        keys = alert_keys(a)
        self.store.put_timed(FALCO, nid, FalcoNode.of(a, ts, keys), ts)
        self._correlate(nid, ts, keys, from_alert=True)

    def _correlate(self, nid: str, ts: float, keys: tuple[Key, ...], from_alert: bool) -> None:
        """`related` edges (alert -> event or drift) between a new item and the items of the
        other side seen near it with a key in common, at most `related_per_item`; then its
        keys are remembered for the items still to come."""
        window = self.limits.window_seconds
        room = self.limits.related_per_item
        g = self.store.g
        link = self.store.link
        others, mine = (
            (self.targets, self.alert_keys) if from_alert else (self.alert_keys, self.targets)
        )
        for key, via in keys:
            if room > 0:
                for other in others.near(key, ts, window, room):
                    if other not in g:
                        continue
                    u, v = (nid, other) if from_alert else (other, nid)
                    if link(u, v, RELATED, via, key):
                        room -= 1
                        if room <= 0:
                            break
            mine.add(key, ts, nid)

    # ---- ageing ------------------------------------------------------------------------

    def _evict(self) -> None:
        hw = self.high_water
        if hw is None:
            return
        lim = self.limits
        caps = ((EVENT, lim.max_events), (DRIFT, lim.max_drifts), (FALCO, lim.max_alerts))
        self.store.evict(hw - lim.retention_seconds, caps, self._forget)

    def _forget(self, nid: str, value: NodeValue, ts: float) -> None:
        """Unregister an evicted item's keys (registered with the time it was aged by)."""
        if isinstance(value, EventNode):
            session = value.session
            if session and self.session_last.get(session) == nid:
                del self.session_last[session]
            for key, _ in value.keys:
                self.targets.discard(key, ts, nid)
        elif isinstance(value, DriftNode):
            self.targets.discard("res:" + value.resource_id, ts, nid)
        elif isinstance(value, FalcoNode):
            for key, _ in value.keys:
                self.alert_keys.discard(key, ts, nid)


def iso(ts: float) -> str:
    """ISO 8601 UTC to the second."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
