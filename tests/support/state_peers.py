"""Real servers for remote state on 127.0.0.1: Terraform's HTTP backend and an HCP
Terraform stand-in serving the documented workspaces and state-versions endpoints."""

from __future__ import annotations

import base64
import contextlib
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler], state: Any) -> Iterator[str]:
    """Serve `handler` on a free port in a thread; yields the base URL; stops on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.peer = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def peer(self) -> Any:
        return self.server.peer  # type: ignore[attr-defined]

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


# --- Terraform's HTTP backend ------------------------------------------------------------


@dataclass
class HttpBackendState:
    """What the backend holds: states by path, the lock, the credentials it accepts."""

    username: str
    password: str
    states: dict[str, bytes] = field(default_factory=dict)
    locks: dict[str, bytes] = field(default_factory=dict)
    etags: bool = True
    gets: int = 0
    down: bool = False


class HttpBackendHandler(_Quiet):
    """GET the state (204 when none), POST to store it, LOCK/UNLOCK with the lock info in the
    body (423 with the holder's info when taken), as Terraform's http backend documents."""

    def _authorized(self) -> bool:
        p: HttpBackendState = self.peer
        want = base64.b64encode(f"{p.username}:{p.password}".encode()).decode()
        if self.headers.get("Authorization") != f"Basic {want}":
            self.reply(401, b"unauthorized", {"WWW-Authenticate": 'Basic realm="state"'})
            return False
        if p.down:
            self.reply(503, b"down for maintenance")
            return False
        return True

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        p: HttpBackendState = self.peer
        if not self._authorized():
            return
        p.gets += 1
        body = p.states.get(self.path.split("?", 1)[0])
        if body is None:
            self.reply(204)
            return
        etag = '"' + str(hash(body) & 0xFFFFFFFF) + '"'
        if p.etags and self.headers.get("If-None-Match") == etag:
            self.reply(304)
            return
        self.reply(200, body, {"ETag": etag} if p.etags else {"Content-Type": "application/json"})

    def do_POST(self) -> None:
        p: HttpBackendState = self.peer
        if not self._authorized():
            return
        path, _, query = self.path.partition("?")
        lock_id = urllib.parse.parse_qs(query).get("ID", [None])[0]
        held = p.locks.get(path)
        if held is not None and orjson.loads(held).get("ID") != lock_id:
            self.reply(423, held)
            return
        p.states[path] = self._body()
        self.reply(200)

    def do_LOCK(self) -> None:
        p: HttpBackendState = self.peer
        if not self._authorized():
            return
        info = self._body()
        path = self.path.split("?", 1)[0]
        if path in p.locks:
            self.reply(423, p.locks[path])
            return
        p.locks[path] = info
        self.reply(200)

    def do_UNLOCK(self) -> None:
        p: HttpBackendState = self.peer
        if not self._authorized():
            return
        self._body()
        p.locks.pop(self.path.split("?", 1)[0], None)
        self.reply(200)

    def do_DELETE(self) -> None:
        p: HttpBackendState = self.peer
        if not self._authorized():
            return
        p.states.pop(self.path.split("?", 1)[0], None)
        self.reply(200)


# --- HCP Terraform ------------------------------------------------------------------------


@dataclass
class TfcWorkspace:
    id: str
    name: str
    tags: list[str]
    versions: list[tuple[str, bytes, int]] = field(default_factory=list)  # (sv id, state, serial)


@dataclass
class TfcState:
    """An organization's workspaces and the team token the stand-in accepts."""

    org: str
    token: str
    workspaces: dict[str, TfcWorkspace] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    page_size_cap: int = 100

    def add_version(self, name: str, state: bytes, serial: int) -> str:
        ws = self.workspaces[name]
        sv = f"sv-{name}-{len(ws.versions) + 1}"
        ws.versions.append((sv, state, serial))
        return sv


class TfcHandler(_Quiet):
    """GET /api/v2/organizations/:org/workspaces (search[tags], page[number], page[size]),
    /organizations/:org/workspaces/:name, /state-versions/:id, and the state download."""

    def _doc(self, doc: Any, status: int = 200) -> None:
        self.reply(status, orjson.dumps(doc), {"Content-Type": "application/vnd.api+json"})

    def _not_found(self) -> None:
        self._doc({"errors": [{"status": "404", "title": "not found"}]}, 404)

    def _workspace(self, ws: TfcWorkspace) -> dict[str, Any]:
        current = ws.versions[-1][0] if ws.versions else None
        return {
            "id": ws.id,
            "type": "workspaces",
            "attributes": {
                "name": ws.name,
                "tag-names": ws.tags,
                "updated-at": "2024-05-01T10:00:00.000Z",
            },
            "relationships": {
                "current-state-version": {
                    "data": {"id": current, "type": "state-versions"} if current else None,
                    "links": {"related": f"/api/v2/workspaces/{ws.id}/current-state-version"},
                }
            },
            "links": {"self": f"/api/v2/organizations/{self.peer.org}/workspaces/{ws.name}"},
        }

    def _list(self, query: dict[str, list[str]]) -> None:
        p: TfcState = self.peer
        found = sorted(p.workspaces.values(), key=lambda w: w.name)
        tags = [t for t in (query.get("search[tags]") or [""])[0].split(",") if t]
        found = [w for w in found if all(t in w.tags for t in tags)]
        size = min(int((query.get("page[size]") or ["20"])[0]), p.page_size_cap)
        number = int((query.get("page[number]") or ["1"])[0])
        pages = max(1, -(-len(found) // size))
        chunk = found[(number - 1) * size : number * size]
        self._doc(
            {
                "data": [self._workspace(w) for w in chunk],
                "meta": {
                    "pagination": {
                        "current-page": number,
                        "prev-page": number - 1 if number > 1 else None,
                        "next-page": number + 1 if number < pages else None,
                        "total-pages": pages,
                        "total-count": len(found),
                    }
                },
            }
        )

    def _version(self, sv_id: str) -> None:
        for ws in self.peer.workspaces.values():
            for sv, _, serial in ws.versions:
                if sv == sv_id:
                    host = self.headers.get("Host")
                    attrs = {
                        "serial": serial,
                        "status": "finalized",
                        "hosted-state-download-url": f"http://{host}/_archivist/{sv}",
                    }
                    self._doc({"data": {"id": sv, "type": "state-versions", "attributes": attrs}})
                    return
        self._not_found()

    def _download(self, sv_id: str) -> None:
        for ws in self.peer.workspaces.values():
            for sv, state, _ in ws.versions:
                if sv == sv_id:
                    self.reply(200, state, {"Content-Type": "application/json"})
                    return
        self._not_found()

    def do_GET(self) -> None:
        p: TfcState = self.peer
        url = urllib.parse.urlsplit(self.path)
        p.requests.append(url.path)
        if self.headers.get("Authorization") != f"Bearer {p.token}":
            self._doc({"errors": [{"status": "401", "title": "unauthorized"}]}, 401)
            return
        parts = url.path.strip("/").split("/")
        if parts[:2] == ["_archivist"] or parts[0] == "_archivist":
            self._download(parts[1])
        elif parts[:4] == ["api", "v2", "organizations", p.org] and parts[4:5] == ["workspaces"]:
            if len(parts) == 5:
                self._list(urllib.parse.parse_qs(url.query))
            elif len(parts) == 6 and parts[5] in p.workspaces:
                self._doc({"data": self._workspace(p.workspaces[parts[5]])})
            else:
                self._not_found()
        elif parts[:3] == ["api", "v2", "state-versions"] and len(parts) == 4:
            self._version(parts[3])
        else:
            self._not_found()
