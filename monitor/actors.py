"""Who made a change: CloudTrail userIdentity to an Actor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change. `user_name` is the person-like name (session name for roles)."""

    type: str
    principal_id: str | None = None
    arn: str | None = None
    account_id: str | None = None
    user_name: str | None = None
    role: str | None = None
    invoked_by: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "principal_id": self.principal_id,
            "arn": self.arn,
            "account_id": self.account_id,
            "user_name": self.user_name,
        }
        if self.role is not None:
            out["role"] = self.role
        if self.invoked_by is not None:
            out["invoked_by"] = self.invoked_by
        return out

    @property
    def key(self) -> str:
        """A stable identity for grouping: the issuer role for sessions, else the ARN."""
        return self.arn or self.principal_id or self.user_name or self.type


UNKNOWN_ACTOR = Actor(type="Unknown")


def name_from_arn(arn: Any) -> str | None:
    """The user name an IAM user or root ARN carries (`arn:aws:iam::1:user/path/bob` -> bob):
    what is left of an actor known only by its ARN, as in a Falco alert's `ct.user.arn`."""
    if not isinstance(arn, str):
        return None
    if ":user/" in arn:
        return arn.rsplit("/", 1)[-1] or None
    if arn.endswith(":root"):
        return "root"
    return None


def actor_from_identity(uid: Any) -> Actor:
    """IAMUser, AssumedRole (issuer role + session name), federated and Identity Center
    users, AWSService, Root."""
    if not isinstance(uid, dict):
        return Actor(type="Unknown")
    get = uid.get
    kind = get("type") or "Unknown"
    arn = get("arn")
    principal = get("principalId")
    account = get("accountId")
    invoked_by = get("invokedBy")
    if kind == "IAMUser":
        name = get("userName") or name_from_arn(arn)
        return Actor(kind, principal, arn, account, name, None, invoked_by)
    if kind == "Root":
        return Actor(kind, principal, arn, account, get("userName") or "root", None, invoked_by)
    if kind == "AWSService" or (kind == "AWSAccount" and invoked_by):
        return Actor(kind, principal, arn, account, invoked_by, None, invoked_by)
    if kind in ("AssumedRole", "FederatedUser"):
        ctx = get("sessionContext")
        issuer = ctx.get("sessionIssuer") if isinstance(ctx, dict) else None
        role_arn = issuer.get("arn") if isinstance(issuer, dict) else None
        session = None
        if arn and "/" in arn:
            session = arn.rsplit("/", 1)[-1]
        elif principal and ":" in principal:
            session = principal.split(":", 1)[1]
        if role_arn and "/AWSReservedSSO_" in role_arn:
            kind = "IdentityCenterUser"
        return Actor(kind, principal, arn, account, session, role_arn, invoked_by)
    # SAMLUser, WebIdentityUser, IdentityCenterUser, Unknown ...
    name = (
        get("userName")
        or name_from_arn(arn)
        or (
            principal.split(":", 1)[1]
            if isinstance(principal, str) and ":" in principal
            else principal
        )
    )
    return Actor(kind, principal, arn, account, name, None, invoked_by)
