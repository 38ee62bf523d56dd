"""The broadcast hub: sequence-numbered messages, topics, bounded subscriber queues.

Every message gets a monotonically increasing sequence number and is serialised once per wire
format, however many subscribers receive it. Messages are queued for a subscriber at once (if
its topics and filter want them) and subscribers are woken at most every FLUSH_SECONDS, so
one that is behind takes several in one write. A subscriber whose queue overflows is marked
lagged and dropped from delivery; its stream tells the client, which resumes from the last
sequence number it saw (SSE Last-Event-ID, WS `since`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from monitor.clock import utc_now
from monitor.filters import NO_FILTER, Facets, Filter, message_facets
from monitor.types import Clock

log = logging.getLogger("driftline.hub")

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
# Subscribers are woken at most this often: what arrives meanwhile goes out in one write per
# subscriber. A write (a system call, a task switch) costs the same for one message as for
# ten, so under load this is most of the fan-out's cost; it adds at most this much latency.
FLUSH_SECONDS = 0.01


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
    _ws_frame: bytes | None = field(default=None, repr=False)
    _sse: bytes | None = field(default=None, repr=False)
    _facets: Facets | None = field(default=None, repr=False)
    _faceted: bool = field(default=False, repr=False)
    _body: bytes | None = field(default=None, repr=False)

    def body(self) -> bytes:
        """The payload as JSON, encoded once for the store and the outputs' outbox."""
        if self._body is None:
            self._body = orjson.dumps(self.payload)
        return self._body

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

    def ws_frame(self) -> bytes:
        """The whole WebSocket text frame (server frames are unmasked): the same bytes for
        every client, so they are built once and can be written as they are."""
        if self._ws_frame is None:
            body = self.ws_bytes()
            n = len(body)
            if n < 126:
                head = struct.pack("!BB", 0x81, n)
            elif n < 1 << 16:
                head = struct.pack("!BBH", 0x81, 126, n)
            else:
                head = struct.pack("!BBQ", 0x81, 127, n)
            self._ws_frame = head + body
        return self._ws_frame

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
        return (self.seq, self.topic, self.type, self.timestamp, self.body())


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
        self._filter: Filter = NO_FILTER
        # None when the filter passes everything: the fan-out's common case costs nothing.
        self._match: Filter | None = None
        # A bare future, not an asyncio.Event under wait_for: no task per wake-up.
        self._waiter: asyncio.Future[None] | None = None
        # Writes a batch straight to the client if it can without waiting (True), so the
        # reader task need not run at all; set by the transport while its reader is idle.
        self.sink: Callable[[list[Message]], bool] | None = None

    @property
    def filter(self) -> Filter:
        return self._filter

    @filter.setter
    def filter(self, value: Filter) -> None:
        self._filter = value
        self._match = value if value else None

    def wants(self, msg: Message) -> bool:
        """Whether `msg` is on one of this subscriber's topics and passes its filter."""
        match = self._match
        return msg.topic in self.topics and (match is None or match.matches(msg.facets()))

    def push(self, messages: list[Message]) -> bool | None:
        """Queue what this subscriber wants of `messages` (the hub wakes it): True if it took
        some, None if it wanted none, False when they overflowed its queue."""
        if self.closed:
            return None
        topics, match = self.topics, self._match
        if match is None:
            wanted = [m for m in messages if m.topic in topics]
        else:
            wanted = [m for m in messages if m.topic in topics and match.matches(m.facets())]
        if not wanted:
            return None
        queue = self.queue
        if len(queue) + len(wanted) > self.maxsize:
            self.lagged = True
            queue.clear()
            self.wake()
            return False
        queue.extend(wanted)
        return True

    def flush(self) -> None:
        """Hand what is queued to the sink, or wake the reader to take it.

        The sink is used only while the reader is parked in `next_batch` (so it holds no
        batch of its own that the sink's could overtake) and nothing is wrong.
        """
        waiter, sink, queue = self._waiter, self.sink, self.queue
        if (
            sink is not None
            and queue
            and waiter is not None
            and not waiter.done()
            and not self.lagged
            and not self.closed
        ):
            batch = list(queue)
            try:
                taken = sink(batch)
            except Exception:  # one broken connection must not stop the fan-out
                log.exception("subscriber %d: direct write failed", self.id)
                taken = False
            if taken:
                queue.clear()
                self.last_seq = batch[-1].seq
                return
        self.wake()

    def wake(self) -> None:
        """Let the reader take what is queued."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        """Stop delivery and wake the reader (its client went away)."""
        self.closed = True
        self.wake()

    async def next_batch(self, timeout: float | None = None) -> list[Message]:
        """Everything queued, waiting up to `timeout` for something; [] on timeout."""
        if not self.queue and not self.lagged and not self.closed:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            # A timer that wakes with nothing queued: cheaper than asyncio.timeout per wait.
            timer = None if timeout is None else loop.call_later(timeout, self.wake)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
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
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        self.clock = clock
        self.flush_seconds = flush_seconds
        self._to_wake: dict[int, Subscriber] = {}
        self._flush: asyncio.TimerHandle | None = None
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
        # Subscriber by subscriber, so each takes the whole batch in one queue extension and
        # at most one wake-up.
        self.published += len(messages)
        lagged = []
        to_wake = self._to_wake
        for sub in list(self.subscribers.values()):
            took = sub.push(messages)
            if took:
                to_wake[sub.id] = sub
            elif took is False:
                lagged.append(sub)
        if to_wake and self._flush is None:
            self._schedule_flush()
        for sub in lagged:
            if self.subscribers.pop(sub.id, None) is not None:
                self.lagged_total += 1

    def _schedule_flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop, so no reader is waiting
            self._flush_all()
            return
        if self.flush_seconds > 0:
            self._flush = loop.call_later(self.flush_seconds, self._flush_all)
        else:
            self._flush_all()

    def _flush_all(self) -> None:
        self._flush = None
        subs = list(self._to_wake.values())
        self._to_wake.clear()
        for sub in subs:
            sub.flush()

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
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self._to_wake.clear()
        for sub in list(self.subscribers.values()):
            sub.close()
        self.subscribers.clear()
