"""The OpenAPI description of every endpoint (served at /openapi.json)."""

from __future__ import annotations

import copy
from typing import Any

from graph.model import EDGE_TYPES, NODE_TYPES, GraphLimits
from monitor.filters import KEYS as FILTER_KEYS
from web.envelope import DRIFT_KINDS, DRIFT_STATUSES, SEVERITIES
from web.metrics import OPENAPI_PATH as METRICS
from web.openapi_auth import secure
from web.openapi_common import PAGE
from web.openapi_noise import PATHS as NOISE_PATHS
from web.openapi_outputs import PATHS as OUTPUT_PATHS

# The document states the default graph caps; `spec_for` gives the running ones.
LIMITS = GraphLimits()


def _q(name: str, desc: str, enum: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if enum:
        schema["enum"] = [*enum, ""]  # empty is no filter, as if not given
    return {"name": name, "in": "query", "description": desc, "schema": schema}


def _time(name: str) -> dict[str, Any]:
    """`since` / `until`: what the server parses (RFC 3339 or epoch seconds), nothing looser."""
    bound = "lower" if name == "since" else "upper"
    return {
        "name": name,
        "in": "query",
        "description": f"time {bound} bound: RFC 3339 (ISO 8601) or epoch seconds",
        "schema": {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "string", "pattern": "^[0-9]{1,10}$"},
                {"const": ""},  # no bound, as if not given
            ]
        },
    }


def _types(desc: str, names: tuple[str, ...]) -> dict[str, Any]:
    """A filter taking several values, repeated or comma-separated; they are alternatives."""
    return {
        "name": "type",
        "in": "query",
        "description": desc + " (repeat the parameter or separate by commas: any of them)",
        "style": "form",
        "explode": True,
        "schema": {"type": "array", "items": {"type": "string", "enum": [*names, ""]}},
    }


def _p(name: str, desc: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": desc,
        "schema": {"type": "string"},
    }


ENVELOPE = {"$ref": "#/components/schemas/Envelope"}
ERROR = {
    "description": "error envelope",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
NOT_OK = {
    "description": "not ok (or not ready): the same body, whose status says why",
    "content": {"application/json": {"schema": ENVELOPE}},
}


def _get(
    summary: str, params: list[dict[str, Any]] | None = None, errors: tuple[int, ...] = (400,)
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": "success envelope",
            "content": {"application/json": {"schema": ENVELOPE}},
        }
    }
    for code in errors:
        # Only the health routes answer 503 from a GET, with their usual body.
        responses[str(code)] = NOT_OK if code == 503 else ERROR
    return {"get": {"summary": summary, "parameters": params or [], "responses": responses}}


INGEST_COUNTS = {
    "type": "object",
    "required": ["accepted", "rejected", "reasons", "errors"],
    "properties": {
        "accepted": {"type": "integer", "minimum": 0},
        "rejected": {"type": "integer", "minimum": 0},
        "reasons": {"type": "object", "additionalProperties": {"type": "integer"}},
        "changes": {"type": "integer"},
        "falco_alerts": {"type": "integer"},
        "drifts": {"type": "integer"},
        "drift_ids": {"type": "array", "items": {"type": "string"}},
        "repeats": {"type": "integer"},
        "suppressed": {"type": "integer"},
        "errors": {
            "type": "array",
            "maxItems": 20,
            "description": "the first rejections: {index, line, reason, detail} for a record "
            "that did not decode, {record, reason, detail} for one refused after decoding",
            "items": {"type": "object"},
        },
    },
}


def _ingest(summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": [
                {
                    "name": "Content-Encoding",
                    "in": "header",
                    "description": "gzip, or none (anything else is a 415)",
                    "schema": {"type": "string", "enum": ["gzip", "x-gzip", "identity"]},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"oneOf": [{"type": "object"}, {"type": "array", "minItems": 1}]}
                    },
                    "application/x-ndjson": {"schema": {"type": "string"}},
                },
            },
            "responses": {
                "202": {
                    "description": "accepted / rejected counts with the first reasons",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["success", "data"],
                                "properties": {"success": {"const": True}, "data": INGEST_COUNTS},
                            }
                        }
                    },
                },
                "400": ERROR,
                "408": ERROR,
                "413": ERROR,
                "415": ERROR,
                "422": {
                    "description": "no record was accepted: the error envelope and the counts",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["success", "error", "data"],
                                "properties": {
                                    "success": {"const": False},
                                    "error": {"type": "object"},
                                    "data": INGEST_COUNTS,
                                },
                            }
                        }
                    },
                },
                "503": {**ERROR, "description": "not stored: the database file is unusable"},
                "507": {**ERROR, "description": "not stored: the disk is full"},
            },
        }
    }


