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
        self._wake = asyncio.Event()

    def offer(self, msg: Message) -> bool:
        if msg.topic not in self.topics or self.closed:
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
            sub.closed = True
            sub._wake.set()
        self.subscribers.clear()
