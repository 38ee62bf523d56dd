"""The OpenAPI part for outputs (forwarders): CRUD, tests, deliveries and retries."""

from __future__ import annotations

from typing import Any

from monitor.outputs import DELIVERY_STATUSES
from monitor.outputs.spec import EVENTS, TYPES
from web.openapi_common import ERR as _ERR
from web.openapi_common import OK as _OK
from web.openapi_common import PAGE, path_params


def _op(summary: str, role: str, ok: str = "200", **extra: Any) -> dict[str, Any]:
    return {
        "summary": f"{summary} (role: {role})",
        "responses": {ok: _OK, "400": _ERR, "404": _ERR, "409": _ERR},
        **extra,
    }


_SPEC_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "type": {"type": "string", "enum": list(TYPES)},
        "url": {"type": "string", "format": "uri"},
        "secret": {"type": "string", "description": "webhook HMAC key (write-only)"},
        "routing_key": {"type": "string", "description": "PagerDuty key (write-only)"},
        "enabled": {"type": "boolean"},
        "min_severity": {"type": "string", "enum": ["low", "medium", "high", "critical"]},
        "filter": {"type": "object", "description": "as the live protocol's filters"},
        "events": {"type": "array", "items": {"type": "string", "enum": list(EVENTS)}},
        "max_attempts": {"type": "integer", "minimum": 1},
        "max_age_seconds": {"type": "number"},
        "timeout_seconds": {"type": "number"},
        "rate_limit_per_minute": {"type": "integer", "minimum": 1},
        "backoff_seconds": {"type": "number"},
        "max_backoff_seconds": {"type": "number"},
        "from": {"type": "string", "description": "email: the sender address"},
        "to": {"type": "array", "items": {"type": "string"}, "description": "email: recipients"},
        "username": {"type": "string", "description": "email: SMTP login"},
        "password": {"type": "string", "description": "email: SMTP password (write-only)"},
        "starttls": {"type": "boolean", "description": "email: STARTTLS before anything else"},
        "ca_file": {"type": "string", "description": "email: PEM CAs for the SMTP server"},
        "brokers": {"type": "string", "description": "kafka: host:port[,host:port...]"},
        "topic": {"type": "string", "description": "kafka: the topic produced to"},
    },
}


def _body(required: list[str]) -> dict[str, Any]:
    schema = _SPEC_SCHEMA | {"required": required}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


PATHS: dict[str, Any] = {
    "/api/v1/outputs": {
        "get": _op("Outputs with health and delivery counts (never a secret)", "viewer"),
        "post": _op(
            "Create an output: webhook, slack or pagerduty; secrets are write-only",
            "admin",
            "201",
            requestBody=_body(["name", "type"]),
        ),
    },
    "/api/v1/outputs/{id}": {
        "get": _op("One output", "viewer", parameters=path_params("id")),
        "patch": _op(
            "Change an output (fields left out are kept)",
            "admin",
            parameters=path_params("id"),
            requestBody=_body([]),
        ),
        "delete": _op("Remove an output and its queue", "admin", parameters=path_params("id")),
    },
    "/api/v1/outputs/{id}/test": {
        "post": _op(
            "Send a test drift now; the receiver's answer", "admin", parameters=path_params("id")
        )
    },
    "/api/v1/outputs/{id}/deliveries": {
        "get": _op(
            "Deliveries, newest first: status, attempts, last error, next attempt",
            "viewer",
            parameters=[
                *path_params("id"),
                {"name": "status", "in": "query", "schema": {"enum": list(DELIVERY_STATUSES)}},
                *PAGE,
            ],
        )
    },
    "/api/v1/outputs/{id}/deliveries/{did}/retry": {
        "post": _op(
            "Queue a delivery again (a dead one too)", "admin", parameters=path_params("id", "did")
        )
    },
    "/api/v1/config/webhooks/test": {
        "post": _op(
            "TFDrift UI: send a test message to {url} (any output body); the answer",
            "admin",
            requestBody=_body(["url"]),
        )
    },
}
