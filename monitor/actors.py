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


def text(value: Any) -> str | None:
    """A record's value as text: a string as it is, a number spelled out, anything else
    (a list, an object, a bool, null) None: records from the wild put anything anywhere."""
    if value.__class__ is str:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


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
    kind, arn, principal = get("type"), get("arn"), get("principalId")
    account, invoked_by, user = get("accountId"), get("invokedBy"), get("userName")
    # Records from the wild put anything anywhere; text and null cost one check each.
    if kind.__class__ is not str:
        kind = text(kind)
    if arn.__class__ is not str and arn is not None:
        arn = text(arn)
    if principal.__class__ is not str and principal is not None:
        principal = text(principal)
    if account.__class__ is not str and account is not None:
        account = text(account)
    if invoked_by.__class__ is not str and invoked_by is not None:
        invoked_by = text(invoked_by)
    if user.__class__ is not str and user is not None:
        user = text(user)
    kind = kind or "Unknown"
    if kind == "IAMUser":
        return Actor(kind, principal, arn, account, user or name_from_arn(arn), None, invoked_by)
    if kind == "Root":
        return Actor(kind, principal, arn, account, user or "root", None, invoked_by)
    if kind == "AWSService" or (kind == "AWSAccount" and invoked_by):
        return Actor(kind, principal, arn, account, invoked_by, None, invoked_by)
    if kind in ("AssumedRole", "FederatedUser"):
        ctx = uid.get("sessionContext")
        issuer = ctx.get("sessionIssuer") if isinstance(ctx, dict) else None
        role_arn = text(issuer.get("arn")) if isinstance(issuer, dict) else None
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
        user
        or name_from_arn(arn)
        or (principal.split(":", 1)[1] if principal and ":" in principal else principal)
    )
    return Actor(kind, principal, arn, account, name, None, invoked_by)
