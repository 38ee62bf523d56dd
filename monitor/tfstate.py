"""Terraform state (format version 4): loading, validation, redaction and the lookup index."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from monitor.redact import is_secret_name, redact
from rules.values import canon_key

SUPPORTED_VERSION = 4
_TF_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)")
PROVIDER_NAMES = {
    "aws": "aws",
    "google": "gcp",
    "google-beta": "gcp",
    "azurerm": "azure",
    "kubernetes": "kubernetes",
}


class StateError(ValueError):
    """A state file could not be used; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class ResourceInstance:
    """One instance of a resource in a state (one per count/for_each key)."""

    address: str
    mode: str
    type: str
    name: str
    module: str | None
    index_key: str | int | None
    provider: str
    provider_name: str
    attributes: dict[str, Any]
    sensitive: frozenset[str]
    dependencies: tuple[str, ...]
    state_path: str

    @property
    def resource_id(self) -> str:
        v = self.attributes.get("id")
        return str(v) if v not in (None, "") else self.address

    def value(self, field: str) -> Any:
        """An attribute, or a nested value by dotted path (`versioning.0.enabled`)."""
        if "." not in field:
            return self.attributes.get(field)
        node: Any = self.attributes
        for part in field.split("."):
            if isinstance(node, dict):
                node = node.get(part)
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
        return node

    def is_sensitive(self, field: str) -> bool:
        top = field.split(".", 1)[0]
        return top in self.sensitive or any(is_secret_name(p) for p in field.split("."))

    def public_attributes(self) -> dict[str, Any]:
        public: dict[str, Any] = redact(self.attributes, self.sensitive)
        return public

    def as_dict(self, with_attributes: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "address": self.address,
            "type": self.type,
            "name": self.name,
            "module": self.module,
            "index_key": self.index_key,
            "provider": self.provider,
            "mode": self.mode,
            "id": self.attributes.get("id"),
            "dependencies": list(self.dependencies),
            "state_path": self.state_path,
        }
        if with_attributes:
            out["attributes"] = self.public_attributes()
        return out


@dataclass(frozen=True, slots=True)
class StateLabel:
    """Which state declared a resource: its source URL, workspace, lineage and location."""

    source: str
    workspace: str
    lineage: str
    path: str

    def as_dict(self) -> dict[str, str]:
        return {
            "source": self.source,
            "workspace": self.workspace,
            "lineage": self.lineage,
            "path": self.path,
        }


@dataclass(frozen=True, slots=True)
class TfState:
    path: str
    version: int
    terraform_version: str
    serial: int
    lineage: str
    managed: tuple[ResourceInstance, ...]
    data: tuple[ResourceInstance, ...]
    last_modified: str
    source: str = ""
    workspace: str = "default"

    @property
    def label(self) -> StateLabel:
        return StateLabel(self.source or self.path, self.workspace, self.lineage, self.path)

    def summary(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "source": self.source or self.path,
            "workspace": self.workspace,
            "version": self.version,
            "terraform_version": self.terraform_version,
            "serial": self.serial,
            "lineage": self.lineage,
            "resource_count": len(self.managed),
            "data_source_count": len(self.data),
            "last_modified": self.last_modified,
        }


def _address(module: str | None, mode: str, rtype: str, name: str, key: Any) -> str:
    base = f"{rtype}.{name}" if mode == "managed" else f"data.{rtype}.{name}"
    if module:
        base = f"{module}.{base}"
    if key is None:
        return base
    if isinstance(key, int):
        return f"{base}[{key}]"
    return f'{base}["{key}"]'


def provider_name(provider: str) -> str:
    """`provider["registry.terraform.io/hashicorp/aws"]` or `provider.aws` -> `aws`."""
    _, sep, rest = provider.partition('provider["')
    if sep:
        raw = rest.split('"', 1)[0].rsplit("/", 1)[-1]
    else:
        _, sep, rest = provider.partition("provider.")
        raw = rest.split(".", 1)[0] if sep else provider
    return PROVIDER_NAMES.get(raw, raw)


def _sensitive_names(raw: Any) -> frozenset[str]:
    """Top-level attribute names from `sensitive_attributes` (either path format)."""
    names: set[str] = set()
    for entry in raw or []:
        steps = entry if isinstance(entry, list) else [entry]
        for step in steps:
            if isinstance(step, dict) and step.get("type") == "get_attr" and step.get("value"):
                names.add(str(step["value"]))
                break
    return frozenset(names)


