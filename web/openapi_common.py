"""Pieces every part of the OpenAPI document uses: the envelopes and the page parameters."""

from __future__ import annotations

from typing import Any

from web.envelope import DEFAULT_LIMIT, MAX_LIMIT, MAX_PAGE

OK: dict[str, Any] = {
    "description": "success envelope",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}},
}
ERR: dict[str, Any] = {
    "description": "error envelope",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
PAGE: list[dict[str, Any]] = [
    {
        "name": "page",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1},
    },
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    },
]


def path_params(*names: str) -> list[dict[str, Any]]:
    """Required string path parameters (`{id}`, `{did}`)."""
    return [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
    ]
