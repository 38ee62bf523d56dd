"""Logging for `driftline serve`: one format for Driftline's and uvicorn's loggers, text or
JSON lines, with API keys, tickets and credentials masked in every line."""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from web.request_id import REQUEST_ID

FORMATS = ("text", "json")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The attributes every LogRecord has; anything else was passed as `extra=` (structured).
_STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
_SECRETS = [
    # Driftline API keys (dl_ + 43 base64url characters) wherever they appear.
    (re.compile(r"\bdl_[A-Za-z0-9_-]{20,}"), "dl_***"),
    # Credentials in URLs: user:password@host, and query parameters that carry one.
    (re.compile(r"(://[^/\s:@]+:)[^@\s/]+@"), r"\1***@"),
    (
        re.compile(r"([?&](?:ticket|token|key|api_key|password|secret|signature)=)[^&\s\"]+", re.I),
        r"\1***",
    ),
    (re.compile(r"(?i)(authorization:\s*\w+\s+)\S+"), r"\1***"),
]


def scrub(text: str) -> str:
    """`text` with keys and credentials masked."""
    for pattern, repl in _SECRETS:
        text = pattern.sub(repl, text)
    return text


def _access_fields(record: logging.LogRecord) -> dict[str, Any]:
    # uvicorn.access logs '%s - "%s %s HTTP/%s" %d' with these five arguments.
    args = record.args
    if record.name != "uvicorn.access" or not isinstance(args, tuple) or len(args) != 5:
        return {}
    client, method, path, http_version, status = args
    return {
        "client": client,
        "method": method,
        "path": scrub(str(path)),
        "http_version": http_version,
        "status": status,
    }


class TextFormatter(logging.Formatter):
    """The classic line, scrubbed."""

    def __init__(self) -> None:
        super().__init__(TEXT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return scrub(f"{line} request_id={request_id}" if request_id else line)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message and the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        line.update(_access_fields(record))
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_") and name not in line:
                line[name] = scrub(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exception"] = scrub(self.formatException(record.exc_info))
        return orjson.dumps(line, default=str).decode()


class RequestIdFilter(logging.Filter):
    """Puts the current HTTP request's id (web/request_id.py) on the line as `request_id`."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = REQUEST_ID.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True


def configure(level: str, fmt: str) -> None:
    """Send every logger (uvicorn's too: serve passes it no log config) to stderr in `fmt`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        # Whatever an earlier uvicorn.Config left on them (its handlers, its level): the
        # root's level and handler decide, as for every other logger.
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
        logger.disabled = False
