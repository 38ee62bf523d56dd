"""Browser credentials and abuse limits, held in memory by the app.

Sessions (an HttpOnly, SameSite=Strict cookie plus a CSRF token) and 60-second single-use
tickets exist because browsers cannot put an Authorization header on EventSource or on a
WebSocket handshake; neither carries the key itself, and both end when the key is revoked.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

from monitor.auth.keys import ApiKey
from monitor.auth.service import Access
from web.envelope import ApiError

SESSION_COOKIE = "driftline_session"
TICKET_SECONDS = 60.0
KEY_RECHECK_SECONDS = 2.0
MAX_SESSIONS = 10_000
MAX_TICKETS = 10_000
MAX_CLIENTS = 10_000
FAILURE_WINDOW = 60.0


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class FailureLimiter:
    """Counts failed authentications per client; past `limit` a minute, the client waits."""

    def __init__(self, limit: int, window: float = FAILURE_WINDOW) -> None:
        self.limit = limit
        self.window = window
        self._fails: OrderedDict[str, deque[float]] = OrderedDict()

    def fail(self, client: str) -> None:
        times = self._fails.pop(client, None) or deque()
        times.append(time.monotonic())
        while len(times) > self.limit + 1:
            times.popleft()
        self._fails[client] = times
        while len(self._fails) > MAX_CLIENTS:
            self._fails.popitem(last=False)

    def retry_after(self, client: str) -> int:
        """Seconds the client must wait, or 0."""
        times = self._fails.get(client)
        if not times or len(times) <= self.limit:
            return 0
        wait = times[0] + self.window - time.monotonic()
        if wait <= 0:
            del self._fails[client]
            return 0
        return int(wait) + 1


@dataclass
class Session:
    key_id: str
    csrf: str
    expires: float
    key: ApiKey | None = None
    checked: float = 0.0


class Sessions:
    """Cookie sessions by token hash (the token itself is only in the browser)."""

    def __init__(self, hours: float) -> None:
        self.seconds = hours * 3600
        self._by_hash: OrderedDict[str, Session] = OrderedDict()

    def start(self, key: ApiKey) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        session = Session(key.id, secrets.token_urlsafe(24), time.monotonic() + self.seconds)
        self._by_hash[_digest(token)] = session
        while len(self._by_hash) > MAX_SESSIONS:
            self._by_hash.popitem(last=False)
        return token, session

    def get(self, token: str) -> Session | None:
        session = self._by_hash.get(_digest(token))
        if session is None or session.expires < time.monotonic():
            return None
        return session

    def end(self, token: str) -> None:
        self._by_hash.pop(_digest(token), None)

    def end_all_for(self, key_id: str) -> None:
        for digest in [d for d, s in self._by_hash.items() if s.key_id == key_id]:
            del self._by_hash[digest]

    def current_key(self, session: Session, access: Access) -> ApiKey | None:
        """The session's key if still usable, re-read at most every few seconds."""
        now = time.monotonic()
        if session.key is None or now - session.checked > KEY_RECHECK_SECONDS:
            session.key = access.keys.get(session.key_id)
            session.checked = now
        key = session.key
        if key is None or key.refusal(access.keys.clock()):
            return None
        return key

    @staticmethod
    def key_by_id(key_id: str, access: Access) -> ApiKey | None:
        key = access.keys.get(key_id)
        if key is None or key.refusal(access.keys.clock()):
            return None
        return key


class Tickets:
    """Single-use tokens for EventSource and WebSocket URLs, valid for a minute."""

    def __init__(self) -> None:
        self._by_hash: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def issue(self, key_id: str) -> str:
        ticket = secrets.token_urlsafe(24)
        self._by_hash[_digest(ticket)] = (key_id, time.monotonic() + TICKET_SECONDS)
        while len(self._by_hash) > MAX_TICKETS:
            self._by_hash.popitem(last=False)
        return ticket

    def redeem(self, ticket: str) -> str | None:
        """The key id the ticket was issued for; the ticket is gone either way."""
        found = self._by_hash.pop(_digest(ticket), None)
        if found is None or found[1] < time.monotonic():
            return None
        return found[0]


def _origin_host(origin: str) -> str:
    return urlsplit(origin).netloc.lower()


class Security:
    """The app's per-process security state and checks."""

    def __init__(self, cors_origins: tuple[str, ...], failures: int, session_hours: float) -> None:
        self.origins = frozenset(o.rstrip("/").lower() for o in cors_origins)
        self.limiter = FailureLimiter(failures)
        self.sessions = Sessions(session_hours)
        self.tickets = Tickets()

    def origin_allowed(self, conn: HTTPConnection) -> bool:
        """No Origin (a non-browser client), an allowed origin, or the server's own."""
        origin = conn.headers.get("origin")
        if origin is None:
            return True
        origin = origin.rstrip("/").lower()
        if origin in self.origins or "*" in self.origins:
            return True
        return _origin_host(origin) == conn.headers.get("host", "").lower()

    def check_origin(self, conn: HTTPConnection) -> None:
        if not self.origin_allowed(conn):
            raise ApiError("FORBIDDEN", "this Origin may not open a WebSocket here", 403)