DRIFT_FILTERS = [
    _q("severity", "drift severity", list(SEVERITIES)),
    _q("resource_type", "Terraform resource type, e.g. aws_iam_role"),
    _q("kind", "drift kind", list(DRIFT_KINDS)),
    _q("status", "lifecycle status", list(DRIFT_STATUSES)),
    _q("actor", "actor user name (session name for roles)"),
    _q("provider", "cloud provider", ["aws", "gcp", "azure", "kubernetes"]),
    _q("resource_id", "cloud resource id"),
    _q("type", "drift type (from the rule category)", ["configuration", "security", "compliance"]),
    _time("since"),
    _time("until"),
    _q(
        "suppressed",
        "true: the drifts a suppression held back (with suppressed_by), page and limit only",
        ["true", "false"],
    ),
]

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Driftline API",
        "version": "1.0.0",
        "description": "Real-time Terraform drift monitor. Wire format follows the "
        "TFDrift-Falco API (REST /api/v1, WebSocket /ws, SSE "
        "/api/v1/stream); extensions are additive.",
    },
    "paths": {
        "/livez": _get("Liveness: 200 while the process serves", errors=()),
        "/readyz": _get(
            "Readiness: 503 unless the state is loaded, the store takes writes and every "
            "configured source is connected; `checks` says which",
            errors=(503,),
        ),
        "/health": _get(
            "Status only (ok, degraded, failed), for load balancers (no credentials); "
            "503 unless ok",
            errors=(503,),
        ),
        "/api/v1/health": _get("Health with per-component detail; 503 unless ok", errors=(503,)),
        "/api/v1/state": _get("Terraform state metadata", errors=()),
        "/api/v1/state/resources": _get(
            "Managed resources (secrets redacted)", [*PAGE, _q("type", "resource type")]
        ),
        "/api/v1/state/resources/{address}": _get(
            "One managed resource by address (URL-encoded)",
            [_p("address", "resource address")],
            (404,),
        ),
        "/api/v1/events": _get(
            "Cloud change events and Falco alerts",
            [
                *PAGE,
                _q("severity", "severity", [*SEVERITIES, "info"]),
                _q("provider", "provider", ["aws", "gcp", "azure", "kubernetes", "host"]),
                _q("type", "event type", ["cloudtrail", "falco"]),
                _time("since"),
                _time("until"),
            ],
        ),
        "/api/v1/events/{id}": _get(
            "One event with the drifts it caused", [_p("id", "event id")], (404,)
        ),
        "/api/v1/drifts": _get("Drift alerts, newest first", [*PAGE, *DRIFT_FILTERS]),
        "/api/v1/drifts/summary": _get("Totals by severity, status and type", errors=()),
        "/api/v1/drifts/{id}": {
            **_get(
                "One drift: related_events, baseline, JSON diff baseline -> current, "
                "occurrences, status history",
                [_p("id", "drift id")],
                (404,),
            ),
            "patch": {
                "summary": "Move a drift through its lifecycle: detected -> investigating -> "
                "resolved",
                "parameters": [_p("id", "drift id")],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["status"],
                                "properties": {
                                    "status": {"enum": ["investigating", "resolved"]},
                                    "note": {"type": "string"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "the updated drift",
                        "content": {"application/json": {"schema": ENVELOPE}},
                    },
                    "400": ERROR,
                    "404": ERROR,
                    "409": ERROR,
                },
            },
        },
        "/api/v1/drifts/{id}/resolve": {
            "post": {
                "summary": "Resolve a drift; capture_baseline accepts its current value so the "
                "same value is not reported again until state or baseline changes",
                "parameters": [_p("id", "drift id")],
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "capture_baseline": {"type": "boolean", "default": False},
                                    "note": {"type": "string"},
                                },
                            }
                        }
                    }
                },
                "responses": {
                    "200": {
                        "description": "the resolved drift",
                        "content": {"application/json": {"schema": ENVELOPE}},
                    },
                    "400": ERROR,
                    "404": ERROR,
                    "409": ERROR,
                },
            }
        },
        "/api/v1/stats": _get("Statistics", errors=()),
        "/api/v1/dead-letters": _get(
            "Records a source could not decode (Kafka poison records), newest first", PAGE
        ),
        "/api/v1/falco/events": _ingest(
            "Falco http_output (one alert per request), NDJSON batches, falcosidekick webhook"
        ),
        "/api/v1/ingest/cloudtrail": _ingest(
            "CloudTrail record, {Records: [...]} log file, array, NDJSON or EventBridge envelope"
        ),
        "/api/v1/ingest/k8s-audit": _ingest(
            "Kubernetes API server webhook audit backend: an audit.k8s.io Event or EventList "
            "(only ResponseComplete stages count)"
        ),
        "/api/v1/ingest/gcp-audit": _ingest(
            "GCP Cloud Audit Logs: a LogEntry, a list, {entries}, Pub/Sub push or pull bodies"
        ),
        "/api/v1/ingest/azure-activity": _ingest(
            "Azure Activity Log: {records: [...]} diagnostic exports, EventData / REST shapes"
        ),
        "/api/v1/stream": {
            "get": {
                "summary": "Server-Sent Events: connected, drift, falco, state_change, lagged; "
                "every event has an id (resume with Last-Event-ID)",
                "parameters": [
                    _q("topics", "comma-separated: all, drifts, events, state, stats"),
                    _q("last_event_id", "resume point when the header cannot be set"),
                    *(
                        _q(key, "filter: comma-separated values, any of them matches")
                        for key in FILTER_KEYS
                    ),
                ],
                "responses": {"200": {"description": "text/event-stream"}, "400": ERROR},
            }
        },
        "/ws": {
            "get": {
                "summary": "WebSocket: client messages subscribe/unsubscribe/ping/query "
                "({type, topic, payload, since}); server messages {type, topic, "
                "timestamp, seq, payload} with types welcome, drift, falco, "
                "state_change, pong, subscribed, unsubscribed, query_result, error",
                "parameters": [_q("topics", "initial topics (comma-separated)")],
                "responses": {"101": {"description": "switching protocols"}},
            }
        },
        "/api/v1/graph": _get(
            "The causal graph as Cytoscape elements {nodes, edges} (capped; `truncated` says so)",
            [
                _types("node types", NODE_TYPES),
                _time("since"),
                _time("until"),
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": LIMITS.max_elements},
                },
            ],
        ),
        "/api/v1/graph/nodes": _get(
            "Graph nodes, paginated",
            [
                *PAGE,
                _types("node types", NODE_TYPES),
                _time("since"),
                _time("until"),
            ],
        ),
        "/api/v1/graph/edges": _get(
            "Graph edges, paginated",
            [
                *PAGE,
                _types("edge labels", EDGE_TYPES),
                _time("since"),
                _time("until"),
            ],
        ),
        "/api/v1/graph/nodes/{id}": _get(
            "One node with its data", [_p("id", "node id")], (400, 404)
        ),
        "/api/v1/graph/neighbors/{id}": _get(
            "Nodes within `depth` hops (1-3) of a node, as elements",
            [
                _p("id", "node id"),
                {
                    "name": "depth",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 3},
                },
            ],
            (400, 404),
        ),
        "/api/v1/graph/impact/{id}": _get(
            "Blast radius: what depends on a resource, up to `depth` hops",
            [
                _p("id", "resource node id or address"),
                {
                    "name": "depth",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": LIMITS.max_impact_depth},
                },
            ],
            (400, 404),
        ),
        "/api/v1/graph/path": _get(
            "Shortest path between two nodes",
            [
                {
                    "name": end,
                    "in": "query",
                    "required": True,
                    "description": "node id",
                    "schema": {"type": "string", "minLength": 1},
                }
                for end in ("from", "to")
            ],
            (400, 404),
        ),
        "/api/v1/graph/stats": _get("Node and edge counts by type", errors=()),
        "/openapi.json": _get("This document", errors=()),
        "/metrics": METRICS,
    },
    "components": {
        "schemas": {
            "Envelope": {
                "type": "object",
                "required": ["success", "data"],
                "properties": {"success": {"const": True}, "data": {}},
            },
            "Error": {
                "type": "object",
                "required": ["success", "error"],
                "properties": {
                    "success": {"const": False},
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {
                                "type": "string",
                                "enum": [
                                    "VALIDATION_ERROR",
                                    "NOT_FOUND",
                                    "INTERNAL_ERROR",
                                    "RATE_LIMIT_EXCEEDED",
                                    "UNAUTHORIZED",
                                    "FORBIDDEN",
                                    "UNSUPPORTED_MEDIA_TYPE",
                                    "PAYLOAD_TOO_LARGE",
                                    "METHOD_NOT_ALLOWED",
                                    "CONFLICT",
                                    "BAD_REQUEST",
                                    "UNSUPPORTED_MEDIA_TYPE",
                                    "REQUEST_TIMEOUT",
                                    "UNPROCESSABLE_ENTITY",
                                    "SERVICE_UNAVAILABLE",
                                    "INSUFFICIENT_STORAGE",
                                ],
                            },
                            "message": {"type": "string"},
                        },
                    },
                },
            },
        }
    },
}


def spec_for(limits: GraphLimits) -> dict[str, Any]:
    """SPEC with the graph caps a running server enforces (they are configurable)."""
    if (limits.max_elements, limits.max_impact_depth) == (
        LIMITS.max_elements,
        LIMITS.max_impact_depth,
    ):
        return SPEC
    spec = copy.deepcopy(SPEC)
    for path, name, most in (
        ("/api/v1/graph", "limit", limits.max_elements),
        ("/api/v1/graph/impact/{id}", "depth", limits.max_impact_depth),
    ):
        for param in spec["paths"][path]["get"]["parameters"]:
            if param["name"] == name:
                param["schema"]["maximum"] = most
    return spec


SPEC["paths"].update(NOISE_PATHS)
SPEC["paths"].update(OUTPUT_PATHS)
secure(SPEC)
