"""How a request value becomes a Terraform attribute value, and how two values are compared.

Each transform turns (event value, current state value) into the attribute's new value, and
gives a canonical form so that equal configurations compare equal whatever their spelling
(policy JSON key order, URL-encoding, set order, "true" vs true).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import orjson

from rules.blocks import canon_blocks, put_named
from rules.values import Canon, as_list, as_tags, canon_scalar, tag_keys


class TransformError(ValueError):
    """An event value could not be read as the attribute's type."""


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


def _canon_set(value: Any) -> Canon:
    return tuple(sorted((canon_scalar(v) for v in as_list(value)), key=repr))


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
        if as_list(nested):
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
    for perm in as_list(value):
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
            for rng in as_list(perm.get(key)):
                if isinstance(rng, dict) and rng.get(field):
                    sources.append((kind, str(rng[field])))
        for kind, src in sources:
            rules.append((proto, canon_scalar(lo), canon_scalar(hi), kind, src))
    return rules


def _tf_rules(value: Any) -> list[tuple[Any, ...]]:
    """Terraform's aws_security_group ingress/egress blocks as the same flat rule tuples."""
    rules: list[tuple[Any, ...]] = []
    for block in as_list(value):
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
    return [b for b in as_list(value) if isinstance(b, dict) and b.get("name")]


def _block_put(new: Any, old: Any) -> list[dict[str, Any]]:
    if not isinstance(new, dict) or not new.get("name"):
        raise TransformError("a named block needs its name")
    return [b for b in _blocks(old) if b["name"] != new["name"]] + [new]


def _block_remove(new: Any, old: Any) -> list[dict[str, Any]]:
    names = {str(n) for n in as_list(new)}
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


def _arn_name(value: Any) -> Canon:
    """A name, or the name an ARN ends with (`...:task-definition/web:7` -> `web:7`)."""
    text = canon_scalar(value)
    if isinstance(text, str) and text.startswith("arn:") and "/" in text:
        return text.rsplit("/", 1)[1]
    return text


def _toggle_set(new: Any, old: Any) -> list[Any]:
    """The state's set with the types a `[{types, enabled}]` list turns on added and those it
    turns off removed (EKS control-plane logging)."""
    on: list[Any] = []
    off: set[Any] = set()
    for toggle in as_list(new):
        if not isinstance(toggle, dict) or "enabled" not in toggle:
            raise TransformError("expected {types, enabled} items")
        types = as_list(toggle.get("types"))
        if _to_bool(toggle["enabled"]):
            on.extend(types)
        else:
            off.update(types)
    kept = [t for t in as_list(old) if t not in off]
    return kept + [t for t in on if t not in kept]


# name -> (new value from (event value, old value), canonical form)
Transform = tuple[Callable[[Any, Any], Any], Callable[[Any], Canon]]

TRANSFORMS: dict[str, Transform] = {
    "value": (lambda new, old: new, canon_scalar),
    "string": (lambda new, old: str(new), canon_scalar),
    "bool": (lambda new, old: _to_bool(new), canon_scalar),
    "int": (lambda new, old: _to_int(new), canon_scalar),
    "json": (lambda new, old: parse_json_text(new), canon_json),
    "dns": (lambda new, old: dns_name(str(new)), canon_scalar),
    "items": (lambda new, old: as_list(new), canon_scalar),
    "set": (lambda new, old: as_list(new), _canon_set),
    "set_add": (
        lambda new, old: as_list(old) + [v for v in as_list(new) if v not in as_list(old)],
        _canon_set,
    ),
    "set_remove": (
        lambda new, old: [v for v in as_list(old) if v not in as_list(new)],
        _canon_set,
    ),
    "tags": (lambda new, old: {**as_tags(old), **as_tags(new)}, canon_scalar),
    "tags_replace": (lambda new, old: as_tags(new), canon_scalar),
    "tags_remove": (
        lambda new, old: {k: v for k, v in as_tags(old).items() if k not in tag_keys(new)},
        canon_scalar,
    ),
    "block_put": (_block_put, _canon_blocks),
    # API objects converted to Terraform blocks first (rules.blocks.to_blocks, with `keys:`).
    "blocks": (lambda new, old: as_list(new), canon_blocks),
    "blocks_put": (lambda new, old: put_named(as_list(new), old), canon_blocks),
    "name_or_arn": (lambda new, old: new, _arn_name),
    "toggle_set": (_toggle_set, _canon_set),
    # The call sets it in a form not compared (WAF rule statements): detection reports the
    # field with no new value, as for a value the log hides.
    "uncompared": (lambda new, old: None, canon_scalar),
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

# Transforms whose request value is converted to Terraform's blocks before `make`.
BLOCK_TRANSFORMS = frozenset({"blocks", "blocks_put"})

# Transforms whose state value must be read through the same parser before comparing/showing.
STATE_PARSERS: dict[str, Callable[[Any], Any]] = {
    "json": lambda v: parse_json_text(v) if isinstance(v, str) else v,
    "ip_permissions_add": lambda v: _rules_as_blocks(_tf_rules(v)),
    "ip_permissions_remove": lambda v: _rules_as_blocks(_tf_rules(v)),
}