def _check_versions(doc: dict[str, Any], path: str) -> int:
    """The state format version, once it and the Terraform version are known to be usable."""
    version = doc.get("version")
    if version != SUPPORTED_VERSION:
        if isinstance(version, int) and version < SUPPORTED_VERSION:
            raise StateError(
                f"{path}: state format version {version} is not supported; only version 4 "
                "(Terraform 0.12 and later) is. Run `terraform state pull` with a current "
                "Terraform to upgrade it."
            )
        raise StateError(f"{path}: unknown state format version {version!r} (expected 4)")
    tf_version = doc.get("terraform_version")
    m = _TF_VERSION.match(tf_version) if isinstance(tf_version, str) else None
    if not m:
        raise StateError(f"{path}: terraform_version {tf_version!r} is not a version number")
    if (int(m.group(1)), int(m.group(2))) < (0, 12):
        raise StateError(
            f"{path}: terraform_version {tf_version} cannot write state format 4 "
            "(needs 0.12 or later); the file is inconsistent"
        )
    return version


def _instances(res: Any, where: str, path: str) -> Iterator[ResourceInstance]:
    """The instances of one `resources[]` entry."""
    if not isinstance(res, dict):
        raise StateError(f"{where}: expected an object")
    mode, rtype, name = res.get("mode"), res.get("type"), res.get("name")
    if mode not in ("managed", "data") or not isinstance(rtype, str) or not isinstance(name, str):
        raise StateError(f"{where}: needs mode (managed|data), type and name")
    module = res.get("module")
    if module is not None and not isinstance(module, str):
        raise StateError(f"{where}: 'module' must be a string")
    provider = str(res.get("provider", ""))
    pname = provider_name(provider) if provider else rtype.split("_", 1)[0]
    instances = res.get("instances", [])
    if not isinstance(instances, list):
        raise StateError(f"{where}: 'instances' must be a list")
    for k, inst in enumerate(instances):
        if not isinstance(inst, dict):
            raise StateError(f"{where}.instances[{k}]: expected an object")
        attrs = inst.get("attributes")
        if attrs is None and "attributes_flat" in inst:
            attrs = dict(inst["attributes_flat"])
        if not isinstance(attrs, dict):
            raise StateError(f"{where}.instances[{k}]: 'attributes' must be an object")
        deps = inst.get("dependencies") or inst.get("depends_on") or res.get("depends_on") or []
        key = inst.get("index_key")
        yield ResourceInstance(
            address=_address(module, mode, rtype, name, key),
            mode=mode,
            type=rtype,
            name=name,
            module=module,
            index_key=key,
            provider=provider,
            provider_name=pname,
            attributes=attrs,
            sensitive=_sensitive_names(inst.get("sensitive_attributes")),
            dependencies=tuple(str(d) for d in deps if isinstance(d, str)),
            state_path=path,
        )


