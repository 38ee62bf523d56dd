"""The OpenAPI part for access control: security schemes and the auth, key and audit paths."""

from __future__ import annotations

from typing import Any

from monitor.auth import Role
from web.openapi_common import ERR as _ERR
from web.openapi_common import OK as _OK
from web.openapi_common import PAGE as _PAGE
from web.openapi_common import path_params

_DENIED = {"401": _ERR, "403": _ERR, "429": _ERR}
PUBLIC_PATHS = ("/health", "/livez", "/readyz")

SCHEMES: dict[str, Any] = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "an API key: dl_..."},
    "basic": {
        "type": "http",
        "scheme": "basic",
        "description": "any user name, the API key as password (Falco's http_output URL)",
    },
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": "driftline_session",
        "description": "from POST /api/v1/auth/session; writes also send X-CSRF-Token",
    },
    "ticket": {
        "type": "apiKey",
        "in": "query",
        "name": "ticket",
        "description": "single-use, 60 s, POST /api/v1/auth/ticket; /ws and /api/v1/stream only",
    },
}
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"basic": []}, {"session": []}]


def _op(
    summary: str,
    role: str,
    ok: str = "200",
    responses: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "summary": f"{summary} (role: {role})",
        "responses": {ok: _OK, "400": _ERR, **_DENIED, **(responses or {})},
        **extra,
    }


_JSON_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["name", "role"],
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 200},
                    "role": {"type": "string", "enum": [r.value for r in Role]},
                    "expires_in_days": {"type": "number", "exclusiveMinimum": 0, "maximum": 3650},
                },
            }
        }
    },
}
# What the server parses: RFC 3339 or epoch seconds; empty is no bound.
TIME = {
    "anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "string", "pattern": "^[0-9]{1,10}$"},
        {"const": ""},
    ]
}

PATHS: dict[str, Any] = {
    "/api/v1/auth/whoami": {"get": _op("The caller's key id, name, role and credential", "viewer")},
    "/api/v1/auth/session": {
        "post": _op(
            "Trade the Authorization key for an HttpOnly session cookie and a CSRF token",
            "viewer",
            "201",
        ),
        "delete": _op("End the session and clear its cookie", "viewer"),
    },
    "/api/v1/auth/ticket": {
        "post": _op(
            "A single-use ticket valid for 60 s, for ?ticket= on /ws and the SSE stream",
            "viewer",
            "201",
        )
    },
    "/api/v1/api-keys": {
        "get": _op("Every key's fields (never a secret)", "admin"),
        "post": _op(
            "Create a key; the response is the only time its secret is shown",
            "admin",
            "201",
            requestBody=_JSON_BODY,
        ),
    },
    "/api/v1/api-keys/{id}": {
        "delete": _op(
            "Revoke a key (its sessions end with it); 404 for an unknown id",
            "admin",
            responses={"404": _ERR},
            parameters=path_params("id"),
        )
    },
    "/api/v1/state-sources": {
        "get": _op("State sources with status, serial, last change (never a token)", "admin"),
        "post": _op(
            "Watch a source: {url, token?, username?, password?, endpoint?, poll_seconds?}; "
            "url is a path or glob, s3://BUCKET/KEY or glob, http(s)://, tfc://ORG/WORKSPACE "
            "(a glob, or tag:TAG); secrets are write-only",
            "admin",
            "201",
            requestBody={
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["url"],
                            "properties": {"url": {"type": "string", "minLength": 1}},
                        }
                    }
                },
            },
        ),
    },
    "/api/v1/state-sources/{id}": {
        "delete": _op(
            "Stop watching a source; its resources leave the index; 404 for an unknown id",
            "admin",
            responses={"404": _ERR},
            parameters=path_params("id"),
        )
    },
    "/api/v1/audit-log": {
        "get": _op(
            "Audit log, newest first",
            "admin",
            parameters=[
                *_PAGE,
                {
                    "name": "actor",
                    "in": "query",
                    "schema": {"type": "string"},
                    "description": "key id or name",
                },
                {"name": "action", "in": "query", "schema": {"type": "string"}},
                *({"name": name, "in": "query", "schema": TIME} for name in ("since", "until")),
            ],
        )
    },
    "/api/v1/audit-log/verify": {
        "get": _op(
            "Check the chain: checked, head_seq, head_hash, status (ok or broken), first_bad_seq",
            "admin",
            parameters=[
                {
                    "name": "expected_min_seq",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 0},
                }
            ],
        )
    },
}


def secure(spec: dict[str, Any]) -> None:
    """Add the auth paths and schemes; every operation but the public probes needs a key."""
    spec["paths"].update(PATHS)
    spec["components"]["securitySchemes"] = SCHEMES
    spec["security"] = SECURITY
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if path in PUBLIC_PATHS:
                op["security"] = []
                continue
            if path in ("/ws", "/api/v1/stream"):
                op["security"] = [*SECURITY, {"ticket": []}]
            if not isinstance(op, dict) or method not in ("get", "post", "patch", "delete"):
                continue
            for code, resp in _DENIED.items():
                op.setdefault("responses", {}).setdefault(code, resp)
