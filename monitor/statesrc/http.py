"""Terraform's HTTP backend (GitLab's managed state serves it): GET the address, with
basic auth or a bearer token. The change signal is the ETag or Last-Modified the server
sends (asked with If-None-Match / If-Modified-Since), else a hash of the body.
"""

from __future__ import annotations

import base64
import hashlib
import urllib.error
import urllib.request
from email.utils import parsedate_to_datetime

from monitor.statesrc.backend import MAX_STATE_BYTES, Entry, Unreachable
from monitor.statesrc.fetch import open_url
from monitor.statesrc.spec import Credentials

TIMEOUT = 30.0


def auth_header(creds: Credentials) -> dict[str, str]:
    if creds.token:
        return {"Authorization": f"Bearer {creds.token}"}
    if creds.password is not None or creds.username:
        pair = f"{creds.username or ''}:{creds.password or ''}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    return {}


def _modified(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


class HttpBackend:
    """One state at one address; a conditional GET per poll."""

    def __init__(self, url: str, creds: Credentials, timeout: float = TIMEOUT) -> None:
        self.url = url
        self.headers = auth_header(creds)
        self.timeout = timeout
        self._last: Entry | None = None
        self._validators: dict[str, str] = {}

    def listing(self) -> list[Entry]:
        request = urllib.request.Request(self.url, headers={**self.headers, **self._validators})
        try:
            with open_url(request, timeout=self.timeout) as resp:
                status = resp.status
                body = resp.read(MAX_STATE_BYTES)
                etag, modified = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
        except urllib.error.HTTPError as exc:
            if exc.code == 304 and self._last is not None:
                return [self._last]
            if exc.code == 404:
                self._forget()
                return []
            raise Unreachable(f"{self.url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unreachable(f"{self.url}: {reason}") from None
        if status == 204:  # the backend's answer for "no state yet"
            self._forget()
            return []
        self._validators = {}
        if etag:
            self._validators["If-None-Match"] = etag
        if modified:
            self._validators["If-Modified-Since"] = modified
        signal = etag or modified or hashlib.blake2b(body, digest_size=16).hexdigest()
        self._last = Entry(self.url, "default", signal, _modified(modified), body)
        return [self._last]

    def _forget(self) -> None:
        self._last = None
        self._validators = {}

    def fetch(self, entry: Entry) -> bytes:
        if entry.body is not None:
            return entry.body
        raise Unreachable(f"{self.url}: the listing kept no body")  # never: listing sets it
