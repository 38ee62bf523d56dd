"""How a delivery reaches a receiver: one transport per output type, behind one `send`.

The sender owns ordering, retries and dead letters; a transport only makes one attempt and
says how it went, so every type gets the same outbox guarantees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from monitor.outputs.http import HttpClient, HttpError, retry_after
from monitor.outputs.render import render
from monitor.outputs.spec import OutputSpec
from monitor.store import Delivery


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt: delivered, or the error and how long the receiver asked us to wait."""

    ok: bool
    error: str | None = None
    status: int | None = None  # the HTTP answer, for the test endpoint
    wait_hint: float = 0.0


class Transport(Protocol):
    async def send(self, spec: OutputSpec, d: Delivery, now: float) -> Outcome: ...
    async def close(self) -> None: ...


class HttpTransport:
    """Webhook, Slack and PagerDuty: a POST over one kept-alive connection."""

    def __init__(self, link_base: str | None) -> None:
        self.link_base = link_base
        self.client = HttpClient()

    async def send(self, spec: OutputSpec, d: Delivery, now: float) -> Outcome:
        headers, body = render(spec, d, now, self.link_base)
        try:
            answer = await self.client.post(spec.url, headers, body, spec.timeout_seconds)
        except HttpError as exc:
            return Outcome(False, str(exc))
        if 200 <= answer.status < 300:
            return Outcome(True, status=answer.status)
        error = f"HTTP {answer.status}: {answer.body[:200].decode(errors='replace')}"
        hint = retry_after(answer, now) if answer.status in (429, 503) else 0.0
        return Outcome(False, error, answer.status, hint)

    async def close(self) -> None:
        await self.client.close()
