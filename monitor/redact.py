"""The one secret redaction: values under secret-like names, wherever they sit.

A name is secret-like when it says password, secret, private_key, token, ... (snake_case,
camelCase or UPPER_CASE alike). The value under such a name is replaced by REDACTED: in a
mapping (attributes, tags, labels, environment variables) and in the tag lists cloud APIs
use (`[{"key": "db_password", "value": ...}]`, `Key`/`Value`, `name`/`value`). Terraform's
`sensitive_attributes` name more. The state's resources, the audit decoders' request and
response bodies, drifts and alerts all pass here.
"""

from __future__ import annotations

import functools
import re
from typing import Any

REDACTED = "(sensitive)"
_SECRET = re.compile(
    r"(^|_)(password|passwd|secret|private_?key|token|credentials?|api_?key|auth_?key"
    r"|key_?material|ses_smtp_password(_v4)?|connection_?string|sas|sas_?token|shared_?key"
    r"|access_?key|access_key_secret)($|_)"
)
# Names that only point at or describe a secret (its id, where it lives, when it expires).
_NOT_SECRET_SUFFIX = (
    "_arn",
    "_arns",
    "_id",
    "_ids",
    "_name",
    "_names",
    "_enabled",
    "_type",
    "_uri",
    "_url",
    "_version",
    "_expiry",
    "_expiration",
    "_ttl",
    "_lifetime",
    "_policy",
    # Password-policy settings (a length, an age, a reuse count) are not secrets either.
    "_length",
    "_age",
    "_prevention",
)
# Settings named after a secret without holding one (automount_service_account_token).
_NOT_SECRET_PREFIX = ("automount_", "enable_", "disable_", "allow_", "require_", "use_")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[-.\s]+")
# The names a tag list entry gives its name and its value.
_ENTRY_NAMES = ("key", "Key", "name", "Name")
_ENTRY_VALUES = ("value", "Value")


# Names repeat (policy keys, tag keys): remembered, a drift's values cost a dict walk.
@functools.lru_cache(maxsize=8192)
def is_secret_name(name: str) -> bool:
    """A well-known secret name (password, secret, private_key, token, ...)."""
    low = _SEPARATORS.sub("_", _CAMEL.sub("_", name)).lower()
    return (
        bool(_SECRET.search(low))
        and not low.endswith(_NOT_SECRET_SUFFIX)
        and not low.startswith(_NOT_SECRET_PREFIX)
    )


def _hidden(value: Any) -> bool:
    # A flag is never the secret (`automountServiceAccountToken: false`); empty is nothing.
    return not isinstance(value, bool) and value not in (None, "", [], {})


def _tag_entry(value: dict[str, Any]) -> dict[str, Any] | None:
    """A `{key: <secret name>, value: ...}` entry with its value hidden, else None."""
    name = next((value[k] for k in _ENTRY_NAMES if k in value), None)
    if not isinstance(name, str) or not is_secret_name(name):
        return None
    return {
        k: REDACTED if k in _ENTRY_VALUES and _hidden(v) else redact(v) for k, v in value.items()
    }


def redact(value: Any, sensitive: frozenset[str] = frozenset()) -> Any:
    """A copy of `value` with what secret-like or `sensitive` names hold replaced."""
    if isinstance(value, dict):
        entry = _tag_entry(value)
        if entry is not None:
            return entry
        return {
            k: (
                REDACTED
                if isinstance(k, str) and (k in sensitive or is_secret_name(k)) and _hidden(v)
                else redact(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value
