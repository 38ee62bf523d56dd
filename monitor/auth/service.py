"""Access control as the daemon runs it: keys, their cache, the audit log, first-start key."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from monitor.auth.audit import AuditEntry, AuditLog
from monitor.auth.db import AuthDb
from monitor.auth.keys import ApiKey, KeyRing, KeyStore
from monitor.auth.roles import Role
from monitor.types import Clock

log = logging.getLogger("driftline.auth")
BOOTSTRAP_NAME = "bootstrap-admin"


class Access:
    """One access-control database with its key store, key cache and audit log."""

    def __init__(self, db: AuthDb, clock: Clock, enabled: bool = True) -> None:
        self.db = db
        self.enabled = enabled
        self.keys = KeyStore(db, clock)
        self.ring = KeyRing(self.keys)
        self.audit = AuditLog(db, clock)
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, data_dir: str | Path | None, clock: Clock, enabled: bool = True) -> Access:
        return cls(AuthDb.in_dir(data_dir), clock, enabled)

    def bootstrap(self, secret: str | None = None) -> tuple[str, ApiKey] | None:
        """With auth on and no usable key at all, an admin key: `secret` (a deployment's own)
        or a new one (shown once)."""
        if not self.enabled or self.keys.count_usable():
            return None
        secret, key = self.keys.create(
            BOOTSTRAP_NAME, Role.ADMIN.value, "driftline serve", secret=secret
        )
        self.audit.append_now(
            [
                AuditEntry(
                    "api_key.create",
                    key.id,
                    {"name": key.name, "role": key.role},
                    None,
                    "driftline serve (first start)",
                )
            ]
        )
        return secret, key

    def revoke(self, key_id: str) -> ApiKey:
        key = self.keys.revoke(key_id)
        self.ring.forget()
        return key

    async def start(self, flush_seconds: float = 30.0) -> None:
        self._flusher = asyncio.create_task(self._flush_forever(flush_seconds), name="key-use")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        with contextlib.suppress(Exception):
            self.ring.flush_used()
        self.db.close()

    async def _flush_forever(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await asyncio.to_thread(self.ring.flush_used)
            except Exception:  # last-used times are a convenience; keep serving
                log.exception("recording key use")