def parse_state(
    doc: Any, path: str, mtime: float | None = None, source: str = "", workspace: str = "default"
) -> TfState:
    """Validate a decoded state document and build its instances."""
    if not isinstance(doc, dict):
        raise StateError(f"{path}: not a Terraform state (expected a JSON object)")
    version = _check_versions(doc, path)
    resources = doc.get("resources", [])
    if not isinstance(resources, list):
        raise StateError(f"{path}: 'resources' must be a list")
    serial = doc.get("serial", 0)
    if not isinstance(serial, int):
        raise StateError(f"{path}: 'serial' must be an integer")
    managed: list[ResourceInstance] = []
    data: list[ResourceInstance] = []
    for n, res in enumerate(resources):
        for ri in _instances(res, f"{path}: resources[{n}]", path):
            (managed if ri.mode == "managed" else data).append(ri)
    modified = datetime.fromtimestamp(mtime or 0, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return TfState(
        path=path,
        version=version,
        terraform_version=str(doc.get("terraform_version")),
        serial=serial,
        lineage=str(doc.get("lineage", "")),
        managed=tuple(managed),
        data=tuple(data),
        last_modified=modified,
        source=source,
        workspace=workspace,
    )


def parse_state_bytes(
    raw: bytes, path: str, mtime: float | None = None, source: str = "", workspace: str = "default"
) -> TfState:
    """A state from the bytes of a file or a remote backend's answer."""
    if not raw.strip():
        raise StateError(f"{path}: state is empty")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise StateError(f"{path}: not valid JSON (truncated or corrupt?): {exc}") from None
    return parse_state(doc, path, mtime, source, workspace)


def load_state_file(path: str | Path) -> TfState:
    p = Path(path)
    try:
        raw = p.read_bytes()
        mtime = p.stat().st_mtime
    except OSError as exc:
        raise StateError(f"{p}: cannot read: {exc.strerror or exc}") from None
    return parse_state_bytes(raw, str(p), mtime)


def _match_keys(
    attrs: Mapping[str, Any], names: tuple[str, ...]
) -> Iterator[tuple[str | None, ...]]:
    """Every composite key an instance answers to: one per combination of list items."""
    parts = []
    for name in names:
        value = attrs.get(name)
        if isinstance(value, list) and value:
            parts.append([canon_key(v) for v in value])
        else:
            parts.append([canon_key(value)])
    return itertools.product(*parts)


class StateIndex:
    """O(1) lookup of managed instances by the identifiers cloud events carry."""

    DEFAULT_KEYS = ("name",)

    def __init__(
        self, states: Iterable[TfState], identifiers: Mapping[str, tuple[str, ...]] | None = None
    ) -> None:
        self.states = list(states)
        self.identifiers = dict(identifiers or {})
        self.by_key: dict[tuple[str, str], ResourceInstance] = {}
        self.by_value: dict[str, list[ResourceInstance]] = {}
        self.by_address: dict[str, ResourceInstance] = {}
        self.by_type: dict[str, list[ResourceInstance]] = {}
        self.resources: list[ResourceInstance] = []
        # (type, attribute names) -> canonical values -> instance, built on first use.
        self._composite: dict[
            tuple[str, tuple[str, ...]], dict[tuple[str | None, ...], ResourceInstance]
        ] = {}
        self.labels: dict[str, StateLabel] = {s.path: s.label for s in self.states}
        # (type, id) -> every instance declaring it, only for resources in several states.
        self.shared: dict[tuple[str, str], list[ResourceInstance]] = {}
        for state in self.states:
            for inst in state.managed:
                self._add(inst)

    def _add(self, inst: ResourceInstance) -> None:
        address = inst.address
        if address in self.by_address and len(self.states) > 1:
            address = f"{inst.state_path}:{address}"
        self.by_address[address] = inst
        self.resources.append(inst)
        self.by_type.setdefault(inst.type, []).append(inst)
        identity = (inst.type, inst.resource_id)
        first = self.by_key.get(identity)
        if first is not None and first.state_path != inst.state_path:
            self.shared.setdefault(identity, [first]).append(inst)
        attrs = inst.attributes
        keys = ("id", "arn", *self.identifiers.get(inst.type, self.DEFAULT_KEYS))
        for key in keys:
            value = attrs.get(key)
            if isinstance(value, (str, int)) and not isinstance(value, bool) and value != "":
                sval = str(value)
                self.by_key.setdefault((inst.type, sval), inst)
                bucket = self.by_value.setdefault(sval, [])
                if inst not in bucket:
                    bucket.append(inst)

    def find(self, rtype: str, value: str) -> ResourceInstance | None:
        """The instance of `rtype` known by `value`; ARNs also match by their last segment."""
        hit = self.by_key.get((rtype, value))
        if hit is None and value.startswith("arn:"):
            tail = value.rsplit("/", 1)[-1] if "/" in value else value.rsplit(":", 1)[-1]
            hit = self.by_key.get((rtype, tail))
        return hit

    def find_match(
        self, rtype: str, names: tuple[str, ...], values: tuple[str, ...]
    ) -> ResourceInstance | None:
        """The instance of `rtype` whose attributes `names` hold `values` (compared canonically:
        "true" = true, "22" = 22, CIDR forms; a list attribute holds each of its items)."""
        table = self._composite.get((rtype, names))
        if table is None:
            table = {}
            for inst in self.by_type.get(rtype, ()):
                for key in _match_keys(inst.attributes, names):
                    table.setdefault(key, inst)
            # Built once per (type, names) over an immutable index; a concurrent first use
            # builds the same table, so the race is harmless.
            self._composite[(rtype, names)] = table
        return table.get(tuple(canon_key(v) for v in values))

    def declared_by(self, inst: ResourceInstance) -> tuple[StateLabel, ...]:
        """The states declaring `inst` (several when two states hold the same resource)."""
        owners = self.shared.get((inst.type, inst.resource_id)) or (inst,)
        seen: dict[str, StateLabel] = {}
        for owner in owners:
            label = self.labels.get(owner.state_path)
            if label is not None:
                seen.setdefault(owner.state_path, label)
        return tuple(seen.values())

    def find_any(self, value: str) -> list[ResourceInstance]:
        return self.by_value.get(value, [])

    def __len__(self) -> int:
        return len(self.resources)
