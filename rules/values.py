"""Values as a request and a state spell them, in one canonical form: scalars ("true" =
true, "30" = 30, CIDR network forms), lists in EC2's `items` wrapping, tags as a map."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

Canon = Any


def canon_scalar(value: Any) -> Canon:
    """One spelling for equal scalars: booleans and numbers as text, CIDR blocks as networks."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        low = value.lower()
        if low in ("true", "false"):
            return low
        return canon_cidr(value) if "/" in value else value
    if isinstance(value, dict):
        return tuple(sorted((k, canon_scalar(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(canon_scalar(v) for v in value)
    return repr(value)


_CIDR = re.compile(r"^[0-9A-Fa-f:.]+/\d{1,3}$")


def canon_cidr(value: str) -> str:
    """A CIDR block in its network form (`10.0.0.5/8` -> `10.0.0.0/8`, IPv6 compressed)."""
    if not _CIDR.match(value):
        return value
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        return value


def canon_key(value: Any) -> str | None:
    """One part of a composite key, spelt the same way in a request and in a state."""
    if value is None or value == "" or isinstance(value, (dict, list)):
        return None
    text = canon_scalar(value)
    return canon_cidr(text) if "/" in text else text


def as_list(value: Any) -> list[Any]:
    """A list, a single value, or EC2's `{"items": [...]}` as a list."""
    if value is None:
        return []
    if isinstance(value, dict) and set(value) <= {"items", "item"}:
        inner = value.get("items", value.get("item"))
        return list(inner) if isinstance(inner, list) else ([] if inner is None else [inner])
    if isinstance(value, list):
        return value
    return [value]


def as_tags(value: Any) -> dict[str, Any]:
    """Tags in any of the APIs' shapes (a map, `[{key, value}]`, `[{Key, Value}]`, items)."""
    if value is None:
        return {}
    if isinstance(value, dict):
        if set(value) in ({"Key", "Value"}, {"key", "value"}, {"Key"}, {"key"}):
            value = [value]  # one tag, as S3 logs a single-element TagSet
        elif set(value) <= {"items", "item", "tag", "Tag"}:
            value = value.get("items", value.get("item", value.get("tag", value.get("Tag"))))
        else:
            return dict(value)
    out: dict[str, Any] = {}
    for item in as_list(value):
        if isinstance(item, dict):
            key = item.get("key", item.get("Key", item.get("tagKey", item.get("TagKey"))))
            val = item.get("value", item.get("Value", item.get("tagValue", item.get("TagValue"))))
            if key is not None:
                out[str(key)] = "" if val is None else val
    return out


def tag_keys(value: Any) -> list[str]:
    """The tag keys a removal names (plain keys or `{key}` items)."""
    keys: list[str] = []
    for item in as_list(value):
        if isinstance(item, dict):
            key = item.get("key", item.get("Key", item.get("tagKey")))
            if key is not None:
                keys.append(str(key))
        elif item is not None:
            keys.append(str(item))
    return keys


# What CloudTrail writes in place of a value it will not log (SSM SecureString values, Lambda
# environment variables, passwords): the call set the value, the log does not say to what.
HIDDEN_MARKERS = frozenset({"HIDDEN_DUE_TO_SECURITY_REASONS", "<sensitiveDataRemoved>", "***"})


def is_hidden(value: Any) -> bool:
    """The value, or any part of it, is a marker the log wrote instead of the real value."""
    if isinstance(value, str):
        return value in HIDDEN_MARKERS
    if isinstance(value, dict):
        return any(is_hidden(v) for v in value.values())
    if isinstance(value, list):
        return any(is_hidden(v) for v in value)
    return False
