"""REST endpoints under /api/v1: health, state, events, drifts, stats."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response

from monitor.daemon import Daemon
from monitor.store import DriftFilter, EventFilter
from web.envelope import (
    SEVERITIES,
    ApiError,
    JSONResponse,
    choice_param,
    ok,
    page_data,
    page_params,
    time_param,
)

DRIFT_KINDS = ("modified", "unmanaged", "missing")
DRIFT_STATUSES = ("detected", "investigating", "resolved")
EVENT_TYPES = ("cloudtrail", "falco")
PROVIDERS = ("aws", "gcp", "azure", "kubernetes", "host")


def daemon_of(request: Request) -> Daemon:
    daemon: Daemon = request.app.state.daemon
    return daemon


async def health(request: Request) -> Response:
    d = daemon_of(request)
    state = d.state.as_dict()
    store_ok = True
    store_error = None
    try:
        last = await asyncio.to_thread(d.store.last_seq)
    except Exception as exc:  # reported, not raised: health must answer
        store_ok, store_error, last = False, str(exc), None
    status = "ok" if state["status"] == "ok" and store_ok else "degraded"
    body = {
        "status": status,
        "started_at": d.started_at,
        "components": {
            "state": state,
            "store": {
                "status": "ok" if store_ok else "error",
                "backend": d.config.store,
                "last_seq": last,
                "error": store_error,
                "commits": d.pipeline.writer.commits,
            },
            "hub": {
                "status": "ok",
                "subscribers": len(d.hub.subscribers),
                "seq": d.hub.seq,
                "published": d.hub.published,
                "lagged_disconnects": d.hub.lagged_total,
            },
            "sources": {
                "http": {
                    "status": "ok",
                    "records": d.pipeline.records,
                    "rejected": sum(d.pipeline.rejected.values()),
                },
                "demo": {"status": "ok" if d.config.demo else "off"},
            },
        },
    }
    return JSONResponse({"success": True, "data": body}, status_code=200)


async def state_meta(request: Request) -> Response:
    d = daemon_of(request)
    states = d.state.states
    first = states[0] if states else None
    last_modified = max((s.last_modified for s in states), default=None)
    return ok(
        {
            "version": 4,
            "terraform_version": first.terraform_version if first else None,
            "serial": first.serial if first else None,
            "lineage": first.lineage if first else None,
            "resource_count": len(d.detector.index),
            "last_modified": last_modified,
            "states": [s.summary() for s in states],
            "error": d.state.error,
        }
    )


async def state_resources(request: Request) -> Response:
    d = daemon_of(request)
    page, limit = page_params(request)
    rtype = request.query_params.get("type")
    resources = d.detector.index.resources
    if rtype:
        resources = [r for r in resources if r.type == rtype]
    chunk = resources[(page - 1) * limit : page * limit]
    return ok(page_data("resources", [r.as_dict() for r in chunk], page, limit, len(resources)))


async def state_resource(request: Request) -> Response:
    d = daemon_of(request)
    address = unquote(request.path_params["address"])
    inst = d.detector.index.by_address.get(address)
    if inst is None:
        raise ApiError("NOT_FOUND", f"Resource with address '{address}' not found")
    return ok(inst.as_dict())


async def events(request: Request) -> Response:
    d = daemon_of(request)
    page, limit = page_params(request)
    f = EventFilter(
        severity=choice_param(request, "severity", (*SEVERITIES, "info")),
        provider=choice_param(request, "provider", PROVIDERS),
        kind=choice_param(request, "type", EVENT_TYPES),
        since=time_param(request, "since"),
        until=time_param(request, "until"),
    )
    items, total = await asyncio.to_thread(d.store.events, f, page, limit)
    return ok(page_data("events", items, page, limit, total))


async def event(request: Request) -> Response:
    d = daemon_of(request)
    event_id = request.path_params["id"]
    item = await asyncio.to_thread(d.store.event, event_id)
    if item is None:
        raise ApiError("NOT_FOUND", f"Event with ID '{event_id}' not found")
    item["drifts"] = await asyncio.to_thread(d.store.drifts_for_event, event_id)
    return ok(item)


def drift_filter(request: Request) -> DriftFilter:
    return DriftFilter(
        severity=choice_param(request, "severity", SEVERITIES),
        resource_type=request.query_params.get("resource_type") or None,
        kind=choice_param(request, "kind", DRIFT_KINDS),
        status=choice_param(request, "status", DRIFT_STATUSES),
        actor=request.query_params.get("actor") or None,
        provider=choice_param(request, "provider", PROVIDERS),
        resource_id=request.query_params.get("resource_id") or None,
        since=time_param(request, "since"),
        until=time_param(request, "until"),
    )


async def drifts(request: Request) -> Response:
    d = daemon_of(request)
    page, limit = page_params(request)
    f = drift_filter(request)
    items, total = await asyncio.to_thread(d.store.drifts, f, page, limit)
    return ok(page_data("drifts", [_compat(i) for i in items], page, limit, total))


async def drift(request: Request) -> Response:
    d = daemon_of(request)
    drift_id = request.path_params["id"]
    item = await asyncio.to_thread(d.store.drift, drift_id)
    if item is None:
        raise ApiError("NOT_FOUND", f"Drift with ID '{drift_id}' not found")
    item = _compat(item)
    item["related_events"] = await asyncio.to_thread(d.store.related_events, item, 20)
    return ok(item)


def _compat(d: dict[str, Any]) -> dict[str, Any]:
    """The TFDrift-Falco field names beside ours (additive)."""
    d.setdefault("timestamp", d.get("detected_at"))
    d.setdefault("resource_name", (d.get("resource_address") or d.get("resource_id")))
    d.setdefault("user_identity", d.get("actor"))
    return d


async def stats(request: Request) -> Response:
    d = daemon_of(request)
    counts = await asyncio.to_thread(d.store.counts)
    day_ago = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    last_24h = await asyncio.to_thread(d.store.events_since, day_ago)  # type: ignore[attr-defined]
    by_sev = {s: counts["drifts_by_severity"].get(s, 0) for s in SEVERITIES}
    total = sum(counts["drifts_by_severity"].values())
    breakdown = {s: round(100.0 * n / total, 1) if total else 0.0 for s, n in by_sev.items()}
    graph_stats = d.graph_stats() if hasattr(d, "graph_stats") else None
    resources = len(d.detector.index)
    return ok(
        {
            "graph": graph_stats
            or {"total_nodes": resources, "total_edges": 0, "node_types": {"resource": resources}},
            "drifts": {
                "total": total,
                "severity_counts": by_sev,
                "by_kind": counts["drifts_by_kind"],
                "by_status": counts["drifts_by_status"],
            },
            "events": {
                "total": sum(counts["events_by_kind"].values()),
                "last_24h": last_24h,
                "by_type": counts["events_by_kind"],
            },
            "severity_breakdown": breakdown,
            "top_resource_types": counts["top_resource_types"],
            "ingest": {
                "records": d.pipeline.records,
                "rejected": dict(d.pipeline.rejected),
                "not_drift": dict(d.pipeline.skipped),
            },
            "subscribers": len(d.hub.subscribers),
        }
    )
