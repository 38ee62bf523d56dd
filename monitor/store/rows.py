"""Stored rows to the dicts the API serves, and records to the bodies the store keeps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from monitor.lifecycle import DRIFT_TYPES, STATUSES, actor_entry, drift_type
from monitor.types import ChangeEvent, Drift, FalcoAlert, Severity

DRIFT_COLS = "body, status, occurrences, last_seen, updated_at, drift_type, actors, actor_count"


def _view(
    d: dict[str, Any],
    status: str,
    occurrences: int,
    last_seen: str | None,
    updated_at: str | None,
    dtype: str,
    actors: list[dict[str, Any]],
    actor_count: int,
) -> dict[str, Any]:
    """The one drift payload: REST, WebSocket and SSE all serve this (transports may add)."""
    d["status"] = status
    d["occurrences"] = occurrences
    d["last_seen"] = last_seen
    d["updated_at"] = updated_at
    d["type"] = dtype
    d["actors"] = actors
    d["actor_count"] = actor_count
    # The TFDrift-Falco field names beside ours (additive).
    d["timestamp"] = d.get("detected_at")
    d["resource_name"] = d.get("resource_address") or d.get("resource_id")
    d["user_identity"] = d.get("actor")
    return d


def drift_row(row: Sequence[Any]) -> dict[str, Any]:
    """A drift from the DRIFT_COLS columns of its row."""
    body, status, occurrences, last_seen, updated_at, dtype, actors, actor_count = row
    return _view(
        orjson.loads(body),
        status,
        occurrences,
        last_seen,
        updated_at,
        dtype,
        orjson.loads(actors) if actors else [],
        actor_count,
    )


def drift_payload(d: Drift) -> dict[str, Any]:
    """A new drift as it is stored and then read back (the `drift` message's payload)."""
    return _view(
        d.as_dict(),
        d.status,
        1,
        d.event_time,
        d.detected_at,
        drift_type(d.category),
        [actor_entry(d)],
        1,
    )


def event_body(e: ChangeEvent, severity: str) -> dict[str, Any]:
    body = e.as_dict()
    body["type"] = "cloudtrail"
    body["timestamp"] = e.event_time
    body["severity"] = severity
    return body


def alert_provider(a: FalcoAlert) -> str:
    src = (a.source or "").lower()
    if src.startswith("k8s") or "k8s.pod.name" in a.output_fields:
        return "kubernetes"
    if src.startswith("gcp"):
        return "gcp"
    if src.startswith("azure"):
        return "azure"
    if src.startswith("aws"):
        return "aws"
    return "host"


def alert_body(a: FalcoAlert) -> dict[str, Any]:
    body = a.as_dict()
    body["type"] = "falco"
    body["provider"] = alert_provider(a)
    return body


def dead_letter_position(source: str, topic: str, partition: int, offset: int) -> str:
    """Where a dead letter came from: a Kafka offset, or a request's line and record."""
    if source == "kafka":
        return f"{topic}[{partition}]@{offset}"
    line = f" line {partition}" if partition else ""
    return f"{topic}{line} record {offset}" if offset >= 0 else f"{topic}{line}"


def dead_letter_row(row: Sequence[Any]) -> dict[str, Any]:
    source, topic, partition, offset, key, value, size, reason, at = row
    return {
        "source": source,
        "position": dead_letter_position(source, topic, partition, offset),
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": key.decode("utf-8", "replace") if key is not None else None,
        "value_preview": (value or b"")[:4096].decode("utf-8", "replace"),
        "value_size": size,
        "reason": reason,
        "at": at,
    }


def summary(c: dict[str, int]) -> dict[str, Any]:
    """GET /drifts/summary from the counters."""
    return {
        "total": c.get("drifts.total", 0),
        "by_severity": {
            s.value: c.get(f"drifts.severity.{s.value}", 0) for s in reversed(Severity)
        },
        "by_status": {s: c.get(f"drifts.status.{s}", 0) for s in STATUSES},
        "by_type": {t: c.get(f"drifts.drift_type.{t}", 0) for t in DRIFT_TYPES},
    }


def counts(c: dict[str, int]) -> dict[str, Any]:
    """The stats' totals from the counters."""

    def group(prefix: str) -> dict[str, int]:
        return {k[len(prefix) :]: v for k, v in c.items() if k.startswith(prefix) and v}

    types = sorted(group("drifts.resource_type.").items(), key=lambda kv: (-kv[1], kv[0]))
    return {
        "drifts_total": c.get("drifts.total", 0),
        "drifts_by_severity": group("drifts.severity."),
        "drifts_by_kind": group("drifts.kind."),
        "drifts_by_status": group("drifts.status."),
        "drifts_by_type": group("drifts.drift_type."),
        "top_resource_types": [{"type": t, "count": n} for t, n in types[:10]],
        "events_total": c.get("events.total", 0),
        "events_by_kind": group("events.kind."),
        "ingest": group("ingest."),
    }
