"""The OpenAPI part for noise control: suppressions, custom and disabled rules, apply
principals and the rule catalogue."""

from __future__ import annotations

from typing import Any

from monitor.noise import MATCH_KEYS
from monitor.noise.rules import CUSTOM_KEYS, DISABLED_KEYS, SEVERITIES
from web.openapi_common import ERR as _ERR
from web.openapi_common import OK as _OK
from web.openapi_common import PAGE, path_params

_ID = path_params("id")


def _match(keys: tuple[str, ...], desc: str) -> dict[str, Any]:
    return {
        "type": "object",
        "minProperties": 1,
        "additionalProperties": False,
        "description": desc,
        "properties": {k: {"type": "string", "minLength": 1} for k in keys},
    }


def _body(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "required": required, "properties": props}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _op(summary: str, role: str, ok: str = "200", **extra: Any) -> dict[str, Any]:
    responses = {ok: _OK, "400": _ERR}
    if "parameters" in extra:
        responses["404"] = _ERR
    if ok == "201":
        responses["409"] = _ERR
    return {"summary": f"{summary} (role: {role})", "responses": responses, **extra}


_SUPPRESSION_MATCH = _match(
    MATCH_KEYS[:-1],
    "every key given must match: resource_address, resource_type, resource_id and actor "
    "(user name, ARN or role) are globs; field is a path prefix; kind and severity exact",
)
_SUPPRESSION = {
    "match": _SUPPRESSION_MATCH,
    "reason": {"type": "string", "minLength": 1},
    "expires_at": {"type": ["string", "null"], "format": "date-time"},
}
_CUSTOM = {
    "match": _match(CUSTOM_KEYS, "tag is KEY=VALUE (a glob) or a bare KEY"),
    "severity": {"type": "string", "enum": list(SEVERITIES)},
    "category": {"type": "string"},
}
_DISABLED = {
    "match": _match(DISABLED_KEYS, "stop reporting an event, a type, or the two together"),
    "reason": {"type": "string"},
}
_PRINCIPAL = _body({"principal": {"type": "string", "minLength": 1}}, ["principal"])

PATHS: dict[str, Any] = {
    "/api/v1/rules": {
        "get": _op(
            "The built-in catalogue: event, service, types, fields, default severity and "
            "category, whether disabled; ?event= and ?service= narrow it",
            "viewer",
            parameters=[
                {"name": "event", "in": "query", "schema": {"type": "string"}},
                {"name": "service", "in": "query", "schema": {"type": "string"}},
                *PAGE,
            ],
        )
    },
    "/api/v1/suppressions": {
        "get": _op("Suppressions, each with `active` (not expired)", "analyst"),
        "post": _op(
            "Suppress matching drifts: stored with suppressed_by, never published",
            "analyst",
            "201",
            requestBody=_body(_SUPPRESSION, ["match", "reason"]),
        ),
    },
    "/api/v1/suppressions/{id}": {
        "patch": _op(
            "Change a suppression's match, reason or expires_at",
            "analyst",
            parameters=_ID,
            requestBody=_body(_SUPPRESSION, []),
        ),
        "delete": _op("Remove a suppression", "analyst", parameters=_ID),
    },
    "/api/v1/custom-rules": {
        "get": _op("Custom rules, tried before the built-in severity rules", "viewer"),
        "post": _op(
            "Set the severity and/or category of matching drifts",
            "admin",
            "201",
            requestBody=_body(_CUSTOM, ["match"]),
        ),
    },
    "/api/v1/custom-rules/{id}": {
        "patch": _op(
            "Change a custom rule", "admin", parameters=_ID, requestBody=_body(_CUSTOM, [])
        ),
        "delete": _op("Remove a custom rule", "admin", parameters=_ID),
    },
    "/api/v1/disabled-rules": {
        "get": _op("Disabled rules", "viewer"),
        "post": _op(
            "Stop reporting an event or a resource type",
            "admin",
            "201",
            requestBody=_body(_DISABLED, ["match"]),
        ),
    },
    "/api/v1/disabled-rules/{id}": {
        "delete": _op("Report it again", "admin", parameters=_ID),
    },
    "/api/v1/apply-principals": {
        "get": _op("Principals whose changes are Terraform's (source: config or api)", "viewer"),
        "post": _op("Add one: {principal}", "admin", "201", requestBody=_PRINCIPAL),
        "delete": {
            **_op("Remove one added through the API: {principal}", "admin", requestBody=_PRINCIPAL),
            "responses": {"200": _OK, "400": _ERR, "404": _ERR, "409": _ERR},
        },
    },
}
