"""How a request value becomes a Terraform attribute value, and how two values are compared.

Each transform turns (event value, current state value) into the attribute's new value, and
gives a canonical form so that equal configurations compare equal whatever their spelling
(policy JSON key order, URL-encoding, set order, "true" vs true).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import orjson

Canon = Any


class TransformError(ValueError):
    """An event value could not be read as the attribute's type."""


def canon_scalar(value: Any) -> Canon:
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


def dns_name(name: str) -> str:
    """A record name as Terraform's `fqdn` holds it: lower case, no trailing dot, and a
    leading wildcard label as `*` (Route 53 spells it `\\052`)."""
    name = name.lower().rstrip(".")
    return "*" + name[4:] if name.startswith("\\052") else name


def parse_json_text(value: Any) -> Any:
    """A policy document as sent (JSON text, URL-encoded JSON text, or already parsed)."""
    if isinstance(value, (dict, list)):
        return value
    if not isinstance(value, str):
        raise TransformError(f"expected a JSON document, got {type(value).__name__}")
    text = value.strip()
    if not text:
        return None  # no document: Terraform stores an absent policy as ""
    if text.startswith("%7B") or text.startswith("%7b") or text.startswith("%5B"):
        text = unquote(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise TransformError(f"not valid JSON: {exc}") from None


def canon_json(value: Any) -> Canon:
    """Order-insensitive form of a policy-like document ("a" equals ["a"], key order ignored)."""
    if isinstance(value, dict):
        return ("{", tuple(sorted((k, canon_json(v)) for k, v in value.items())))
    if isinstance(value, list):
        items = [canon_json(v) for v in value]
        if len(items) == 1:
            return items[0]
        return ("[", tuple(sorted(items, key=repr)))
    return canon_scalar(value)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, dict) and set(value) <= {"items", "item"}:
        inner = value.get("items", value.get("item"))
        return list(inner) if isinstance(inner, list) else ([] if inner is None else [inner])
    if isinstance(value, list):
        return value
    return [value]


def _canon_set(value: Any) -> Canon:
    return tuple(sorted((canon_scalar(v) for v in _as_list(value)), key=repr))


def _as_tags(value: Any) -> dict[str, Any]:
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
    for item in _as_list(value):
        if isinstance(item, dict):
            key = item.get("key", item.get("Key", item.get("tagKey", item.get("TagKey"))))
            val = item.get("value", item.get("Value", item.get("tagValue", item.get("TagValue"))))
            if key is not None:
                out[str(key)] = "" if val is None else val
    return out


def _tag_keys(value: Any) -> list[str]:
    keys: list[str] = []
    for item in _as_list(value):
        if isinstance(item, dict):
            key = item.get("key", item.get("Key", item.get("tagKey")))
            if key is not None:
                keys.append(str(key))
        elif item is not None:
            keys.append(str(item))
    return keys


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(value, (int, float)):
        return bool(value)
    raise TransformError(f"expected a boolean, got {value!r}")


def _to_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise TransformError(f"expected an integer, got {value!r}") from None


def _ip_rules(value: Any) -> list[tuple[Any, ...]]:
    """EC2 IpPermissions (CloudTrail's items shape or the SDK shape) as flat rule tuples."""
    if isinstance(value, dict) and ("groupId" in value or "ipPermissions" in value):
        # The whole request: older calls put one rule flat on it (cidrIp, ipProtocol,
        # fromPort, toPort) and leave ipPermissions empty.
        nested = value.get("ipPermissions")
        if _as_list(nested):
            value = nested
        elif value.get("cidrIp") or value.get("sourceSecurityGroupName"):
            flat = {
                "ipProtocol": value.get("ipProtocol", "-1"),
                "fromPort": value.get("fromPort"),
                "toPort": value.get("toPort"),
                "ipRanges": {"items": [{"cidrIp": value["cidrIp"]}]} if value.get("cidrIp") else {},
            }
            value = [flat]
        else:
            value = []
    rules: list[tuple[Any, ...]] = []
    for perm in _as_list(value):
        if not isinstance(perm, dict):
            continue
        proto = str(perm.get("ipProtocol", perm.get("IpProtocol", "-1")))
        lo = perm.get("fromPort", perm.get("FromPort", 0 if proto == "-1" else None))
        hi = perm.get("toPort", perm.get("ToPort", 0 if proto == "-1" else None))
        sources: list[tuple[str, str]] = []
        for key, kind, field in (
            ("ipRanges", "cidr", "cidrIp"),
            ("IpRanges", "cidr", "CidrIp"),
            ("ipv6Ranges", "ipv6", "cidrIpv6"),
            ("Ipv6Ranges", "ipv6", "CidrIpv6"),
            ("groups", "sg", "groupId"),
            ("UserIdGroupPairs", "sg", "GroupId"),
            ("prefixListIds", "pl", "prefixListId"),
            ("PrefixListIds", "pl", "PrefixListId"),
        ):
            for rng in _as_list(perm.get(key)):
                if isinstance(rng, dict) and rng.get(field):
                    sources.append((kind, str(rng[field])))
        for kind, src in sources:
            rules.append((proto, canon_scalar(lo), canon_scalar(hi), kind, src))
    return rules


