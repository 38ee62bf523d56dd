"""WebSocket `/ws`: subscriptions with filters, resume, queries; every client message checked.

Bad input never closes the connection: every field of every client message is type-checked
and a wrong one gets an `error` naming it. Only lag (1013), a refused credential (1008, at the
handshake), shutdown (1001) or an oversized frame (1009, uvicorn's `ws_max_size`) close it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from monitor.filters import FilterError, parse_filter
from monitor.hub import VALID_TOPICS, Message, Subscriber, expand_topics, parse_seq
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
from web.facade import Api, api_of
from web.live import parse_topics, plan, replay
from web.transport import FrameWriter

log = logging.getLogger("driftline.ws")

WS_GOING_AWAY = 1001
WS_TRY_AGAIN_LATER = 1013
KINDS = ("subscribe", "unsubscribe", "ping", "query")
FIELDS = frozenset({"type", "topic", "payload", "since", "filter"})
QUERY_RESOURCES = ("drifts", "events", "stats", "state")
QUERY_TEXT = ("resource_type", "actor", "resource_id", "provider")
QUERY_CHOICES: dict[str, tuple[str, ...]] = {
    "severity": SEVERITIES,
    "kind": DRIFT_KINDS,
    "status": DRIFT_STATUSES,
}
QUERY_FIELDS = frozenset({"resource", "page", "limit", *QUERY_TEXT, *QUERY_CHOICES})


class BadField(ApiError):
    """A client message field with the wrong type or value; the error names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__("VALIDATION_ERROR", message)
        self.field = field


def _topic(msg: dict[str, Any], required: bool) -> str | None:
    topic = msg.get("topic")
    if topic is None and not required:
        return None
    if not isinstance(topic, str) or topic not in VALID_TOPICS:
        raise BadField("topic", f"topic must be one of {', '.join(sorted(VALID_TOPICS))}")
    return topic


