"""An HTTP body to decoded records, within bounds, each rejection with where it was.

The ingest endpoints read bodies through here: an optional gzip encoding (bounded after
gunzip), one JSON document or NDJSON, at most `max_records` records and `max_depth` levels of
nesting. A body that cannot be read as a whole raises `InputError` (the endpoint answers 400 or
413); a record that does not decode is an item, and a `Reject` that says where it was and
keeps its bytes for the dead letters.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from monitor.types import Decoded, DecodeError
from streams.documents import InputError, Limits, gunzip
from streams.formats import DocDecoder

TOO_MANY = "too many records"
TOO_DEEP = "nested too deeply"
TOO_LARGE = "body too large"
NOT_JSON = "not JSON"
NOT_OBJECT = "not a JSON object"
# Whole-body refusals that are about size (413); the others are unreadable bodies (400).
OVER_LIMITS = frozenset({TOO_MANY, TOO_LARGE})
# Where envelopes keep their records: counted before decoding, so an oversized list is
# refused before a decoder walks it.
_NON_SPACE = re.compile(rb"\S")
_LISTS = ("Records", "records", "items", "entries", "receivedMessages")


@dataclass(frozen=True, slots=True)
class Reject:
    """A record that did not decode: its place in the body and its bytes when it has its own
    line (a record inside one large document keeps only its place)."""

    index: int
    line: int  # NDJSON line, 0 when the body is one JSON document
    reason: str
    detail: str
    value: bytes | None


@dataclass
class Body:
    """Every record of a body, in order, and where the ones that failed were."""

    items: list[Decoded] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


def depth_over(doc: Any, limit: int) -> bool:
    """True when `doc` nests lists and objects more than `limit` deep (no recursion)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if node.__class__ is dict else node
        stack.extend((c, depth + 1) for c in children if c.__class__ in (dict, list))
    return False


def _count(doc: Any) -> int:
    if isinstance(doc, list):
        return len(doc)
    if isinstance(doc, dict):
        for key in _LISTS:
            inner = doc.get(key)
            if isinstance(inner, list):
                return len(inner)
    return 1


def _lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(line number, line) for every line that holds something, without a list of them all."""
    start, lineno, size = 0, 0, len(data)
    while start < size:
        end = data.find(b"\n", start)
        if end < 0:
            end = size
        lineno += 1
        line = data[start:end].strip()
        start = end + 1
        if line:
            yield lineno, line


def _decode(decoder: DocDecoder, doc: Any) -> list[Decoded]:
    try:
        return list(decoder(doc))
    except DecodeError as exc:
        return [exc]
    except RecursionError:
        return [DecodeError(TOO_DEEP, "the record nests too deeply to decode")]
    except Exception as exc:  # a decoder bug costs the record, not the request
        return [DecodeError("decoder failed", f"{type(exc).__name__}: {exc}")]


def _check(doc: Any, limits: Limits, where: str) -> None:
    if limits.max_depth is not None and depth_over(doc, limits.max_depth):
        raise InputError(TOO_DEEP, f"{where} nests more than {limits.max_depth} levels")


def _add(out: Body, items: list[Decoded], line: int, value: bytes | None) -> None:
    for item in items:
        if isinstance(item, DecodeError):
            out.rejects.append(Reject(len(out.items), line, item.reason, item.detail, value))
        out.items.append(item)


def decode_body(data: bytes, decoder: DocDecoder, limits: Limits, gzipped: bool = False) -> Body:
    """Every record in a body; InputError when the body itself is unreadable or over limits."""
    if gzipped:
        data = gunzip(data, limits)
    elif len(data) > limits.max_bytes:
        raise InputError(TOO_LARGE, f"{len(data)} bytes (limit {limits.max_bytes})")
    if _ndjson_at_sight(data):
        return _ndjson(data, decoder, limits)
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if b"\n" not in data.strip():
            raise InputError(NOT_JSON, str(exc)) from None
        return _ndjson(data, decoder, limits)
    if not isinstance(doc, dict | list) or not doc:
        raise InputError(NOT_OBJECT, f"the body is a JSON {type(doc).__name__}, not records")
    if limits.max_records is not None and _count(doc) > limits.max_records:
        raise InputError(TOO_MANY, f"{_count(doc)} records (limit {limits.max_records})")
    _check(doc, limits, "the body")
    out = Body()
    items = _decode(decoder, doc)
    _too_many(len(items), limits)
    _add(out, items, 0, data.strip() if len(items) == 1 else None)
    return out


def _ndjson_at_sight(data: bytes) -> bool:
    """A first line that is a whole JSON document, and more lines: NDJSON. Trying the body
    as one document first would cost a failed parse of all of it (and its text in the error)."""
    end = data.find(b"\n", 0, 1 << 20)
    if end < 0 or _NON_SPACE.search(data, end) is None:
        return False
    try:
        orjson.loads(data[:end])
    except orjson.JSONDecodeError:
        return False
    return True


def _too_many(n: int, limits: Limits) -> None:
    if limits.max_records is not None and n > limits.max_records:
        raise InputError(TOO_MANY, f"more than {limits.max_records} records")


def _ndjson(data: bytes, decoder: DocDecoder, limits: Limits) -> Body:
    limit = limits.max_records
    lines = data.count(b"\n") + 1
    if limit is not None and lines > limit:
        # Counted before any parsing (blank lines included, so counting stays one C scan):
        # five million tiny lines cost a scan, not five million objects.
        raise InputError(TOO_MANY, f"{lines} lines of NDJSON (limit {limit} records)")
    out = Body()
    parsed = 0
    for lineno, line in _lines(data):
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            _add(out, [InputError("bad JSON", f"line {lineno}: {exc}", lineno)], lineno, line)
            continue
        parsed += 1
        try:
            _check(doc, limits, f"line {lineno}")
        except InputError as exc:
            _add(out, [exc], lineno, line)
            continue
        _add(out, _decode(decoder, doc), lineno, line)
        _too_many(len(out.items), limits)
    if not parsed:
        raise InputError(NOT_JSON, "no line of the body is JSON")
    return out
