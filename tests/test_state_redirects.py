"""Remote state credentials never follow a redirect to another host (real HTTP servers)."""

from __future__ import annotations

import http.server
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from monitor.statesrc.fetch import open_url

pytestmark = pytest.mark.integration


@contextmanager
def server(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_redirect_to_another_host_loses_the_token_and_one_to_the_same_host_keeps_it() -> None:
    seen: list[tuple[str, str | None]] = []

    class Storage(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    with server(Storage) as storage:

        class Api(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append((self.path, self.headers.get("Authorization")))
                if self.path == "/final":
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(b"{}")
                    return
                self.send_response(302)
                target = storage + "/blob" if self.path == "/away" else "/final"
                self.send_header("Location", target)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        with server(Api) as api:
            for path in ("/away", "/home"):
                req = urllib.request.Request(api + path, headers={"Authorization": "Bearer t0k"})
                with open_url(req, timeout=10) as resp:
                    assert resp.read() == b"{}"
    assert seen == [
        ("/away", "Bearer t0k"),
        ("/blob", None),  # another host: no token
        ("/home", "Bearer t0k"),
        ("/final", "Bearer t0k"),  # the same host: still authenticated
    ]
