"""Live delivery over SSE (`/api/v1/stream`), and what SSE and WebSocket share: topics,
filters, and resuming by sequence number (replay, `reset` beyond the head, `gap` below the
oldest message kept)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from monitor.filters import FilterError, parse_query_filter
from monitor.hub import (
    TOPICS,
    VALID_TOPICS,
    Message,
    Resume,
    Subscriber,
    expand_topics,
    parse_seq_text,
    plan_resume,
)
from web.envelope import ApiError
from web.facade import Live, api_of
from web.transport import ChunkWriter

REPLAY_PAGE = 1000
# Query parameters of /api/v1/stream that are not filter keys.
STREAM_PARAMS = ("topics", "last_event_id", "ticket")


async def replay(
    live: Live, sub: Subscriber, after: int, topics: frozenset[str], upto: int
) -> AsyncIterator[list[Message]]:
    """What `sub` wants of after < seq <= upto on `topics`: from memory when it reaches back,
    else from the store, a page at a time."""
    buffered = live.buffered_since(after, topics)
    if buffered is not None:
        page = [m for m in buffered if m.seq <= upto and sub.wants(m)]
        if page:
            yield page
        return
    cursor = after
    while cursor < upto:
        rows = await live.messages_since(cursor, topics, REPLAY_PAGE)
        if not rows:
            return
        page = [
            m
            for m in (
                Message(seq, topic, type_, ts, orjson.loads(body))
                for seq, topic, type_, ts, body in rows
                if seq <= upto
            )
            if sub.wants(m)
        ]
        if page:
            yield page
        if len(rows) < REPLAY_PAGE or rows[-1][0] >= upto:
            return
        cursor = rows[-1][0]


async def plan(live: Live, since: int, head: int) -> Resume:
    """Where a client resuming after `since` continues (the store knows the oldest kept)."""
    oldest = await live.oldest_seq() if since < head else None
    return plan_resume(since, head, oldest)


def parse_topics(raw: str | None) -> frozenset[str]:
    """`drifts,events` to topics (default: all of them)."""
    if not raw:
        return frozenset(TOPICS)
    names = [t.strip() for t in raw.split(",") if t.strip()]
    bad = [t for t in names if t not in VALID_TOPICS]
    if bad:
        raise ApiError(
            "VALIDATION_ERROR",
            f"unknown topic(s) {', '.join(bad)}; use {', '.join(sorted(VALID_TOPICS))}",
        )
    return expand_topics(names)


# -- SSE ------------------------------------------------------------------------------------


def _frame(event: str, seq: int, payload: dict[str, Any]) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, event.encode(), orjson.dumps(payload))


class EventStream(Response):
    """A `text/event-stream` answer: ready frames, one ASGI send per batch of them; a comment
    line every `keepalive` seconds of silence; the subscription ends with the client."""

    media_type = "text/event-stream"

    def __init__(
        self,
        live: Live,
        sub: Subscriber,
        opening: list[bytes],
        resume: Resume | None,
        head: int,
        keepalive: float,
    ) -> None:
        # No Content-Length: the body is chunked for as long as the client stays.
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        self.live = live
        self.sub = sub
        self.opening = opening
        self.resume = resume
        self.head = head
        self.keepalive = keepalive
        self.last = head  # the latest sequence number written

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = asyncio.ensure_future(self._watch(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await self._pump(send, ChunkWriter.of(scope))
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            self.live.unsubscribe(self.sub)

    async def _watch(self, receive: Receive) -> None:
        # The only way to hear that the client went: its next ASGI message is a disconnect.
        while (await receive())["type"] != "http.disconnect":
            pass
        self.sub.close()

    async def _pump(self, send: Send, chunks: ChunkWriter | None) -> None:
        sub, live = self.sub, self.live

        async def write(data: bytes) -> None:
            if chunks is None or not chunks.write(data):
                await send({"type": "http.response.body", "body": data, "more_body": True})

        await write(b"".join(self.opening))
        self.last = self.resume.after if self.resume is not None else self.head
        if self.last < self.head:
            async for page in replay(live, sub, self.last, sub.topics, self.head):
                await write(b"".join(m.sse_bytes() for m in page))
            self.last = self.head
        if chunks is not None:
            sub.sink = lambda batch: self._sink(chunks, batch)
        while True:
            batch = await sub.next_batch(self.keepalive)
            if sub.lagged:
                note = {
                    "message": "subscriber queue overflowed; reconnect with Last-Event-ID "
                    "to resume",
                    "last_event_id": self.last,
                }
                await write(_frame("lagged", self.last, note))
                return
            if sub.closed:
                return
            if not batch:
                await write(b": keep-alive\n\n")
                continue
            fresh = self._fresh(batch)
            if fresh:
                self.last = max(self.last, fresh[-1].seq)
                await write(b"".join(m.sse_bytes() for m in fresh))

    def _fresh(self, batch: list[Message]) -> list[Message]:
        # Ephemeral messages repeat the latest number; stored ones may repeat the replay's.
        return [m for m in batch if m.seq > self.last or not m.durable]

    def _sink(self, chunks: ChunkWriter, batch: list[Message]) -> bool:
        """The hub's direct path while the pump is idle: the batch as one chunk, now."""
        fresh = self._fresh(batch)
        if fresh:
            if not chunks.write(b"".join(m.sse_bytes() for m in fresh)):
                return False
            self.last = max(self.last, fresh[-1].seq)
        return True


def _since(request: Request) -> int | None:
    raw = request.headers.get("last-event-id")
    if raw is None:
        raw = request.query_params.get("last_event_id")
    if raw is None or raw == "":
        return None
    try:
        return parse_seq_text(raw.strip())
    except ValueError as exc:
        raise ApiError("VALIDATION_ERROR", f"Last-Event-ID {exc}") from None


async def stream(request: Request) -> Response:
    d = api_of(request)
    topics = parse_topics(request.query_params.get("topics"))
    try:
        filt = parse_query_filter(request.query_params, STREAM_PARAMS)
    except FilterError as exc:
        raise ApiError("VALIDATION_ERROR", f"{exc.field}: {exc.message}") from None
    since = _since(request)
    sub = d.subscribe(topics)
    sub.filter = filt
    head = sub.last_seq
    try:
        resume = await plan(d, since, head) if since is not None else None
    except BaseException:
        d.unsubscribe(sub)
        raise
    hello = {
        "stream_id": str(uuid.uuid4()),
        "message": "Connected to Driftline SSE stream",
        "topics": sorted(topics),
        "filter": filt.as_dict(),
        "seq": head,
        "resumed_from": since,
    }
    # The connected event's id is the resume point: a client cut off during replay
    # reconnects from there and misses nothing; after a reset it is the head, so a browser
    # stops resending a number the server never issued.
    point = resume.after if resume is not None else head
    opening = [_frame("connected", point, hello)]
    if resume is not None and resume.kind != "replay":
        opening.append(_frame(resume.kind, point, resume.notice()))
    return EventStream(d, sub, opening, resume, head, d.settings.sse_keepalive_seconds)
