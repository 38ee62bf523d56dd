"""Dotted paths into an event record: `requestParameters.items[*].id`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

WILDCARD = None
ROOTS = frozenset(
    {
        "requestParameters",
        "responseElements",
        "additionalEventData",
        "resources",
        "serviceEventDetails",
        "awsRegion",
        "recipientAccountId",
    }
)
_TOKEN = re.compile(r"([A-Za-z0-9_@:$\-]+)|\[(\*|\d+)\]|\.")


class PathError(ValueError):
    """A path in the catalogue is not well-formed."""


def parse_path(text: str) -> tuple[str | int | None, ...]:
    """Split `a.b[0].c[*]` into ('a', 'b', 0, 'c', None); the first part must be a record root."""
    if not isinstance(text, str) or not text:
        raise PathError(f"path must be a non-empty string, got {text!r}")
    tokens: list[str | int | None] = []
    pos = 0
    expect_name = True
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise PathError(f"bad character at {pos} in path {text!r}")
        name, index = m.group(1), m.group(2)
        if name is not None:
            if not expect_name:
                raise PathError(f"missing '.' before {name!r} in path {text!r}")
            tokens.append(name)
            expect_name = False
        elif index is not None:
            if expect_name:
                raise PathError(f"index without a name in path {text!r}")
            tokens.append(WILDCARD if index == "*" else int(index))
        else:
            if expect_name:
                raise PathError(f"empty segment in path {text!r}")
            expect_name = True
        pos = m.end()
    if expect_name:
        raise PathError(f"path {text!r} ends with '.'")
    if tokens[0] not in ROOTS:
        raise PathError(f"path {text!r} must start with one of {sorted(ROOTS)}")
    return tuple(tokens)


def extract(root: dict[str, Any], tokens: tuple[str | int | None, ...]) -> list[Any]:
    """Every value the path reaches (several when it has `[*]`); missing parts give nothing."""
    return list(_walk(root, tokens, 0))


def _walk(node: Any, tokens: tuple[str | int | None, ...], i: int) -> Iterator[Any]:
    while i < len(tokens):
        tok = tokens[i]
        if tok is WILDCARD:
            if isinstance(node, list):
                for item in node:
                    yield from _walk(item, tokens, i + 1)
            return
        if isinstance(tok, int):
            if not isinstance(node, list) or tok >= len(node):
                return
            node = node[tok]
        else:
            if not isinstance(node, dict):
                return
            node = node.get(tok)
            if node is None:
                return
        i += 1
    if node is not None:
        yield node
