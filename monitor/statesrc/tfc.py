"""HCP Terraform and Terraform Enterprise: workspaces by name, glob or tag, through the
documented API with a team token. A workspace's `current-state-version` relationship id is
the change signal (one list page covers 100 workspaces); the state version it points to
is downloaded from its `hosted-state-download-url`.
"""

from __future__ import annotations

import fnmatch
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Any

import orjson

from monitor.statesrc.backend import MAX_STATE_BYTES, Entry, Unreachable
from monitor.statesrc.fetch import open_url
from monitor.statesrc.spec import TFC_HOST, has_glob

TIMEOUT = 30.0
PAGE_SIZE = 100


class NotFound(Exception):
    """The API answered 404 (an unknown or removed workspace, or no access to it)."""


class TfcBackend:
    """The workspaces `ORG/NAME`, `ORG/GLOB` or `ORG/tag:TAG` names."""

    def __init__(self, location: str, token: str, address: str | None = None) -> None:
        self.org, _, self.workspace = location.partition("/")
        root = (address or f"https://{TFC_HOST}").rstrip("/")
        self.api = root + "/api/v2"
        self.host = urllib.parse.urlsplit(root).netloc
        self._token = token

    def _get(self, url: str, raw: bool = False) -> Any:
        headers = {"Accept": "application/vnd.api+json"}
        # The download URL may point at another host (signed storage): the token stays home.
        if urllib.parse.urlsplit(url).netloc == self.host:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            with open_url(urllib.request.Request(url, headers=headers), timeout=TIMEOUT) as resp:
                body = resp.read(MAX_STATE_BYTES)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise NotFound(url) from None
            raise Unreachable(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise Unreachable(f"{url}: {getattr(exc, 'reason', exc)}") from None
        if raw:
            return body
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise Unreachable(f"{url}: the API answered something that is not JSON") from None

    def _workspaces(self) -> list[dict[str, Any]]:
        org = urllib.parse.quote(self.org, safe="")
        if not has_glob(self.workspace) and not self.workspace.startswith("tag:"):
            name = urllib.parse.quote(self.workspace, safe="")
            try:
                return [self._get(f"{self.api}/organizations/{org}/workspaces/{name}")["data"]]
            except NotFound:
                return []
        query: dict[str, str | int] = {"page[size]": PAGE_SIZE}
        if self.workspace.startswith("tag:"):
            query["search[tags]"] = self.workspace[len("tag:") :]
        out: list[dict[str, Any]] = []
        page: int | None = 1
        while page:
            query["page[number]"] = page
            url = f"{self.api}/organizations/{org}/workspaces?{urllib.parse.urlencode(query)}"
            try:
                doc = self._get(url)
            except NotFound:
                raise Unreachable(f"{url}: organization {self.org!r} not found") from None
            out.extend(doc.get("data") or [])
            page = ((doc.get("meta") or {}).get("pagination") or {}).get("next-page")
        if has_glob(self.workspace):
            out = [
                w
                for w in out
                if fnmatch.fnmatchcase(str(w["attributes"].get("name")), self.workspace)
            ]
        return out

    def listing(self) -> list[Entry]:
        out: list[Entry] = []
        for ws in self._workspaces():
            name = str(ws["attributes"]["name"])
            rel = (ws.get("relationships") or {}).get("current-state-version") or {}
            version = rel.get("data")
            if not version:
                continue  # a workspace that has never stored state holds nothing to watch
            updated = ws["attributes"].get("updated-at")
            out.append(Entry(f"tfc://{self.org}/{name}", name, str(version["id"]), _epoch(updated)))
        return out

    def fetch(self, entry: Entry) -> bytes:
        try:
            version = self._get(f"{self.api}/state-versions/{entry.signal}")["data"]
            url = version["attributes"]["hosted-state-download-url"]
            body: bytes = self._get(url, raw=True)
        except NotFound:
            raise Unreachable(f"{entry.key}: state version {entry.signal} is gone") from None
        except (KeyError, TypeError):
            raise Unreachable(f"{entry.key}: state version without a download URL") from None
        return body


def _epoch(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
