"""API objects as Terraform nested blocks, and how two sets of blocks are compared.

An API logs a configuration as camelCase (or PascalCase) objects; Terraform stores the same
configuration as snake_case blocks, each nested block a list, with zero values for every
argument the configuration leaves out. Converting one to the other is the same work for
every service: keys to snake_case (a `keys:` map renames the ones Terraform spells
differently), shaped after the blocks the state holds.
"""

from __future__ import annotations

import re
from typing import Any

from rules.values import as_list, as_tags, canon_scalar

Keys = dict[str, str]

_WORD = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(key: str) -> str:
    """`transitionToIA` -> `transition_to_ia`, `ID` -> `id`, `KMSKeyId` -> `kms_key_id`."""
    return _WORD.sub("_", key).lower()


def _objects(value: Any) -> list[dict[str, Any]]:
    """The objects of a request value: one (even empty: WAF's `allow: {}`), a list, or items."""
    if isinstance(value, dict) and (not value or not set(value) <= {"items", "item"}):
        return [value]
    return [item for item in as_list(value) if isinstance(item, dict)]


def _shape(value: Any) -> dict[str, Any] | None:
    """The keys the state's blocks hold, merged over all of them (nested blocks' lists joined,
    so a map that only one rule's filter holds is known as a map)."""
    merged: dict[str, Any] = {}
    blocks = [b for b in as_list(value) if isinstance(b, dict)]
    for block in blocks:
        for key, held in block.items():
            have = merged.get(key)
            if isinstance(held, list) and isinstance(have, list):
                merged[key] = have + held
            elif key not in merged or (not have and held):
                merged[key] = held
    return merged if blocks else None


def _block(obj: dict[str, Any], shape: dict[str, Any] | None, keys: Keys, parent: str) -> Any:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = keys.get(f"{parent}.{key}") or keys.get(key) or snake_case(key)
        if shape is not None and name not in shape:
            continue  # an argument this state's schema does not have: nothing to compare
        held = shape.get(name) if shape is not None else None
        if isinstance(held, dict):
            out[name] = as_tags(value)  # a map (tags), whatever shape the API sent
        elif isinstance(value, dict) or (
            isinstance(value, list) and any(isinstance(v, dict) for v in value)
        ):
            inner = _shape(held)
            out[name] = [_block(item, inner, keys, key) for item in _objects(value)]
        else:
            out[name] = value
    return out


def to_blocks(value: Any, state: Any, keys: Keys) -> list[dict[str, Any]]:
    """The request's objects (one, a list, or EC2 items) as blocks shaped like the state's."""
    shape = _shape(state)
    return [_block(item, shape, keys, "") for item in _objects(value)]


def put_named(new: list[dict[str, Any]], old: Any) -> list[dict[str, Any]]:
    """The state's blocks with the request's put in by `name` (a parameter group's changes)."""
    names = {str(b.get("name")) for b in new}
    kept = [b for b in as_list(old) if isinstance(b, dict) and str(b.get("name")) not in names]
    return kept + new


def _canon(value: Any) -> Any:
    if isinstance(value, dict):
        # A block is there even when all it holds is empty (WAF's `allow {}`).
        return ("{", tuple(sorted((k, c) for k, v in value.items() if (c := _canon(v)) != ())))
    if isinstance(value, list):
        items = [c for c in (_canon(v) for v in value) if c != ()]
        if len(items) == 1:
            return items[0]  # a nested block is a list of one
        return ("[", tuple(sorted(items, key=repr))) if items else ()
    if value is None or value == "" or value is False or value == 0:
        return ()  # what Terraform stores for an argument the configuration leaves out
    return canon_scalar(value)


def canon_blocks(value: Any) -> Any:
    """A set of blocks: order, unset arguments and one-block lists do not matter."""
    return _canon(as_list(value))
