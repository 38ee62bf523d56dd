"""A delivery as each receiver wants it: headers and body for webhook, Slack and PagerDuty.

Bodies are built from the message payload the store kept, which has been through the same
secret redaction as every drift the API serves.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson

from monitor.outputs.spec import OutputSpec
from monitor.store import Delivery

JSON = ("Content-Type", "application/json")
MAX_FIELD = 300  # characters of a value shown in a chat message
PD_SEVERITY = {"critical": "critical", "high": "error", "medium": "warning", "low": "info"}


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """`Driftline-Signature`: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`."""
    mac = hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def render(
    spec: OutputSpec, d: Delivery, now: float, link_base: str | None
) -> tuple[list[tuple[str, str]], bytes]:
    """Headers and body of `d` for `spec`'s receiver."""
    if spec.type == "slack":
        return [JSON], orjson.dumps(slack_message(d, link_base))
    if spec.type == "pagerduty":
        return [JSON], orjson.dumps(pagerduty_event(spec, d, link_base))
    return webhook(spec, d, now)


def webhook(spec: OutputSpec, d: Delivery, now: float) -> tuple[list[tuple[str, str]], bytes]:
    """The generic webhook: an envelope around the payload, signed when a secret is set."""
    head = orjson.dumps(
        {
            "delivery_id": str(d.id),
            "output": spec.name,
            "event": d.event,
            "type": d.type,
            "seq": d.seq,
            "timestamp": d.ts,
        }
    )
    # The stored payload goes in as it is: no parse and re-encode per delivery.
    body = head[:-1] + b',"payload":' + d.body + b"}"
    headers = [JSON, ("Driftline-Delivery-Id", str(d.id)), ("Driftline-Event", d.event)]
    if spec.secret:
        headers.append(("Driftline-Signature", sign(spec.secret, int(now), body)))
    return headers, body


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= MAX_FIELD else text[: MAX_FIELD - 1] + "…"


def actor_name(p: dict[str, Any]) -> str:
    actor = p.get("actor") or {}
    return str(actor.get("user_name") or actor.get("arn") or actor.get("principal_id") or "-")


def drift_link(link_base: str | None, p: dict[str, Any]) -> str | None:
    if not link_base or not p.get("id"):
        return None
    return f"{link_base.rstrip('/')}/api/v1/drifts/{p['id']}"


TITLES = {"new": "New drift", "update": "Drift repeated", "resolved": "Drift resolved"}


def slack_message(d: Delivery, link_base: str | None) -> dict[str, Any]:
    """Block Kit: severity, resource, field old -> new, actor, time, a link to the drift."""
    p = orjson.loads(d.body)
    if d.event == "state":
        text = f"Terraform state changed: {p.get('resource_count', '?')} resources"
        return {"text": text, "blocks": [_section(text)]}
    severity = str(p.get("severity") or "unknown")
    resource = p.get("resource_address") or f"{p.get('resource_type')} {p.get('resource_id')}"
    title = f"{TITLES.get(d.event, 'Drift')}: {severity.upper()} {resource}"
    change = f"`{p.get('field') or '(resource)'}`: `{_short(p.get('old_value'))}` → "
    change += f"`{_short(p.get('new_value'))}`"
    fields = [
        ("Severity", severity),
        ("Resource", f"`{_short(resource)}`"),
        ("Change", change),
        ("Actor", _short(actor_name(p))),
        ("Time", str(p.get("event_time") or d.ts)),
        ("Status", str(p.get("status") or "-")),
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in fields],
        },
    ]
    link = drift_link(link_base, p)
    if link:
        blocks.append(_section(f"<{link}|Open drift {p['id']}>"))
    return {"text": title, "blocks": blocks}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def pagerduty_event(spec: OutputSpec, d: Delivery, link_base: str | None) -> dict[str, Any]:
    """Events API v2: trigger (new, update) or resolve, deduplicated on the drift id."""
    p = orjson.loads(d.body)
    dedup = str(p.get("id") or f"seq-{d.seq}")
    if d.event == "resolved":
        return {"routing_key": spec.routing_key, "event_action": "resolve", "dedup_key": dedup}
    resource = p.get("resource_address") or p.get("resource_id") or "resource"
    summary = f"Terraform drift: {resource} {p.get('field') or ''} changed by {actor_name(p)}"
    event: dict[str, Any] = {
        "routing_key": spec.routing_key,
        "event_action": "trigger",
        "dedup_key": dedup,
        "payload": {
            "summary": summary.strip()[:1024],
            "source": str(p.get("account_id") or p.get("provider") or "driftline"),
            "severity": PD_SEVERITY.get(str(p.get("severity")), "warning"),
            "timestamp": p.get("event_time") or d.ts,
            "component": p.get("resource_type"),
            "class": p.get("kind"),
            "custom_details": p,
        },
    }
    link = drift_link(link_base, p)
    if link:
        event["links"] = [{"href": link, "text": "Driftline drift"}]
    return event
