"""Health for probes and people: /livez, /readyz, /health (status only), /api/v1/health.

Any status but ok is an HTTP 503, so a load balancer or probe needs no body parsing. The
bare /health says only the status (it is meant to be public); the detail, which names
files and causes, is under /api/v1/health.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from web.envelope import JSONResponse
from web.facade import Api, Row, StateView, api_of

# Source states that mean the source is not delivering now.
_DOWN_STATES = frozenset({"backoff", "connecting", "degraded", "error", "failed", "stopped"})


def _reply(data: dict[str, Any], good: bool) -> Response:
    return JSONResponse({"success": True, "data": data}, status_code=200 if good else 503)


def source_ok(status: Row) -> bool:
    """A configured source is connected and not in a failed or backoff state."""
    return bool(status.get("connected", True)) and status.get("state") not in _DOWN_STATES


def _state(view: StateView) -> dict[str, Any]:
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


async def _store(api: Api) -> dict[str, Any]:
    fault: str | None
    last: int | None = None
    try:
        fault = await api.store_fault()
        if fault is None:
            last = await api.last_seq()
    except Exception as exc:  # reported, not raised: health must answer
        fault = f"{type(exc).__name__}: {exc}"
    return {
        "status": "failed" if fault else "ok",
        "backend": api.settings.store_backend,
        "last_seq": last,
        "error": fault,
        "commits": api.counters().store_commits,
    }


def _sources(api: Api) -> dict[str, Any]:
    counters = api.counters()
    out: dict[str, Any] = {
        "http": {
            "status": "ok",
            "records": counters.http_records,
            "rejected": counters.http_rejected,
        },
        "demo": {"status": "ok" if api.settings.demo else "off"},
    }
    for name, status in api.source_statuses().items():
        out[name] = {**status, "status": "ok" if source_ok(status) else "degraded"}
    return out


async def report(api: Api) -> dict[str, Any]:
    """The detailed health body; `status` is failed when the store refuses writes,
    degraded when the state, a source or an output is in trouble, else ok."""
    counters = api.counters()
    store = await _store(api)
    state = _state(api.state())
    sources = _sources(api)
    outputs = api.outputs.health()
    degraded = (
        state["status"] != "ok"
        or any(s["status"] == "degraded" for s in sources.values())
        or outputs["status"] != "ok"
    )
    status = "failed" if store["status"] != "ok" else "degraded" if degraded else "ok"
    return {
        "status": status,
        "started_at": counters.started_at,
        "components": {
            "state": state,
            "store": store,
            "hub": {
                "status": "ok",
                "subscribers": counters.subscribers,
                "seq": counters.seq,
                "published": counters.published,
                "lagged_disconnects": counters.lagged_disconnects,
            },
            "sources": sources,
            "outputs": outputs,
        },
    }


async def health(request: Request) -> Response:
    """The detailed health (/api/v1/health); 503 unless ok."""
    body = await report(api_of(request))
    return _reply(body, body["status"] == "ok")


async def health_status(request: Request) -> Response:
    """The bare status (/health); 503 unless ok."""
    body = await report(api_of(request))
    return _reply({"status": body["status"]}, body["status"] == "ok")


async def livez(request: Request) -> Response:
    """The process serves requests."""
    return _reply({"status": "ok"}, True)


_PATH = re.compile(r"(?:[A-Za-z]:)?[\\/][^\s:'\"]+")


def _public(cause: str | None) -> str | None:
    """A cause for an unauthenticated probe: the same words, no filesystem paths."""
    return _PATH.sub("<path>", cause) if cause else cause


async def readyz(request: Request) -> Response:
    """Ready for traffic: state loaded, the store takes writes, every source connected."""
    api = api_of(request)
    checks: dict[str, Any] = {
        "state": "ok" if api.state().loaded_at is not None else "not loaded",
        "store": _public((await _store(api))["error"]) or "ok",
        "sources": {
            name: "ok" if source_ok(status) else f"not connected ({status.get('state')})"
            for name, status in api.source_statuses().items()
        },
    }
    ready = (
        checks["state"] == "ok"
        and checks["store"] == "ok"
        and all(v == "ok" for v in checks["sources"].values())
    )
    return _reply({"status": "ready" if ready else "not_ready", "checks": checks}, ready)
