"""REST endpoints under /api/v1: health, state, events, drifts, stats."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response

from monitor.store import DRIFT_TYPES, DriftFilter, EventFilter, LifecycleError, StatusChange
from web.envelope import (
    DRIFT_KINDS,
    DRIFT_STATUSES,
    SEVERITIES,
    ApiError,
    JSONResponse,
    choice_param,
    json_object,
    ok,
    page_data,
    page_params,
    time_param,
)
from web.facade import Queries, StateView, api_of

EVENT_TYPES = ("cloudtrail", "falco")
PROVIDERS = ("aws", "gcp", "azure", "kubernetes", "host")


def _state_health(view: StateView) -> dict[str, Any]:
    return {
        "status": "degraded" if view.error else "ok",
        "sources": {
            s["url"]: {k: s[k] for k in ("id", "status", "error", "last_poll", "last_change")}
            | {"bad_states": s["bad_states"], "missing": s["missing"]}
            for s in view.sources
        },
        "files": [s.summary() for s in view.states],
        "resource_count": sum(len(s.managed) for s in view.states),
        "loaded_at": view.loaded_at,
        "reloads": view.reloads,
        "error": view.error,
    }


async def health(request: Request) -> Response:
    api = api_of(request)
    state = _state_health(api.state())
    counters = api.counters()
    store_ok = True
    store_error = None
    try:
        last = await api.last_seq()
    except Exception as exc:  # reported, not raised: health must answer
        store_ok, store_error, last = False, str(exc), None
    outputs = api.outputs.health()
    healthy = state["status"] == "ok" and store_ok and outputs["status"] == "ok"
    status = "ok" if healthy else "degraded"
    body = {
        "status": status,
        "started_at": counters.started_at,
        "components": {
            "state": state,
            "store": {
                "status": "ok" if store_ok else "error",
                "backend": api.settings.store_backend,
                "last_seq": last,
                "error": store_error,
                "commits": counters.store_commits,
            },
            "hub": {
                "status": "ok",
                "subscribers": counters.subscribers,
                "seq": counters.seq,
                "published": counters.published,
                "lagged_disconnects": counters.lagged_disconnects,
            },
            "sources": {
                "http": {
                    "status": "ok",
                    "records": counters.records,
                    "rejected": counters.rejected,
                },
                "demo": {"status": "ok" if api.settings.demo else "off"},
                **api.source_statuses(),
            },
            "outputs": outputs,
        },
    }
    return JSONResponse({"success": True, "data": body}, status_code=200)


async def state_meta(request: Request) -> Response:
    view = api_of(request).state()
    states = view.states
    first = states[0] if states else None
    last_modified = max((s.last_modified for s in states), default=None)
    return ok(
        {
            "version": 4,
            "terraform_version": first.terraform_version if first else None,
            "serial": first.serial if first else None,
            "lineage": first.lineage if first else None,
            "resource_count": view.resource_count,
            "last_modified": last_modified,
            "states": [s.summary() for s in states],
            "sources": [_source_summary(s) for s in view.sources],
            "error": view.error,
        }
    )


def _source_summary(view: dict[str, Any]) -> dict[str, Any]:
    """A source in /api/v1/state: its status, serial, last change and resource count."""
    return {
        k: view[k]
        for k in (
            "id",
            "url",
            "kind",
            "status",
            "error",
            "serial",
            "resource_count",
            "last_change",
            "last_poll",
            "missing",
            "bad_states",
        )
    } | {"workspaces": [s["workspace"] for s in view["states"]]}


async def state_resources(request: Request) -> Response:
    page, limit = page_params(request)
    rtype = request.query_params.get("type")
    resources = api_of(request).resources()
    if rtype:
        resources = [r for r in resources if r.type == rtype]
    chunk = resources[(page - 1) * limit : page * limit]
    return ok(page_data("resources", [r.as_dict() for r in chunk], page, limit, len(resources)))


async def state_resource(request: Request) -> Response:
    address = unquote(request.path_params["address"])
    inst = api_of(request).resource(address)
    if inst is None:
        raise ApiError("NOT_FOUND", f"Resource with address '{address}' not found")
    return ok(inst.as_dict())


async def events(request: Request) -> Response:
    page, limit = page_params(request)
    f = EventFilter(
        severity=choice_param(request, "severity", (*SEVERITIES, "info")),
        provider=choice_param(request, "provider", PROVIDERS),
        kind=choice_param(request, "type", EVENT_TYPES),
        since=time_param(request, "since"),
        until=time_param(request, "until"),
    )
    items, total = await api_of(request).events(f, page, limit)
    return ok(page_data("events", items, page, limit, total))


async def event(request: Request) -> Response:
    api = api_of(request)
    event_id = request.path_params["id"]
    item = await api.event(event_id)
    if item is None:
        raise ApiError("NOT_FOUND", f"Event with ID '{event_id}' not found")
    item["drifts"] = await api.drifts_for_event(event_id)
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
        drift_type=choice_param(request, "type", DRIFT_TYPES),
        since=time_param(request, "since"),
        until=time_param(request, "until"),
    )


async def drifts(request: Request) -> Response:
    page, limit = page_params(request)
    f = drift_filter(request)
    items, total = await api_of(request).drifts(f, page, limit)
    return ok(page_data("drifts", items, page, limit, total))


async def drift(request: Request) -> Response:
    api = api_of(request)
    drift_id = request.path_params["id"]
    item = await api.drift(drift_id)
    if item is None:
        raise ApiError("NOT_FOUND", f"Drift with ID '{drift_id}' not found")
    item["related_events"] = await _related(api, item)
    address = item.get("resource_address")
    item["blast_radius"] = (
        api.graph.blast_radius(address) if address else {"count": 0, "addresses": []}
    )
    return ok(item)


async def drift_summary(request: Request) -> Response:
    return ok(await api_of(request).drift_summary())


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    return json_object(raw, "body")


async def _change(request: Request, change: StatusChange) -> Response:
    principal = getattr(request.state, "principal", None)
    if principal is not None:
        change = dataclasses.replace(change, actor=f"{principal.name} ({principal.key_id})")
    try:
        updated = await api_of(request).set_status(change)
    except LifecycleError as exc:
        raise ApiError(exc.code, exc.message) from None
    return ok(updated)


async def patch_drift(request: Request) -> Response:
    body = await _json_body(request)
    status = body.get("status")
    if status not in ("investigating", "resolved"):
        raise ApiError("VALIDATION_ERROR", "status is required: investigating or resolved")
    note = body.get("note")
    if note is not None and not isinstance(note, str):
        raise ApiError("VALIDATION_ERROR", "note must be a string")
    return await _change(request, StatusChange(request.path_params["id"], status, note))


async def resolve_drift(request: Request) -> Response:
    body = await _json_body(request)
    capture = body.get("capture_baseline", False)
    if not isinstance(capture, bool):
        raise ApiError("VALIDATION_ERROR", "capture_baseline must be true or false")
    note = body.get("note")
    if note is not None and not isinstance(note, str):
        raise ApiError("VALIDATION_ERROR", "note must be a string")
    return await _change(
        request, StatusChange(request.path_params["id"], "resolved", note, capture)
    )


async def _related(api: Queries, drift: dict[str, Any], limit: int = 20) -> list[dict[str, Any]]:
    """The drift's cause and repeats, events that drifted the same resource, then what the
    graph links to it (correlated Falco alerts, the session's calls around it)."""
    stored = await api.related_events(drift, limit)
    repeats = set(drift.get("occurrence_events", [])[1:])
    for n, event in enumerate(stored):
        event["relation"] = (
            "cause" if n == 0 else "occurrence" if event.get("id") in repeats else "same_resource"
        )
    seen = {e.get("id") for e in stored}
    for linked in api.graph.related_events(drift["id"], limit):
        node_id = str(linked.get("id", ""))
        event_id = node_id.split(":", 1)[1] if ":" in node_id else node_id
        if event_id in seen:
            continue
        seen.add(event_id)
        found = await api.event(event_id)
        event = found if found is not None else linked
        stored.append({**event, "relation": linked.get("relation"), "via": linked.get("via")})
    return stored[: limit * 2]


async def dead_letters(request: Request) -> Response:
    page, limit = page_params(request)
    items, total = await api_of(request).dead_letters(page, limit)
    return ok(page_data("dead_letters", items, page, limit, total))


async def stats(request: Request) -> Response:
    api = api_of(request)
    counts = await api.counts()
    day_ago = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    last_24h = await api.events_since(day_ago)
    by_sev = {s: counts["drifts_by_severity"].get(s, 0) for s in SEVERITIES}
    total = counts["drifts_total"]
    breakdown = {s: round(100.0 * n / total, 1) if total else 0.0 for s, n in by_sev.items()}
    graph_stats = api.graph.stats()
    ingest = counts["ingest"]
    return ok(
        {
            "graph": graph_stats,
            "drifts": {
                "total": total,
                "severity_counts": by_sev,
                "by_kind": counts["drifts_by_kind"],
                "by_status": counts["drifts_by_status"],
                "by_type": counts["drifts_by_type"],
            },
            "events": {
                "total": counts["events_total"],
                "last_24h": last_24h,
                "by_type": counts["events_by_kind"],
            },
            "severity_breakdown": breakdown,
            "top_resource_types": counts["top_resource_types"],
            "ingest": {
                "records": ingest.get("records", 0),
                "rejected": {
                    k[len("rejected.") :]: v for k, v in ingest.items() if k.startswith("rejected.")
                },
                "not_drift": {
                    k[len("not_drift.") :]: v
                    for k, v in ingest.items()
                    if k.startswith("not_drift.")
                },
            },
            "sources": api.source_statuses(),
            "subscribers": api.counters().subscribers,
        }
    )
