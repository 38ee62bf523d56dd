"""A small HTTP/1.1 client: one keep-alive connection per sender, one request at a time.

Senders deliver in order, so a request waits for the previous answer; what bounds the drain
rate is then the cost of one request, which for a general-purpose client (connection pools,
middleware, per-request objects) is several times what the wire needs. h11 does the parsing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import h11

MAX_RESPONSE_BODY = 64 * 1024  # kept for the error message; the rest is read and dropped
USER_AGENT = "driftline-outputs"
MAX_RETRY_AFTER = 3600.0


class HttpError(Exception):
    """The request did not get an answer (refused, reset, timeout, bad response)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def retry_after(answer: Answer, now: float) -> float:
    """Seconds a 429/503 asks us to wait (delta seconds or an HTTP date); 0 if none."""
    raw = answer.headers.get("retry-after", "").strip()
    if not raw:
        return 0.0
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(raw)))
    except ValueError:
        pass
    try:
        return min(MAX_RETRY_AFTER, max(0.0, parsedate_to_datetime(raw).timestamp() - now))
    except (TypeError, ValueError):
        return 0.0


def _origin(url: str) -> tuple[str, str, int, str]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, host, port, target


class HttpClient:
    """POSTs over one reused connection; any failure closes it (the next request reconnects)."""

    def __init__(self) -> None:
        self._origin: tuple[str, str, int] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._conn: h11.Connection | None = None

    async def post(
        self, url: str, headers: list[tuple[str, str]], body: bytes, timeout: float
    ) -> Answer:
        """Send one request and read its answer within `timeout` seconds; HttpError if none."""
        scheme, host, port, target = _origin(url)
        try:
            async with asyncio.timeout(timeout):
                if self._origin != (scheme, host, port) or self._conn is None:
                    await self._connect(scheme, host, port)
                return await self._exchange(host, port, target, headers, body)
        except TimeoutError:
            await self.close()
            raise HttpError(f"no answer within {timeout:g} s") from None
        except (OSError, h11.ProtocolError, asyncio.IncompleteReadError) as exc:
            await self.close()
            raise HttpError(f"{type(exc).__name__}: {exc}") from None

    async def _connect(self, scheme: str, host: str, port: int) -> None:
        await self.close()
        context = ssl.create_default_context() if scheme == "https" else None
        self._reader, self._writer = await asyncio.open_connection(host, port, ssl=context)
        self._conn = h11.Connection(h11.CLIENT)
        self._origin = (scheme, host, port)

    async def _exchange(
        self, host: str, port: int, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> Answer:
        conn, reader, writer = self._conn, self._reader, self._writer
        assert conn is not None and reader is not None and writer is not None
        head = [
            ("Host", f"{host}:{port}"),
            ("User-Agent", USER_AGENT),
            ("Content-Length", str(len(body))),
            *headers,
        ]
        out = conn.send(h11.Request(method="POST", target=target, headers=head))
        out = (out or b"") + (conn.send(h11.Data(data=body)) or b"")
        writer.write(out + (conn.send(h11.EndOfMessage()) or b""))
        await writer.drain()
        status, answer_headers, chunks, size = 0, {}, [], 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                answer_headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                if size < MAX_RESPONSE_BODY:
                    chunks.append(bytes(event.data))
                size += len(event.data)
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            await self.close()
        return Answer(status, answer_headers, b"".join(chunks)[:MAX_RESPONSE_BODY])

    async def close(self) -> None:
        writer, self._writer, self._reader, self._conn, self._origin = (
            self._writer,
            None,
            None,
            None,
            None,
        )
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
