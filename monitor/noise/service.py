"""Noise control at runtime: items kept in the store, the snapshot rebuilt on every change.

Each change is durable before it takes effect and takes effect for the next event: the
store keeps the item, then the detector's shared `Noise` gets a new snapshot.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from monitor.noise.match import MatchError
from monitor.noise.rules import CustomRule, DisabledRule, Noise, NoiseRules, Suppression
from monitor.store import Store
from monitor.types import Clock

SUPPRESSION, CUSTOM, DISABLED, PRINCIPAL = (
    "suppression",
    "custom_rule",
    "disabled_rule",
    "apply_principal",
)
_ID_PREFIX = {SUPPRESSION: "sup-", CUSTOM: "rule-", DISABLED: "off-"}
_FIELDS = {
    SUPPRESSION: frozenset({"match", "reason", "expires_at"}),
    CUSTOM: frozenset({"match", "severity", "category"}),
    DISABLED: frozenset({"match", "reason"}),
    PRINCIPAL: frozenset({"principal"}),
}
Item = Suppression | CustomRule | DisabledRule


class Conflict(ValueError):
    """A change that contradicts what is there (a duplicate, a principal set at start)."""


def _check_fields(kind: str, body: Mapping[str, Any]) -> None:
    unknown = sorted(set(body) - _FIELDS[kind])
    if unknown:
        raise MatchError(f"unknown field(s): {', '.join(unknown)}")


def _principal(body: Mapping[str, Any]) -> str:
    value = body.get("principal")
    if not isinstance(value, str) or not value.strip() or len(value) > 2048:
        raise MatchError("principal must be an ARN, a role or a user name")
    return value.strip()


class NoiseControl:
    """Suppressions, custom and disabled rules and apply principals, kept and applied."""

    def __init__(
        self, noise: Noise, store: Store, clock: Clock, config_principals: Iterable[str] = ()
    ) -> None:
        self.noise = noise
        self.store = store
        self.clock = clock
        self.config_principals = frozenset(config_principals)
        self.items: dict[str, dict[str, Any]] = {k: {} for k in _FIELDS}
        self._lock = asyncio.Lock()

    def load(self) -> None:
        """Read what the store keeps (at start) and apply it."""
        for kind, body in self.store.noise_items():
            if kind == PRINCIPAL:
                self.items[kind][body["id"]] = body
            elif kind in _ID_PREFIX:
                self.items[kind][body["id"]] = _parse(kind, body)
        self._apply()

    def _apply(self) -> NoiseRules:
        found = self.items
        return self.noise.update(
            suppressions=tuple(found[SUPPRESSION].values()),
            custom_rules=tuple(found[CUSTOM].values()),
            disabled_rules=tuple(found[DISABLED].values()),
            apply_principals=self.config_principals | frozenset(found[PRINCIPAL]),
        )

    def views(self, kind: str) -> list[dict[str, Any]]:
        now = self.clock()
        if kind == PRINCIPAL:
            out = [{"principal": p, "source": "config"} for p in sorted(self.config_principals)]
            out.extend({**b, "source": "api"} for b in self.items[kind].values())
            return out
        return [_view(item, now) for item in self.items[kind].values()]

    async def add(self, kind: str, body: Mapping[str, Any], actor: str) -> dict[str, Any]:
        """A new item from an API body; MatchError (invalid) or Conflict (a duplicate)."""
        _check_fields(kind, body)
        now = self.clock()
        async with self._lock:
            if kind == PRINCIPAL:
                name = _principal(body)
                if name in self.config_principals or name in self.items[kind]:
                    raise Conflict(f"{name} is already an apply principal")
                stored = {"id": name, "principal": name, "created_by": actor, "created_at": now}
                await asyncio.to_thread(self.store.put_noise, kind, name, stored)
                self.items[kind][name] = stored
                self._apply()
                return {**stored, "source": "api"}
            new_id = _ID_PREFIX[kind] + secrets.token_hex(6)
            item = _parse(kind, {**body, "id": new_id, "created_by": actor, "created_at": now})
            await self._keep(kind, item)
            return _view(item, now)

    async def patch(
        self, kind: str, item_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The item with the body's fields replaced; None if there is no such item."""
        _check_fields(kind, body)
        async with self._lock:
            old = self.items[kind].get(item_id)
            if old is None:
                return None
            if not isinstance(old, (Suppression, CustomRule)):
                raise MatchError(f"a {kind} is replaced by DELETE then POST, not changed")
            item = old.patched(body)
            await self._keep(kind, item)
            return _view(item, self.clock())

    async def remove(self, kind: str, item_id: str) -> dict[str, Any] | None:
        """Forget an item; None if there is none (Conflict: a principal set at start)."""
        async with self._lock:
            if kind == PRINCIPAL and item_id in self.config_principals:
                raise Conflict(f"{item_id} is set in the configuration; remove it there")
            item = self.items[kind].get(item_id)
            if item is None:
                return None
            await asyncio.to_thread(self.store.delete_noise, kind, item_id)
            del self.items[kind][item_id]
            self._apply()
            return {**item, "source": "api"} if kind == PRINCIPAL else _view(item, self.clock())

    async def _keep(self, kind: str, item: Item) -> None:
        await asyncio.to_thread(self.store.put_noise, kind, item.id, _stored(item))
        self.items[kind][item.id] = item
        self._apply()


def _parse(kind: str, body: Mapping[str, Any]) -> Item:
    if kind == SUPPRESSION:
        return Suppression.of(body)
    if kind == CUSTOM:
        return CustomRule.of(body)
    return DisabledRule.of(body)


def _stored(item: Item) -> dict[str, Any]:
    return item.stored() if isinstance(item, Suppression) else item.view()


def _view(item: Item, now: str) -> dict[str, Any]:
    return item.view(now) if isinstance(item, Suppression) else item.view()