def _object(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadField(field, f"{field} must be an object")
    return value


def _bounded(value: Any, name: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise BadField(f"payload.{name}", f"{name} must be an integer between {lo} and {hi}")
    return value


def _text(payload: dict[str, Any], name: str, allowed: tuple[str, ...] = ()) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or (allowed and value not in allowed):
        what = f"one of {', '.join(allowed)}" if allowed else "a string"
        raise BadField(f"payload.{name}", f"{name} must be {what}")
    return value


class WsSession:
    """One WebSocket client: its subscription, reader loop and writer loop."""

    def __init__(self, ws: WebSocket, api: Api) -> None:
        self.ws = ws
        self.d = api
        self.client_id = str(uuid.uuid4())
        self.sub: Subscriber = api.subscribe(())
        self.last = self.sub.last_seq
        self.send_lock = asyncio.Lock()
        self.frames = FrameWriter.of(ws.scope)

    def envelope(self, type_: str, topic: str | None, payload: Any) -> str:
        return orjson.dumps(
            {"type": type_, "topic": topic, "timestamp": self.d.now(), "payload": payload}
        ).decode()

    async def send(self, text: str) -> None:
        async with self.send_lock:
            await self.ws.send_text(text)

    async def error(self, code: str, message: str, field: str | None = None) -> None:
        payload = {"code": code, "message": message}
        if field is not None:
            payload["field"] = field
        await self.send(self.envelope("error", None, payload))

    async def run(self) -> None:
        await self.ws.accept()
        initial = self.ws.query_params.get("topics")
        if initial:
            try:
                self.sub.topics = parse_topics(initial)
            except ApiError as exc:
                await self.error(exc.code, exc.message, "topics")
        await self.send(
            self.envelope(
                "welcome",
                None,
                {
                    "message": "Connected to Driftline WebSocket",
                    "client_id": self.client_id,
                    "topics": sorted(self.sub.topics),
                    "filter": self.sub.filter.as_dict(),
                    "seq": self.last,
                },
            )
        )
        writer = asyncio.create_task(self.writer())
        try:
            await self.reader()
        finally:
            await close_quietly(writer)
            self.d.unsubscribe(self.sub)

    async def writer(self) -> None:
        sub = self.sub
        if self.frames is not None:
            sub.sink = self._sink
        while True:
            batch = await sub.next_batch()
            if sub.lagged:
                await self.error(
                    "LAGGED",
                    "subscriber queue overflowed; reconnect and "
                    f"subscribe with since={self.last} to resume",
                )
                await self.ws.close(WS_TRY_AGAIN_LATER)
                return
            if sub.closed and not batch:
                if self.ws.application_state == WebSocketState.CONNECTED:
                    await self.ws.close(WS_GOING_AWAY)
                return
            fresh = self._fresh(batch)
            if not fresh:
                continue
            self.last = max(self.last, fresh[-1].seq)
            async with self.send_lock:
                if self.frames is None or not self.frames.write(
                    b"".join([m.ws_frame() for m in fresh])
                ):
                    for m in fresh:
                        await self.ws.send_text(m.ws_text())

    def _fresh(self, batch: list[Message]) -> list[Message]:
        # Ephemeral messages repeat the latest number; stored ones may repeat the replay's.
        return [m for m in batch if not m.durable or m.seq > self.last]

    def _sink(self, batch: list[Message]) -> bool:
        """The hub's direct path while the writer is idle and nothing else is being sent."""
        if self.frames is None or self.send_lock.locked():
            return False
        fresh = self._fresh(batch)
        if fresh:
            if not self.frames.write(b"".join([m.ws_frame() for m in fresh])):
                return False
            self.last = max(self.last, fresh[-1].seq)
        return True

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
            await self.dispatch(raw)

    async def dispatch(self, raw: str) -> None:
        try:
            await self.handle(raw)
        except BadField as exc:
            await self.error(exc.code, exc.message, exc.field)
        except FilterError as exc:
            await self.error("VALIDATION_ERROR", exc.message, exc.field)
        except ApiError as exc:
            await self.error(exc.code, exc.message)
        except (WebSocketDisconnect, asyncio.CancelledError):
            raise
        except Exception:  # a bug must cost the client one answer, not its connection
            log.exception("websocket message %.200r", raw)
            await self.error("INTERNAL_ERROR", "the server failed to handle this message")

    async def handle(self, raw: str) -> None:
        msg = json_object(raw, "message")
        unknown = sorted(set(msg) - FIELDS)
        if unknown:
            raise BadField(unknown[0], f"unknown field {unknown[0]!r}; use {', '.join(FIELDS)}")
        kind = msg.get("type")
        if not isinstance(kind, str) or kind not in KINDS:
            raise BadField("type", f"type must be one of {', '.join(KINDS)}")
        payload = _object(msg.get("payload"), "payload")
        for extra in ("since", "filter"):
            if kind != "subscribe" and msg.get(extra) is not None:
                raise BadField(extra, f"{extra} is only for subscribe")
        if kind == "ping":
            await self.send(self.envelope("pong", _topic(msg, required=False), payload))
        elif kind == "query":
            topic = _topic(msg, required=False)
            await self.send(self.envelope("query_result", topic, await self.query(topic, payload)))
        else:
            topic = _topic(msg, required=True)
            assert topic is not None
            names = expand_topics([topic])
            if kind == "unsubscribe":
                self.sub.topics = self.sub.topics - names
            else:
                await self.subscribe(topic, names, msg, payload)
            body = {"topics": sorted(self.sub.topics), "filter": self.sub.filter.as_dict()}
            await self.send(self.envelope(f"{kind}d", topic, body))

    async def subscribe(
        self, topic: str, names: frozenset[str], msg: dict[str, Any], payload: dict[str, Any]
    ) -> None:
        raw_since = msg["since"] if msg.get("since") is not None else payload.get("since")
        since = None
        if raw_since is not None:
            try:
                since = parse_seq(raw_since)
            except ValueError as exc:
                raise BadField("since", f"since {exc}") from None
        if "filter" in msg:
            self.sub.filter = parse_filter(msg["filter"])
        if since is None:
            self.sub.topics = self.sub.topics | names
            return
        head = self.d.head_seq()
        resume = await plan(self.d, since, head)
        self.sub.topics = self.sub.topics | names
        if resume.kind != "replay":
            await self.send(self.envelope(resume.kind, topic, resume.notice()))
        async with self.send_lock:
            async for page in replay(self.d, self.sub, resume.after, names, head):
                for m in page:
                    await self.ws.send_text(m.ws_text())
            self.last = max(self.last, head)

    async def query(self, topic: str | None, payload: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(payload) - QUERY_FIELDS)
        if unknown:
            raise BadField(f"payload.{unknown[0]}", f"unknown query field {unknown[0]!r}")
        what = _text(payload, "resource", QUERY_RESOURCES) or topic or "drifts"
        if what not in QUERY_RESOURCES:
            raise BadField("topic", "query topic must be drifts, events, stats or state")
        if what == "stats":
            return {"stats": await self.d.counts(), "subscribers": self.d.counters().subscribers}
        if what == "state":
            return {"state": _state(self.d)}
        page = _bounded(payload.get("page", 1), "page", 1, MAX_PAGE)
        limit = _bounded(payload.get("limit", 50), "limit", 1, MAX_LIMIT)
        text = {name: _text(payload, name) for name in QUERY_TEXT}
        if what == "drifts":
            choice = {n: _text(payload, n, allowed) for n, allowed in QUERY_CHOICES.items()}
            f = DriftFilter(
                severity=choice["severity"],
                resource_type=text["resource_type"],
                kind=choice["kind"],
                status=choice["status"],
                actor=text["actor"],
                resource_id=text["resource_id"],
                provider=text["provider"],
            )
            items, total = await self.d.drifts(f, page, limit)
        else:
            severity = _text(payload, "severity", (*SEVERITIES, "info"))
            ef = EventFilter(severity=severity, provider=text["provider"])
            items, total = await self.d.events(ef, page, limit)
        return {what: items, "page": page, "limit": limit, "total": total}


async def close_quietly(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait for it, whatever it raised."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


def _state(api: Api) -> dict[str, Any]:
    view = api.state()
    return {
        "resource_count": view.resource_count,
        "loaded_at": view.loaded_at,
        "reloads": view.reloads,
        "error": view.error,
        "states": [s.summary() for s in view.states],
    }


async def websocket(ws: WebSocket) -> None:
    await WsSession(ws, api_of(ws)).run()
