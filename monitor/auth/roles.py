"""Roles and what each may do; routes declare the permission they need."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"  # read REST, WebSocket and SSE
    ANALYST = "analyst"  # viewer plus the drift lifecycle (and suppressions)
    INGEST = "ingest"  # the ingest endpoints only: Falco, falcosidekick, shippers
    ADMIN = "admin"  # everything: keys, configuration, the audit log


class Permission(StrEnum):
    PUBLIC = "public"  # no credentials: liveness and readiness probes only
    READ = "read"
    LIFECYCLE = "lifecycle"
    INGEST = "ingest"
    SESSION = "session"  # browser credentials (cookie, ticket) for a key that reads
    ADMIN = "admin"


GRANTS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ, Permission.SESSION}),
    Role.ANALYST: frozenset({Permission.READ, Permission.LIFECYCLE, Permission.SESSION}),
    Role.INGEST: frozenset({Permission.INGEST}),
    Role.ADMIN: frozenset(Permission),
}


def allows(role: str, permission: Permission) -> bool:
    """Whether `role` holds `permission` (an unknown role holds nothing)."""
    if permission is Permission.PUBLIC:
        return True
    try:
        return permission in GRANTS[Role(role)]
    except ValueError:
        return False
