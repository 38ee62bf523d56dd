"""Access control: API keys, roles, and the hash-chained audit log (no web code here)."""

from monitor.auth.audit import AuditEntry, AuditFilter, AuditLog, Verification
from monitor.auth.db import AuthDb
from monitor.auth.keys import ApiKey, KeyRing, KeyStore, Principal
from monitor.auth.roles import Permission, Role, allows

__all__ = [
    "ApiKey",
    "AuditEntry",
    "AuditFilter",
    "AuditLog",
    "AuthDb",
    "KeyRing",
    "KeyStore",
    "Permission",
    "Principal",
    "Role",
    "Verification",
    "allows",
]
