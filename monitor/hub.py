"""The broadcast hub: sequence-numbered messages, topics, bounded subscriber queues.

Every message gets a monotonically increasing sequence number and is serialised once per wire
format, however many subscribers receive it. A subscriber whose queue overflows is marked
lagged and dropped from delivery; its stream tells the client, which resumes from the last
sequence number it saw (SSE Last-Event-ID, WS `since`).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from monitor.clock import utc_now
from monitor.filters import NO_FILTER, Facets, Filter, message_facets
from monitor.types import Clock

# Topic a client subscribes to -> message types it carries.
TOPICS: dict[str, frozenset[str]] = {
    "drifts": frozenset({"drift", "drift_update"}),
    "events": frozenset({"falco", "event"}),
    "state": frozenset({"state_change"}),
    "stats": frozenset({"stats"}),
    "graph": frozenset({"graph"}),
}
ALL = "all"
VALID_TOPICS = frozenset(TOPICS) | {ALL}
# Sequence numbers are SQLite integers: anything larger cannot have been issued.
MAX_SEQ = 2**63 - 1


@dataclass(slots=True)
class Message:
    seq: int
    topic: str
    type: str
    timestamp: str
    payload: dict[str, Any]
    # Ephemeral messages (graph deltas, stats) are not stored: they carry the latest durable
    # sequence number without advancing it, so resuming never skips or repeats stored ones.
    durable: bool = True
    _ws: bytes | None = field(default=None, repr=False)
    _ws_text: str | None = field(default=None, repr=False)
    _sse: bytes | None = field(default=None, repr=False)
    _facets: Facets | None = field(default=None, repr=False)
    _faceted: bool = field(default=False, repr=False)

    def facets(self) -> Facets | None:
        """What subscription filters see, worked out once for every subscriber."""
        if not self._faceted:
            self._facets = message_facets(self.type, self.payload)
            self._faceted = True
        return self._facets

    def ws_bytes(self) -> bytes:
        """The WebSocket frame body: `{type, topic, timestamp, seq, payload}`."""
        if self._ws is None:
            self._ws = orjson.dumps(
                {
                    "type": self.type,
                    "topic": self.topic,
                    "timestamp": self.timestamp,
                    "seq": self.seq,
                    "payload": self.payload,
                }
            )
        return self._ws

    def ws_text(self) -> str:
        """The frame body as text (WebSocket text frames), decoded once for all clients."""
        if self._ws_text is None:
            self._ws_text = self.ws_bytes().decode()
        return self._ws_text

    def sse_bytes(self) -> bytes:
        """One SSE event: `id:`, `event:` (the message type) and the payload as `data:`."""
        if self._sse is None:
            self._sse = b"id: %d\nevent: %s\ndata: %s\n\n" % (
                self.seq,
                self.type.encode(),
                orjson.dumps(self.payload),
            )
        return self._sse

    def row(self) -> tuple[int, str, str, str, bytes]:
        return (self.seq, self.topic, self.type, self.timestamp, orjson.dumps(self.payload))


@dataclass(frozen=True, slots=True)
class Resume:
    """How a client resuming after `requested` continues: it gets every message after `after`.

    `replay`: what it missed; `reset`: its number is beyond the head (a store reset or a
    number from elsewhere), so it continues live from the head; `gap`: retention already
    dropped some of what it missed, the first still kept being `first_available`.
    """

    kind: str
    requested: int
    after: int
    first_available: int | None = None

    def notice(self) -> dict[str, Any]:
        """The `reset` / `gap` message's payload."""
        out: dict[str, Any] = {"requested": self.requested, "seq": self.after}
        if self.kind == "reset":
            out["message"] = "resume point is beyond the latest message; continuing from now"
        else:
            out["first_available"] = self.first_available
            out["message"] = "messages before first_available are no longer kept"
        return out


def plan_resume(requested: int, head: int, oldest: int | None) -> Resume:
    """Where to resume from, given the latest number issued and the oldest one still kept."""
    if requested > head:
        return Resume("reset", requested, head)
    first = oldest if oldest is not None else head + 1
    if requested < first - 1:
        return Resume("gap", requested, first - 1, first)
    return Resume("replay", requested, requested)


def parse_seq(raw: Any) -> int:
    """A WebSocket client's resume point: a JSON integer from 0 to MAX_SEQ."""
    if not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw <= MAX_SEQ:
        raise ValueError(f"must be a sequence number (an integer from 0 to {MAX_SEQ})")
    return raw


