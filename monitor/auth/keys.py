"""API keys: `dl_` plus 32 random bytes, kept only as a SHA-256 hash.

SHA-256 and not a password hash (bcrypt, argon2): a key carries 256 bits of randomness, so
nothing can be guessed from its hash, and a slow hash would cost every request a
deliberate delay. The hash is the lookup key; the secret exists only in the creator's hands.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from monitor.auth.db import AuthDb
from monitor.auth.roles import Role
from monitor.types import Clock

PREFIX = "dl_"
SECRET_BYTES = 32
_SHAPE = re.compile(r"dl_[A-Za-z0-9_-]{43}")


def is_key_shaped(secret: str) -> bool:
    """Whether `secret` has the form of a Driftline key (as `create` makes them)."""
    return _SHAPE.fullmatch(secret) is not None


_COLS = "id, name, role, created_by, created_at, last_used_at, expires_at, revoked_at"


def key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def looks_like_key(secret: str) -> bool:
    return secret.startswith(PREFIX) and 40 <= len(secret) <= 100


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key's public fields (never its secret, never its hash)."""

    id: str
    name: str
    role: str
    created_by: str | None
    created_at: str
    last_used_at: str | None
    expires_at: str | None
    revoked_at: str | None

    def refusal(self, now: str) -> str | None:
        """Why this key cannot be used at `now` (ISO UTC), or None."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request: the key's id, name and role, and how it was presented."""

    key_id: str
    name: str
    role: str
    via: str  # bearer | basic | session | ticket | no-auth

    def as_dict(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "name": self.name, "role": self.role, "via": self.via}


NO_AUTH = Principal("no-auth", "no-auth", Role.ADMIN.value, "no-auth")


def expiry(now: str, days: float | None) -> str | None:
    if days is None:
        return None
    start = datetime.fromisoformat(now.replace("Z", "+00:00"))
    end = (start + timedelta(days=days)).astimezone(UTC)
    return end.strftime("%Y-%m-%dT%H:%M:%S.") + f"{end.microsecond // 1000:03d}Z"


class KeyOpError(ValueError):
    """A key operation that cannot be done (unknown role, unknown id, ...)."""


class KeyStore:
    """Create, list, find and revoke keys in the access-control database."""

    def __init__(self, db: AuthDb, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def create(
        self,
        name: str,
        role: str,
        created_by: str | None,
        expires_in_days: float | None = None,
        secret: str | None = None,
    ) -> tuple[str, ApiKey]:
        """A new key: its secret (to show once; `secret` if given, e.g. from a deployment's
        secret store) and its fields."""
        if not name or len(name) > 200:
            raise KeyOpError("a key needs a name of 1 to 200 characters")
        try:
            Role(role)
        except ValueError:
            raise KeyOpError(
                f"unknown role {role!r}: one of {', '.join(r.value for r in Role)}"
            ) from None
        if expires_in_days is not None and not 0 < expires_in_days <= 3650:
            raise KeyOpError("expires-in must be between 0 and 3650 days")
        if secret is not None and not is_key_shaped(secret):
            raise KeyOpError("a given key must be dl_ and 43 base64url characters")
        now = self.clock()
        secret = secret or PREFIX + secrets.token_urlsafe(SECRET_BYTES)
        key = ApiKey(
            "key_" + secrets.token_hex(8),
            name,
            role,
            created_by,
            now,
            None,
            expiry(now, expires_in_days),
            None,
        )
        with self.db.transaction() as db:
            db.execute(
                f"INSERT INTO api_keys (hash, {_COLS}) VALUES (?,?,?,?,?,?,?,?,?)",
                (key_hash(secret), *asdict(key).values()),
            )
        return secret, key

    def list(self) -> list[ApiKey]:
        with self.db.reading() as db:
            rows = db.execute(f"SELECT {_COLS} FROM api_keys ORDER BY created_at, id")
            return [ApiKey(*r) for r in rows.fetchall()]

    def get(self, key_id: str) -> ApiKey | None:
        with self.db.reading() as db:
            row = db.execute(f"SELECT {_COLS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return ApiKey(*row) if row else None

    def by_hash(self, digest: str) -> ApiKey | None:
        with self.db.reading() as db:
            row = db.execute(f"SELECT {_COLS} FROM api_keys WHERE hash = ?", (digest,)).fetchone()
        return ApiKey(*row) if row else None

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key (revoking twice keeps the first time); KeyOpError if unknown."""
        with self.db.transaction() as db:
            db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (self.clock(), key_id),
            )
        key = self.get(key_id)
        if key is None:
            raise KeyOpError(f"no key with id {key_id!r}")
        return key

    def count_usable(self) -> int:
        now = self.clock()
        return sum(1 for k in self.list() if k.refusal(now) is None)

    def touch(self, used: dict[str, str]) -> None:
        """Record last-used times (key id -> time), batched by the caller."""
        if used:
            with self.db.transaction() as db:
                db.executemany(
                    "UPDATE api_keys SET last_used_at = ? WHERE id = ?",
                    [(at, key_id) for key_id, at in used.items()],
                )


class KeyRing:
    """Authenticates secrets against the store with a short-lived cache.

    A key another process creates works at once (a miss reads the database); a key another
    process revokes stops working within `ttl` seconds; one revoked here, at once.
    """

    def __init__(self, store: KeyStore, ttl: float = 2.0) -> None:
        self.store = store
        self.ttl = ttl
        self._cache: dict[str, tuple[ApiKey | None, float]] = {}
        self._used: dict[str, str] = {}
        self._lock = threading.Lock()

    def authenticate(self, secret: str) -> tuple[ApiKey | None, str]:
        """The key for `secret` and "" if usable, else (key or None, the reason)."""
        if not looks_like_key(secret):
            return None, "not a Driftline key"
        digest = key_hash(secret)
        now_mono = time.monotonic()
        hit = self._cache.get(digest)
        if hit is None or now_mono - hit[1] > self.ttl:
            key = self.store.by_hash(digest)
            if len(self._cache) > 10_000:
                self._cache.clear()
            if key is not None:
                self._cache[digest] = (key, now_mono)
        else:
            key = hit[0]
        if key is None:
            return None, "unknown key"
        now = self.store.clock()
        refusal = key.refusal(now)
        if refusal:
            return key, refusal
        with self._lock:
            self._used[key.id] = now
        return key, ""

    def forget(self) -> None:
        """Drop the cache (after a revocation in this process)."""
        self._cache.clear()

    def flush_used(self) -> int:
        """Write the last-used times gathered since the previous flush."""
        with self._lock:
            used, self._used = self._used, {}
        self.store.touch(used)
        return len(used)