def _tf_rules(value: Any) -> list[tuple[Any, ...]]:
    """Terraform's aws_security_group ingress/egress blocks as the same flat rule tuples."""
    rules: list[tuple[Any, ...]] = []
    for block in _as_list(value):
        if not isinstance(block, dict):
            continue
        if "ipProtocol" in block or "IpProtocol" in block:
            rules.extend(_ip_rules([block]))
            continue
        proto = str(block.get("protocol", "-1"))
        lo, hi = canon_scalar(block.get("from_port")), canon_scalar(block.get("to_port"))
        if isinstance(block.get("source"), str) and ":" in block["source"]:
            kind, src = block["source"].split(":", 1)
            rules.append((proto, lo, hi, kind, src))
            continue
        for kind, key in (
            ("cidr", "cidr_blocks"),
            ("ipv6", "ipv6_cidr_blocks"),
            ("sg", "security_groups"),
            ("pl", "prefix_list_ids"),
        ):
            for src in block.get(key) or []:
                rules.append((proto, lo, hi, kind, str(src)))
        if block.get("self"):
            rules.append((proto, lo, hi, "self", "self"))
    return rules


def _request_rules(value: Any) -> list[tuple[Any, ...]]:
    rules = _ip_rules(value)
    if not rules:
        # e.g. a revoke by securityGroupRuleIds: the change is real but not readable here.
        raise TransformError("no IP permissions in the request")
    return rules


def _rules_as_blocks(rules: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [
        {"protocol": p, "from_port": lo, "to_port": hi, "source": f"{kind}:{src}"}
        for p, lo, hi, kind, src in sorted(set(rules), key=repr)
    ]


def _canon_rules(value: Any) -> Canon:
    return tuple(sorted(set(_tf_rules(value)), key=repr))


def _blocks(value: Any) -> list[dict[str, Any]]:
    """Named blocks (`inline_policy`), without the empty one Terraform records for none."""
    return [b for b in _as_list(value) if isinstance(b, dict) and b.get("name")]


def _block_put(new: Any, old: Any) -> list[dict[str, Any]]:
    if not isinstance(new, dict) or not new.get("name"):
        raise TransformError("a named block needs its name")
    return [b for b in _blocks(old) if b["name"] != new["name"]] + [new]


def _block_remove(new: Any, old: Any) -> list[dict[str, Any]]:
    names = {str(n) for n in _as_list(new)}
    return [b for b in _blocks(old) if str(b["name"]) not in names]


def _document_or_text(value: Any) -> Any:
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "[", "%"):
        try:
            return parse_json_text(value)
        except TransformError:
            return value
    return value


def _canon_blocks(value: Any) -> Canon:
    """Named blocks as a set, policy documents in them compared as documents."""
    return tuple(
        sorted(
            (
                tuple(sorted((k, canon_json(_document_or_text(v))) for k, v in b.items()))
                for b in _blocks(value)
            ),
            key=repr,
        )
    )


# name -> (new value from (event value, old value), canonical form)
Transform = tuple[Callable[[Any, Any], Any], Callable[[Any], Canon]]

TRANSFORMS: dict[str, Transform] = {
    "value": (lambda new, old: new, canon_scalar),
    "string": (lambda new, old: str(new), canon_scalar),
    "bool": (lambda new, old: _to_bool(new), canon_scalar),
    "int": (lambda new, old: _to_int(new), canon_scalar),
    "json": (lambda new, old: parse_json_text(new), canon_json),
    "dns": (lambda new, old: dns_name(str(new)), canon_scalar),
    "items": (lambda new, old: _as_list(new), canon_scalar),
    "set": (lambda new, old: _as_list(new), _canon_set),
    "set_add": (
        lambda new, old: _as_list(old) + [v for v in _as_list(new) if v not in _as_list(old)],
        _canon_set,
    ),
    "set_remove": (
        lambda new, old: [v for v in _as_list(old) if v not in _as_list(new)],
        _canon_set,
    ),
    "tags": (lambda new, old: {**_as_tags(old), **_as_tags(new)}, canon_scalar),
    "tags_replace": (lambda new, old: _as_tags(new), canon_scalar),
    "tags_remove": (
        lambda new, old: {k: v for k, v in _as_tags(old).items() if k not in _tag_keys(new)},
        canon_scalar,
    ),
    "block_put": (_block_put, _canon_blocks),
    "block_remove": (_block_remove, _canon_blocks),
    "ip_permissions_add": (
        lambda new, old: _rules_as_blocks(_tf_rules(old) + _request_rules(new)),
        _canon_rules,
    ),
    "ip_permissions_remove": (
        lambda new, old: _rules_as_blocks(
            [r for r in _tf_rules(old) if r not in set(_request_rules(new))]
        ),
        _canon_rules,
    ),
}

# Transforms whose state value must be read through the same parser before comparing/showing.
STATE_PARSERS: dict[str, Callable[[Any], Any]] = {
    "json": lambda v: parse_json_text(v) if isinstance(v, str) else v,
    "ip_permissions_add": lambda v: _rules_as_blocks(_tf_rules(v)),
    "ip_permissions_remove": lambda v: _rules_as_blocks(_tf_rules(v)),
}
