"""`Outputs`: the configured outputs, their router and senders, and what the API asks of them."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from monitor.outputs.route import Router
from monitor.outputs.sender import Sender, transport_for
from monitor.outputs.spec import OutputSpec, SpecError, parse_spec, patched
from monitor.store import Delivery, Outbox, OutputRow

DELIVERY_STATUSES = ("pending", "delivered", "dead")
TEST_DRIFT = {
    "id": "drift-test",
    "kind": "modified",
    "severity": "low",
    "provider": "aws",
    "resource_type": "aws_s3_bucket",
    "resource_id": "driftline-test",
    "resource_address": "aws_s3_bucket.driftline_test",
    "field": "tags.Purpose",
    "old_value": "test",
    "new_value": "test",
    "status": "detected",
    "actor": {"type": "IAMUser", "user_name": "driftline"},
}


class OutputConflict(ValueError):
    """A name already used, or an output the config file owns."""


def config_id(name: str) -> str:
    """The stable id of an output declared in the config file."""
    return "cfg-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def delivery_view(d: Delivery) -> dict[str, Any]:
    return {
        "id": str(d.id),
        "seq": d.seq,
        "type": d.type,
        "event": d.event,
        "status": d.status,
        "attempts": d.attempts,
        "last_error": d.last_error,
        "next_attempt_at": d.next_at if d.status == "pending" and d.next_at else None,
        "created_at": d.created_at,
        "done_at": d.done_at,
    }


class Outputs:
    """Outputs from the store and the config file; a sender each while started."""

    def __init__(
        self,
        store: Outbox,
        declared: Sequence[dict[str, Any]] = (),
        link_base: str | None = None,
        now: Callable[[], str] = lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    ) -> None:
        self.store = store
        self.declared = declared
        self.link_base = link_base
        self.now = now
        self.router = Router()
        self.router.wake = self._wake
        self.specs: dict[str, OutputSpec] = {}
        self.origins: dict[str, str] = {}
        self.senders: dict[str, Sender] = {}

    async def start(self) -> None:
        rows = await asyncio.to_thread(self.store.outputs)
        for row in rows:
            self._adopt(row.id, parse_spec(orjson.loads(row.spec), row.id), row.origin)
        declared = {}
        for body in self.declared:
            spec = parse_spec(body, config_id(str(body.get("name", ""))))
            declared[spec.id] = spec
            await self._save(spec, "config")
        for output_id, origin in list(self.origins.items()):
            if origin == "config" and output_id not in declared:  # dropped from the file
                await self.delete(output_id, force=True)
        for sender in self.senders.values():
            sender.start()
            sender.wake()

    async def stop(self) -> None:
        self.router.specs = ()
        for sender in self.senders.values():
            await sender.stop()

    def _adopt(self, output_id: str, spec: OutputSpec, origin: str) -> Sender:
        self.specs[output_id] = spec
        self.origins[output_id] = origin
        sender = self.senders.get(output_id)
        if sender is None:
            sender = self.senders[output_id] = Sender(spec, self.store, self.link_base)
        sender.spec = spec
        self.router.specs = tuple(self.specs.values())
        return sender

    async def _save(self, spec: OutputSpec, origin: str) -> Sender:
        for other in self.specs.values():
            if other.name == spec.name and other.id != spec.id:
                raise OutputConflict(f"an output named {spec.name!r} exists")
        at = self.now()
        row = OutputRow(spec.id, spec.name, origin, orjson.dumps(spec.stored()), at, at)
        await asyncio.to_thread(self.store.put_output, row)
        return self._adopt(spec.id, spec, origin)

    def _wake(self, ids: set[str]) -> None:
        for output_id in ids:
            sender = self.senders.get(output_id)
            if sender is not None:
                sender.wake()

    # -- the API

    async def view(self, output_id: str) -> dict[str, Any] | None:
        spec = self.specs.get(output_id)
        if spec is None:
            return None
        counts = await asyncio.to_thread(self.store.delivery_counts, output_id)
        return (
            spec.view()
            | {"origin": self.origins[output_id], "health": self.health_of(output_id)}
            | {"deliveries": counts}
        )

    async def views(self) -> list[dict[str, Any]]:
        return [v for i in list(self.specs) if (v := await self.view(i)) is not None]

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """SpecError for a bad body, OutputConflict for a name in use."""
        spec = parse_spec(body, "out_" + secrets.token_hex(6))
        sender = await self._save(spec, "api")
        sender.start()
        view = await self.view(spec.id)
        assert view is not None
        return view

    async def patch(self, output_id: str, changes: dict[str, Any]) -> dict[str, Any] | None:
        spec = self.specs.get(output_id)
        if spec is None:
            return None
        self._owned(output_id)
        sender = await self._save(patched(spec, changes), "api")
        sender.wake()
        return await self.view(output_id)

    async def delete(self, output_id: str, force: bool = False) -> dict[str, Any] | None:
        view = await self.view(output_id)
        if view is None:
            return None
        if not force:
            self._owned(output_id)
        await asyncio.to_thread(self.store.delete_output, output_id)
        del self.specs[output_id], self.origins[output_id]
        self.router.specs = tuple(self.specs.values())
        sender = self.senders.pop(output_id, None)
        if sender is not None:
            await sender.stop()
        return view

    def _owned(self, output_id: str) -> None:
        if self.origins.get(output_id) == "config":
            raise OutputConflict("this output is declared in the config file; change it there")

    async def deliveries(
        self, output_id: str, status: str | None, page: int, limit: int
    ) -> tuple[list[dict[str, Any]], int] | None:
        if output_id not in self.specs:
            return None
        rows, total = await asyncio.to_thread(self.store.deliveries, output_id, status, page, limit)
        return [delivery_view(d) for d in rows], total

    async def retry(self, output_id: str, delivery_id: int) -> dict[str, Any] | None:
        if output_id not in self.specs:
            return None
        d = await asyncio.to_thread(self.store.retry_delivery, output_id, delivery_id)
        if d is None:
            return None
        self.senders[output_id].wake()
        return delivery_view(d)

    async def test(self, output_id: str) -> dict[str, Any] | None:
        spec = self.specs.get(output_id)
        return None if spec is None else await self.send_test(spec)

    async def test_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """Send a test message to an output described by `body` (not saved)."""
        body = {"name": "test", "type": "webhook", **body}
        return await self.send_test(parse_spec(body, "test"))

    async def send_test(self, spec: OutputSpec) -> dict[str, Any]:
        """One synthetic drift, sent at once (not queued); the receiver's answer."""
        now = time.time()
        payload = orjson.dumps(TEST_DRIFT | {"event_time": self.now()})
        d = Delivery(
            0, spec.id, 0, "drift", "new", self.now(), payload, "pending", 0, 0, None, now, None
        )
        transport = transport_for(spec, self.link_base)
        try:
            outcome = await transport.send(spec, d, now)
        finally:
            await transport.close()
        return {"delivered": outcome.ok, "status": outcome.status, "error": outcome.error}

    def health_of(self, output_id: str) -> dict[str, Any]:
        sender = self.senders[output_id]
        stats = sender.stats
        status = (
            "disabled" if not sender.spec.enabled else "degraded" if sender.degraded() else "ok"
        )
        return {
            "status": status,
            "delivered": stats.delivered,
            "failed_attempts": stats.failed_attempts,
            "dead": stats.dead,
            "consecutive_failures": stats.consecutive_failures,
            "last_error": stats.last_error,
            "last_success_at": stats.last_success_at,
        }

    def health(self) -> dict[str, Any]:
        """Every output's health; degraded when one of them is."""
        outputs = {self.specs[i].name: self.health_of(i) for i in self.specs}
        bad = any(o["status"] == "degraded" for o in outputs.values())
        return {"status": "degraded" if bad else "ok", "outputs": outputs}


__all__ = ["DELIVERY_STATUSES", "OutputConflict", "Outputs", "SpecError"]
