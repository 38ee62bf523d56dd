"""A state source as a URL: what kind it is, where it points, and its write-only credentials."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

KINDS = ("file", "s3", "http", "tfc")
GLOB_CHARS = frozenset("*?[")
TFC_HOST = "app.terraform.io"


class SourceError(ValueError):
    """A state source URL or its options cannot work; the message says why."""


@dataclass(frozen=True)
class Credentials:
    """Secrets for a source: kept in memory, never returned by the API, never logged."""

    token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __bool__(self) -> bool:
        return bool(self.token or self.password)


@dataclass(frozen=True)
class SourceSpec:
    """One configured source. `url` never holds a secret (user info is moved to `creds`)."""

    url: str
    kind: str
    location: str  # a path or glob; bucket/key; an http(s) address; ORG/WORKSPACE
    creds: Credentials = Credentials()
    endpoint: str | None = None  # S3 endpoint or HCP Terraform / TFE address override
    poll_seconds: float | None = None

    @property
    def id(self) -> str:
        return "src-" + hashlib.blake2b(self.url.encode(), digest_size=6).hexdigest()

    @property
    def remote(self) -> bool:
        return self.kind != "file"

    def public(self) -> dict[str, Any]:
        """What the API may show: never a token or password, only whether one is set."""
        return {
            "id": self.id,
            "url": self.url,
            "kind": self.kind,
            "endpoint": self.endpoint,
            "poll_seconds": self.poll_seconds,
            "credentials": bool(self.creds),
        }


def has_glob(text: str) -> bool:
    return any(c in GLOB_CHARS for c in text)


def tfc_token(host: str) -> str | None:
    """Terraform CLI's own variable for a host's token (TF_TOKEN_app_terraform_io)."""
    name = "TF_TOKEN_" + host.replace(".", "_").replace("-", "__")
    return os.environ.get(name) or os.environ.get("TFC_TOKEN")


def _http(url: str, creds: Credentials) -> tuple[str, Credentials]:
    parts = urlsplit(url)
    if not parts.hostname:
        raise SourceError(f"{url}: an http(s) state source needs a host")
    if parts.username is not None or parts.password is not None:
        if creds:
            raise SourceError(f"{parts.hostname}: give credentials once (URL or options)")
        creds = Credentials(None, unquote(parts.username or ""), unquote(parts.password or ""))
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        url = urlunsplit((parts.scheme, host, parts.path, parts.query, ""))
    return url, creds


def parse_source(
    url: str,
    creds: Credentials | None = None,
    endpoint: str | None = None,
    poll_seconds: float | None = None,
) -> SourceSpec:
    """A source from `--state`, the config or the API; SourceError when it cannot work."""
    if not isinstance(url, str) or not url.strip():
        raise SourceError("a state source URL is required")
    url = url.strip()
    creds = creds or Credentials()
    if poll_seconds is not None and poll_seconds <= 0:
        raise SourceError(f"{url}: poll_seconds must be positive")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("", "file"):
        path = url[len("file://") :] if scheme == "file" else url
        return SourceSpec(url, "file", path, creds, None, poll_seconds)
    if scheme == "s3":
        bucket, _, key = url[len("s3://") :].partition("/")
        if not bucket or not key:
            raise SourceError(f"{url}: use s3://BUCKET/KEY or s3://BUCKET/PREFIX/**/*.tfstate")
        return SourceSpec(url, "s3", f"{bucket}/{key}", creds, endpoint, poll_seconds)
    if scheme in ("http", "https"):
        clean, creds = _http(url, creds)
        return SourceSpec(clean, "http", clean, creds, None, poll_seconds)
    if scheme == "tfc":
        org, _, workspace = url[len("tfc://") :].partition("/")
        if not org or not workspace or "/" in workspace:
            raise SourceError(f"{url}: use tfc://ORG/WORKSPACE, a glob (tfc://ORG/app-*) or tag:T")
        host = urlsplit(endpoint).hostname if endpoint else TFC_HOST
        if not creds.token:
            creds = Credentials(tfc_token(host or TFC_HOST))
        if not creds.token:
            raise SourceError(f"{url}: HCP Terraform needs a team token (token, TF_TOKEN_*)")
        return SourceSpec(url, "tfc", f"{org}/{workspace}", creds, endpoint, poll_seconds)
    raise SourceError(f"{url}: unknown scheme {scheme!r} (a path, s3://, http(s):// or tfc://)")
