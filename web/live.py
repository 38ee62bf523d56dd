"""Live delivery: WebSocket /ws and SSE /api/v1/stream, both resumable by sequence number."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from monitor.hub import TOPICS, VALID_TOPICS, Message, Subscriber, expand_topics
from monitor.store import DriftFilter, EventFilter
from web.envelope import (
    DRIFT_KINDS,
    DRIFT_STATUSES,
    MAX_LIMIT,
    MAX_PAGE,
    SEVERITIES,
    ApiError,
    json_object,
)
from web.facade import Api, Live, api_of

REPLAY_PAGE = 1000
WS_TRY_AGAIN_LATER = 1013


async def replay(
    live: Live, since: int, topics: frozenset[str], upto: int
) -> AsyncIterator[list[Message]]:
    """Messages with since < seq <= upto: from memory when it reaches back, else the store."""
    buffered = live.buffered_since(since, topics)
    if buffered is not None:
        yield [m for m in buffered if m.seq <= upto]
        return
    cursor = since
    while cursor < upto:
        rows = await live.messages_since(cursor, topics, REPLAY_PAGE)
        if not rows:
            return
        page = [
            Message(seq, topic, type_, ts, orjson.loads(body))
            for seq, topic, type_, ts, body in rows
            if seq <= upto
        ]
        if page:
            yield page
        if len(rows) < REPLAY_PAGE or rows[-1][0] >= upto:
            return
        cursor = rows[-1][0]


def _parse_topics(raw: str | None) -> frozenset[str]:
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


async def stream(request: Request) -> EventSourceResponse:
    d = api_of(request)
    topics = _parse_topics(request.query_params.get("topics"))
    raw_last = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    since: int | None = None
    if raw_last:
        try:
            since = int(raw_last)
        except ValueError:
            raise ApiError(
                "VALIDATION_ERROR", f"Last-Event-ID must be a sequence number, got {raw_last!r}"
            ) from None
    sub = d.subscribe(topics)
    head = sub.last_seq
    stream_id = str(uuid.uuid4())

    async def events() -> AsyncIterator[bytes]:
        try:
            hello = {
                "stream_id": stream_id,
                "message": "Connected to Driftline SSE stream",
                "topics": sorted(topics),
                "seq": head,
                "resumed_from": since,
            }
            # The connected event's id is the resume point: a client cut off during replay
            # reconnects from there and misses nothing.
            yield b"id: %d\nevent: connected\ndata: %s\n\n" % (
                since if since is not None else head,
                orjson.dumps(hello),
            )
            last = since if since is not None else head
            if since is not None and since < head:
                async for page in replay(d, since, topics, head):
                    yield b"".join(m.sse_bytes() for m in page)
                    last = page[-1].seq
            while True:
                batch = await sub.next_batch()
                if sub.lagged:
                    note = {
                        "message": "subscriber queue overflowed; reconnect with "
                        "Last-Event-ID to resume",
                        "last_event_id": last,
                    }
                    yield b"id: %d\nevent: lagged\ndata: %s\n\n" % (last, orjson.dumps(note))
                    return
                if sub.closed and not batch:
                    return
                fresh = [m for m in batch if m.seq > last or not m.durable]
                if fresh:
                    last = max(last, fresh[-1].seq)
                    yield b"".join(m.sse_bytes() for m in fresh)
        finally:
            d.unsubscribe(sub)

    return EventSourceResponse(
        events(),
        ping=d.settings.sse_keepalive_seconds,
        send_timeout=None,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# -- WebSocket ------------------------------------------------------------------------------


class WsSession:
    """One WebSocket client: its subscription, reader loop and writer loop."""

    def __init__(self, ws: WebSocket, api: Api) -> None:
        self.ws = ws
        self.d = api
        self.client_id = str(uuid.uuid4())
        self.sub: Subscriber = api.subscribe(())
        self.last = self.sub.last_seq
        self.send_lock = asyncio.Lock()

    def envelope(self, type_: str, topic: str | None, payload: Any) -> str:
        return orjson.dumps(
            {"type": type_, "topic": topic, "timestamp": self.d.now(), "payload": payload}
        ).decode()

    async def send(self, text: str) -> None:
        async with self.send_lock:
            await self.ws.send_text(text)

    async def error(self, code: str, message: str) -> None:
        await self.send(self.envelope("error", None, {"code": code, "message": message}))

    async def run(self) -> None:
        await self.ws.accept()
        initial = self.ws.query_params.get("topics")
        if initial:
            try:
                self.sub.topics = _parse_topics(initial)
            except ApiError as exc:
                await self.error(exc.code, exc.message)
        await self.send(
            self.envelope(
                "welcome",
                None,
                {
                    "message": "Connected to Driftline WebSocket",
                    "client_id": self.client_id,
                    "topics": sorted(self.sub.topics),
                    "seq": self.last,
                },
            )
        )
        writer = asyncio.create_task(self.writer())
        try:
            await self.reader()
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            self.d.unsubscribe(self.sub)

    async def writer(self) -> None:
        while True:
            batch = await self.sub.next_batch()
            if self.sub.lagged:
                await self.error(
                    "LAGGED",
                    "subscriber queue overflowed; reconnect and "
                    f"subscribe with since={self.last} to resume",
                )
                await self.ws.close(WS_TRY_AGAIN_LATER)
                return
            if self.sub.closed and not batch:
                if self.ws.application_state == WebSocketState.CONNECTED:
                    await self.ws.close(1001)
                return
            for m in batch:
                if not m.durable:
                    await self.send(m.ws_text())
                elif m.seq > self.last:
                    self.last = m.seq
                    await self.send(m.ws_text())

    async def reader(self) -> None:
        limit = self.d.settings.max_ws_message_bytes
        while True:
            try:
                message = await self.ws.receive()
            except WebSocketDisconnect:
                return
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text")
            if raw is None:
                raw_bytes = message.get("bytes") or b""
                if len(raw_bytes) > limit:
                    await self.error("MESSAGE_TOO_LARGE", f"message over {limit} bytes")
                    continue
                try:
                    raw = raw_bytes.decode()
                except UnicodeDecodeError:
                    await self.error("VALIDATION_ERROR", "binary frames must be UTF-8 JSON")
                    continue
            if len(raw) > limit:
                await self.error("MESSAGE_TOO_LARGE", f"message over {limit} bytes")
                continue
            try:
                await self.handle(raw)
            except ApiError as exc:
                await self.error(exc.code, exc.message)

    async def handle(self, raw: str) -> None:
        msg = json_object(raw, "message")
        kind = msg.get("type")
        topic = msg.get("topic")
        payload = msg.get("payload") or {}
        if not isinstance(payload, dict):
            raise ApiError("VALIDATION_ERROR", "payload must be an object")
        if kind == "ping":
            await self.send(self.envelope("pong", topic, payload))
        elif kind in ("subscribe", "unsubscribe"):
            if topic not in VALID_TOPICS:
                raise ApiError(
                    "VALIDATION_ERROR",
                    f"unknown topic {topic!r}; use {', '.join(sorted(VALID_TOPICS))}",
                )
            names = expand_topics([topic])
            if kind == "unsubscribe":
                self.sub.topics = self.sub.topics - names
            else:
                await self.subscribe(names, msg.get("since", payload.get("since")))
            await self.send(self.envelope(f"{kind}d", topic, {"topics": sorted(self.sub.topics)}))
        elif kind == "query":
            await self.send(self.envelope("query_result", topic, await self.query(topic, payload)))
        else:
            raise ApiError(
                "VALIDATION_ERROR",
                f"unknown message type {kind!r}; use subscribe, unsubscribe, ping or query",
            )

    async def subscribe(self, names: frozenset[str], since: Any) -> None:
        if since is None:
            self.sub.topics = self.sub.topics | names
            return
        if not isinstance(since, int) or isinstance(since, bool) or since < 0:
            raise ApiError("VALIDATION_ERROR", "since must be a sequence number (integer >= 0)")
        upto = self.d.head_seq()
        self.sub.topics = self.sub.topics | names
        async for page in replay(self.d, since, names, upto):
            for m in page:
                await self.send(m.ws_text())
        self.last = max(self.last, upto)

    async def query(self, topic: Any, payload: dict[str, Any]) -> dict[str, Any]:
        what = payload.get("resource") or ("events" if topic == "events" else "drifts")
        page = _bounded(payload.get("page", 1), "page", 1, MAX_PAGE)
        limit = _bounded(payload.get("limit", 50), "limit", 1, MAX_LIMIT)
        if what == "drifts":
            f = DriftFilter(
                severity=_choice(payload, "severity", SEVERITIES),
                resource_type=payload.get("resource_type"),
                kind=_choice(payload, "kind", DRIFT_KINDS),
                status=_choice(payload, "status", DRIFT_STATUSES),
                actor=payload.get("actor"),
                resource_id=payload.get("resource_id"),
            )
            items, total = await self.d.drifts(f, page, limit)
        elif what == "events":
            ef = EventFilter(
                severity=_choice(payload, "severity", (*SEVERITIES, "info")),
                provider=payload.get("provider"),
            )
            items, total = await self.d.events(ef, page, limit)
        else:
            raise ApiError("VALIDATION_ERROR", "query resource must be drifts or events")
        return {what: items, "page": page, "limit": limit, "total": total}


def _bounded(value: Any, name: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ApiError("VALIDATION_ERROR", f"{name} must be an integer between {lo} and {hi}")
    return value


def _choice(payload: dict[str, Any], name: str, allowed: tuple[str, ...]) -> str | None:
    value = payload.get(name)
    if value is not None and value not in allowed:
        raise ApiError("VALIDATION_ERROR", f"{name} must be one of {', '.join(allowed)}")
    return str(value) if value is not None else None


async def websocket(ws: WebSocket) -> None:
    await WsSession(ws, api_of(ws)).run()
