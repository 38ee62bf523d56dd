"""A JSON diff (RFC 6902-style operations) between a baseline and a current value."""

from __future__ import annotations

from typing import Any


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def json_diff(old: Any, new: Any, path: str = "") -> list[dict[str, Any]]:
    """Operations that turn `old` into `new`: add, remove, replace, each with its path."""
    if isinstance(old, dict) and isinstance(new, dict):
        ops: list[dict[str, Any]] = []
        for key in sorted(old.keys() | new.keys()):
            sub = f"{path}/{_escape(str(key))}"
            if key not in new:
                ops.append({"op": "remove", "path": sub, "old": old[key]})
            elif key not in old:
                ops.append({"op": "add", "path": sub, "value": new[key]})
            else:
                ops.extend(json_diff(old[key], new[key], sub))
        return ops
    if isinstance(old, list) and isinstance(new, list):
        ops = []
        common = min(len(old), len(new))
        for i in range(common):
            ops.extend(json_diff(old[i], new[i], f"{path}/{i}"))
        for i in range(common, len(new)):
            ops.append({"op": "add", "path": f"{path}/{i}", "value": new[i]})
        for i in range(len(old) - 1, common - 1, -1):
            ops.append({"op": "remove", "path": f"{path}/{i}", "old": old[i]})
        return ops
    if old == new and type(old) is type(new):
        return []
    return [{"op": "replace", "path": path or "/", "old": old, "value": new}]
