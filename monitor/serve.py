"""`driftline serve`: placeholder until the live API lands (see the live API issue)."""

from __future__ import annotations

import argparse
from typing import Any


def add_serve_parser(sub: Any) -> None:
    srv = sub.add_parser("serve", help="run the daemon (HTTP ingest, REST, WebSocket, SSE)")
    srv.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    raise SystemExit("driftline serve: not available in this build")
