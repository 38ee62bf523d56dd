"""Dotted paths into an event record: `requestParameters.items[*].id`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rules.transforms import dns_name

WILDCARD = None
# The root of the item an entry's `each:` fans out over (one change of a batch, one rule).
EACH = "each"
ROOTS = frozenset(
    {
        "requestParameters",
        "responseElements",
        "additionalEventData",
        "resources",
        "serviceEventDetails",
        "awsRegion",
        "recipientAccountId",
        EACH,
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


RecordPath = tuple[str | int | None, ...]


@dataclass(frozen=True, slots=True)
class Slot:
    """A template's `{path}`: its first value put in place. `{path?}`: an absent value is
    empty text rather than no text at all; `{path|dns}`: a DNS name as Terraform stores it."""

    path: RecordPath
    optional: bool = False
    dns: bool = False


# A template's parts: literal text, or a slot.
Template = tuple[str | Slot, ...]
_FIELD_REF = re.compile(r"\{([^{}]+)\}")
_SLOT = re.compile(r"^(?P<path>[^?|]+)(?P<optional>\?)?(?:\|(?P<filter>[a-z]+))?$")


def _slot(text: str) -> Slot:
    m = _SLOT.match(text)
    if not m:
        raise PathError(f"bad template field {{{text}}}")
    if m.group("filter") not in (None, "dns"):
        raise PathError(f"unknown template filter {m.group('filter')!r} in {{{text}}}")
    return Slot(parse_path(m.group("path")), bool(m.group("optional")), m.group("filter") == "dns")


def parse_template(text: str) -> Template:
    """`{requestParameters.roleName}:{requestParameters.policyName}`, or a bare path, as parts.

    Templates compose the ids Terraform builds from several request values (`role:name`);
    a fan-out (`[*]`) has no single value to put in place, so it is refused.
    """
    if not isinstance(text, str) or not text:
        raise PathError(f"template must be a non-empty string, got {text!r}")
    if "{" not in text:
        parts: list[str | Slot] = [Slot(parse_path(text))]
    else:
        parts = []
        pos = 0
        for m in _FIELD_REF.finditer(text):
            if m.start() > pos:
                parts.append(text[pos : m.start()])
            parts.append(_slot(m.group(1)))
            pos = m.end()
        if pos < len(text):
            parts.append(text[pos:])
        if any(isinstance(p, str) and ("{" in p or "}" in p) for p in parts):
            raise PathError(f"unbalanced braces in template {text!r}")
    if any(isinstance(p, Slot) and WILDCARD in p.path for p in parts):
        raise PathError(f"a template takes single values, not [*]: {text!r}")
    return tuple(parts)


def render(root: dict[str, Any], template: Template) -> str | None:
    """The template's text for this record, or None when one of its paths reaches nothing."""
    out: list[str] = []
    for part in template:
        if isinstance(part, str):
            out.append(part)
            continue
        found = extract(root, part.path)
        value = found[0] if found else None
        if isinstance(value, bool):
            out.append("true" if value else "false")
        elif isinstance(value, (str, int, float)) and value != "":
            text = str(value)
            out.append(dns_name(text) if part.dns else text)
        elif part.optional and value is None:
            continue
        else:
            return None
    return "".join(out)
