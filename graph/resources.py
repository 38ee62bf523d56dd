"""Resource nodes and `depends_on` edges from the Terraform state.

Two sources of dependency, merged per (dependent, dependency) pair:
- the instance's recorded `dependencies` (config addresses, so `aws_subnet.private` names every
  instance of it; resolved within the same state file);
- attribute references: an attribute whose name says it points at another resource (`vpc_id`,
  `subnet_ids`, `vpc_security_group_ids`, `role_arn`, `role`, `bucket`, `kms_key_id`, ...),
  resolved through the state index by the value (id, ARN or name). These also link resources
  across state files (an EKS stack naming the subnets of a VPC stack).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from monitor.tfstate import ResourceInstance, StateIndex

DEPENDENCIES = "dependencies"
_SUFFIXES = ("_ids", "_arns", "_names", "_id", "_arn", "_name")
# Attribute names that are never references to another resource in this state.
_NOT_REFS = frozenset(
    {
        "id",
        "arn",
        "name",
        "owner_id",
        "unique_id",
        "account_id",
        "availability_zone_id",
        "hosted_zone_id",
        "image_id",
        "ami",
        "client_id",
        "request_id",
        "tag_name",
        "dns_name",
        "domain_name",
        "private_dns_name",
        "public_dns_name",
        "bucket_domain_name",
        "bucket_regional_domain_name",
        "display_name",
        "friendly_name",
        "user_name",
        "key_id",
        "version_id",
        "policy_id",
        "ipv6_association_id",
        "association_id",
        "outpost_arn",
    }
)
# Names that do not end in a reference suffix but are references; the value is the type stem.
_BARE = {
    "role": "role",
    "roles": "role",
    "bucket": "bucket",
    "subnets": "subnet",
    "security_groups": "security_group",
    "vpc_zone_identifier": "subnet",
    "iam_instance_profile": "iam_instance_profile",
    "launch_configuration": "launch_configuration",
    "load_balancers": "elb",
    "target_group_arns": "target_group",
    "allocation_id": "eip",
    "kms_key_id": "kms_key",
    "kms_key_arn": "kms_key",
    "kms_master_key_id": "kms_key",
    "execution_role_arn": "role",
    "task_role_arn": "role",
    "service_role": "role",
    "service_role_arn": "role",
    "instance_profile": "iam_instance_profile",
}
# Generic pointers (an aws_ec2_tag's resource_id, a permission's source_arn): any single match.
_GENERIC = frozenset(
    {"resource_id", "resource_arn", "target_id", "target_arn", "source_arn", "parent_id"}
)
_SKIP_BLOCKS = frozenset({"tags", "tags_all", "timeouts"})
_MAX_NESTING = 3


@dataclass(frozen=True, slots=True)
class Dependency:
    """`source` depends on `target` (resource node ids); `via` says why."""

    source: str
    target: str
    via: str


def resource_node_id(address_key: str) -> str:
    return "resource:" + address_key


def _stem(name: str) -> str | None:
    """The resource type stem an attribute name points at (`vpc_security_group_ids` ->
    `vpc_security_group`), or None when the name is not a reference."""
    if name in _NOT_REFS or name.startswith(("default_", "main_")):
        # default_security_group_id, main_route_table_id: things this resource created,
        # so they depend on it, not the other way round.
        return None
    bare = _BARE.get(name)
    if bare is not None:
        return bare
    for suffix in _SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


class _Names:
    """Attribute name -> stem, memoised (a state repeats a few hundred names at most)."""

    def __init__(self) -> None:
        self.cache: dict[str, str | None] = {}

    def stem(self, name: str) -> str | None:
        try:
            return self.cache[name]
        except KeyError:
            s = self.cache[name] = _stem(name)
            return s


def _matches(rtype: str, stem: str) -> int:
    """How well a resource type fits a stem: words of the stem's longest suffix that the type
    ends with (`aws_security_group` vs `vpc_security_group` -> 2), 0 when none does."""
    words = stem.split("_")
    for n in range(len(words)):
        tail = "_".join(words[n:])
        if rtype == tail or rtype.endswith("_" + tail):
            return len(words) - n
    return 0


def references(
    attrs: dict[str, Any], names: _Names, depth: int = 0
) -> Iterator[tuple[str, str, str]]:
    """(attribute name, stem, value) for every reference-like string in the attributes,
    including nested blocks (`vpc_config.0.subnet_ids`)."""
    for key, value in attrs.items():
        if isinstance(value, str):
            if value:
                stem = names.stem(key)
                if stem is not None:
                    yield key, stem, value
        elif isinstance(value, list):
            stem = names.stem(key)
            for item in value:
                if isinstance(item, str):
                    if item and stem is not None:
                        yield key, stem, item
                elif isinstance(item, dict) and depth < _MAX_NESTING:
                    yield from references(item, names, depth + 1)
        elif isinstance(value, dict) and depth < _MAX_NESTING and key not in _SKIP_BLOCKS:
            yield from references(value, names, depth + 1)


def _resolve(
    index: StateIndex, inst: ResourceInstance, name: str, stem: str, value: str
) -> list[ResourceInstance]:
    found = index.find_any(value)
    if not found and value.startswith("arn:"):
        tail = value.rsplit("/", 1)[-1] if "/" in value else value.rsplit(":", 1)[-1]
        found = index.find_any(tail)
    if not found:
        return []
    best = 0
    hits: list[ResourceInstance] = []
    for cand in found:
        if cand is inst:
            continue
        score = _matches(cand.type, stem)
        if score > best:
            best, hits = score, [cand]
        elif score == best and score:
            hits.append(cand)
    if hits:
        return hits
    if name in _GENERIC:
        others = [c for c in found if c is not inst]
        if len(others) == 1:
            return others
    return []


def _base_address(inst: ResourceInstance) -> str:
    base = f"{inst.type}.{inst.name}"
    return f"{inst.module}.{base}" if inst.module else base


def resource_nodes(index: StateIndex) -> Iterator[tuple[str, ResourceInstance]]:
    """(node id, instance) for every managed instance, in state order."""
    for key, inst in index.by_address.items():
        yield resource_node_id(key), inst


def dependencies(index: StateIndex) -> Iterator[Dependency]:
    """Every `depends_on` edge of the state; one per pair, `via` lists its reasons."""
    node_of: dict[int, str] = {}
    by_base: dict[tuple[str, str], list[str]] = {}
    by_exact: dict[tuple[str, str], str] = {}
    for key, inst in index.by_address.items():
        nid = resource_node_id(key)
        node_of[id(inst)] = nid
        by_base.setdefault((inst.state_path, _base_address(inst)), []).append(nid)
        by_exact[(inst.state_path, inst.address)] = nid
    names = _Names()
    for key, inst in index.by_address.items():
        source = resource_node_id(key)
        reasons: dict[str, list[str]] = {}
        for dep in inst.dependencies:
            if dep.startswith("data.") or ".data." in dep:
                continue
            exact = by_exact.get((inst.state_path, dep))
            targets = [exact] if exact else by_base.get((inst.state_path, dep), ())
            for target in targets:
                if target != source:
                    why = reasons.setdefault(target, [])
                    if DEPENDENCIES not in why:
                        why.append(DEPENDENCIES)
        for name, stem, value in references(inst.attributes, names):
            for cand in _resolve(index, inst, name, stem, value):
                ref = node_of.get(id(cand))
                if ref is None or ref == source:
                    continue
                why = reasons.setdefault(ref, [])
                if name not in why:
                    why.append(name)
        for target, why in reasons.items():
            yield Dependency(source, target, ",".join(why))