def parse_seq_text(raw: str) -> int:
    """An SSE client's resume point (Last-Event-ID): decimal digits, 0 to MAX_SEQ."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(MAX_SEQ)):
        raise ValueError(f"must be a sequence number (0 to {MAX_SEQ}), got {raw[:40]!r}")
    return parse_seq(int(raw))


def expand_topics(topics: Iterable[str]) -> frozenset[str]:
    """Client topic names to concrete topics (`all` means every topic)."""
    out: set[str] = set()
    for t in topics:
        if t == ALL:
            return frozenset(TOPICS)
        out.add(t)
    return frozenset(out)


class Subscriber:
    """One client's bounded queue. `lagged` is set when it overflowed (and it is dropped)."""

    _ids = itertools.count(1)

    def __init__(self, topics: frozenset[str], maxsize: int) -> None:
        self.id = next(self._ids)
        self.topics = topics
        self.maxsize = maxsize
        self.queue: deque[Message] = deque()
        self.lagged = False
        self.closed = False
        self.last_seq = 0
        self.filter: Filter = NO_FILTER
        self._wake = asyncio.Event()

    def wants(self, msg: Message) -> bool:
        """Whether `msg` is on one of this subscriber's topics and passes its filter."""
        return msg.topic in self.topics and (not self.filter or self.filter.matches(msg.facets()))

    def offer(self, msg: Message) -> bool:
        if self.closed or not self.wants(msg):
            return True
        if len(self.queue) >= self.maxsize:
            self.lagged = True
            self.queue.clear()
            self._wake.set()
            return False
        self.queue.append(msg)
        if len(self.queue) == 1:
            self._wake.set()
        return True

    def close(self) -> None:
        """Stop delivery and wake the reader (its client went away)."""
        self.closed = True
        self._wake.set()

    async def next_batch(self, timeout: float | None = None) -> list[Message]:
        """Everything queued, waiting up to `timeout` for something; [] on timeout."""
        if not self.queue and not self.lagged and not self.closed:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                return []
        batch = list(self.queue)
        self.queue.clear()
        if batch:
            self.last_seq = batch[-1].seq
        return batch


class Hub:
    """Fan-out of messages to subscribers, with a resume buffer of the latest messages."""

    def __init__(
        self,
        buffer_size: int = 10_000,
        queue_size: int = 1_000,
        clock: Clock = utc_now,
        start_seq: int = 0,
    ) -> None:
        self.clock = clock
        self.queue_size = queue_size
        self.buffer: deque[Message] = deque(maxlen=buffer_size)
        self.subscribers: dict[int, Subscriber] = {}
        # The pipeline's publish stage draws numbers inside each write's transaction, so
        # numbering follows commit order (which is delivery order).
        self._counter = itertools.count(start_seq + 1)
        self._head = start_seq
        self.published = 0
        self.lagged_total = 0

    @property
    def seq(self) -> int:
        """The sequence number of the latest delivered message."""
        return self._head

    def next_seq(self) -> int:
        return next(self._counter)

    def deliver(self, messages: Iterable[Message]) -> None:
        """Hand messages (numbered by `next_seq`, already stored) to every subscriber."""
        batch = list(messages)
        for msg in batch:
            self.buffer.append(msg)
            if msg.seq > self._head:
                self._head = msg.seq
        self._fan_out(batch)

    def publish_ephemeral(self, topic: str, type_: str, payload: dict[str, Any]) -> Message:
        """Deliver a message that is not stored and cannot be resumed (graph deltas, stats)."""
        msg = Message(self._head, topic, type_, self.clock(), payload, durable=False)
        self._fan_out([msg])
        return msg

    def _fan_out(self, messages: list[Message]) -> None:
        lagged: list[Subscriber] = []
        subs = list(self.subscribers.values())
        for msg in messages:
            self.published += 1
            for sub in subs:
                if not sub.offer(msg):
                    lagged.append(sub)
        for sub in lagged:
            if self.subscribers.pop(sub.id, None) is not None:
                self.lagged_total += 1

    def subscribe(self, topics: Iterable[str], queue_size: int | None = None) -> Subscriber:
        sub = Subscriber(expand_topics(topics), queue_size or self.queue_size)
        sub.last_seq = self._head
        self.subscribers[sub.id] = sub
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        sub.closed = True
        self.subscribers.pop(sub.id, None)

    def buffered_since(self, seq: int, topics: frozenset[str]) -> list[Message] | None:
        """Messages after `seq` from memory, or None when the buffer no longer reaches back."""
        if seq >= self._head:
            return []
        if not self.buffer or self.buffer[0].seq > seq + 1:
            return None
        return [m for m in self.buffer if m.seq > seq and m.topic in topics]

    def close_all(self) -> None:
        for sub in list(self.subscribers.values()):
            sub.close()
        self.subscribers.clear()
