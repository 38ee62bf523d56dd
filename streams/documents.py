"""Bytes to decoded items: the one path every source and endpoint reads its input through.

An input (a Kafka record's value, a log file, an HTTP body) may be gzip (one or more
members), one JSON document, or NDJSON. `documents` turns it into parsed documents, each
with its position; `decode_bytes` also runs a format's decoder over each one. Unreadable
input becomes an `InputError` item, never an exception, so its neighbours still arrive.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from monitor.types import Decoded, DecodeError
from streams.formats import DocDecoder, decoder_for

GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class Limits:
    """What one input may be, and how its rejections are named."""

    max_bytes: int = 64 * 1024 * 1024  # after gunzip: a decompression bomb stops here
    unit: str = "record"  # what one input is, in reasons: "record too large"
    empty_is_error: bool = False  # an empty Kafka record is poison; an empty file holds nothing
    gzip: bool = True  # HTTP bodies are JSON only (as they always were)
    # A file may still be being written: a cut-off gzip stream is then "truncated gzip"
    # (and retried by the trail sources), not "bad gzip".
    growing: bool = False
    # Checked where HTTP bodies are read (streams/body.py); None: any number / orjson's own
    # nesting limit (1024).
    max_records: int | None = None  # records in one input
    max_depth: int | None = None  # nesting of one JSON document


RECORD = Limits(empty_is_error=True)


class InputError(DecodeError):
    """The input itself cannot be read (gzip, size, JSON), as opposed to a record in it that
    does not decode; `line` is the NDJSON line, None when it concerns the whole input."""

    def __init__(self, reason: str, detail: str = "", line: int | None = None) -> None:
        super().__init__(reason, detail)
        self.line = line


@dataclass(frozen=True, slots=True)
class RawDoc:
    """A parsed JSON document (or the reason it could not be parsed) and where it came from."""

    position: str
    doc: Any = None
    error: InputError | None = None


def _named(name: str | None, detail: str) -> str:
    return f"{name}: {detail}" if name else detail


def gunzip(data: bytes, limits: Limits, name: str | None = None) -> bytes:
    """Every gzip member, decompressed; never more than `limits.max_bytes` of output."""
    limit = limits.max_bytes
    out: list[bytes] = []
    total = 0
    while data:
        d = zlib.decompressobj(wbits=31)
        try:
            chunk = d.decompress(data, limit - total + 1)
        except zlib.error as exc:
            raise InputError("bad gzip", _named(name, str(exc))) from None
        total += len(chunk)
        if total > limit or d.unconsumed_tail:
            raise InputError(
                f"{limits.unit} too large", _named(name, f"more than {limit} bytes after gunzip")
            )
        out.append(chunk)
        if not d.eof:
            reason = "truncated gzip" if limits.growing else "bad gzip"
            raise InputError(reason, _named(name, "the compressed stream ends early"))
        data = d.unused_data
        if not data.strip(b"\x00"):
            break
        if data[:2] != GZIP_MAGIC:
            raise InputError("bad gzip", _named(name, "data after the last gzip member"))
    return b"".join(out)


def unpack(data: bytes, limits: Limits, name: str | None = None) -> bytes:
    """The input's JSON bytes: gunzipped when it is gzip, refused when over the limit."""
    if limits.gzip and data[:2] == GZIP_MAGIC:
        return gunzip(data, limits, name)
    if len(data) > limits.max_bytes:
        raise InputError(
            f"{limits.unit} too large",
            _named(name, f"{len(data)} bytes (limit {limits.max_bytes})"),
        )
    return data


def parse_documents(data: bytes, name: str) -> Iterator[RawDoc]:
    """One JSON document, or NDJSON: a bad line is reported and its neighbours still parse."""
    stripped = data.strip()
    if not stripped:
        return
    try:
        yield RawDoc(name, orjson.loads(stripped))
        return
    except orjson.JSONDecodeError as whole_error:
        if b"\n" not in stripped:
            yield RawDoc(name, error=InputError("bad JSON", str(whole_error)))
            return
    for lineno, line in enumerate(stripped.split(b"\n"), 1):
        line = line.strip()
        if not line:
            continue
        try:
            yield RawDoc(f"{name}:{lineno}", orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            yield RawDoc(f"{name}:{lineno}", error=InputError("bad JSON", str(exc), lineno))


def documents(data: bytes, limits: Limits, name: str) -> Iterator[RawDoc]:
    """Every document in an input, each with its position (`name`, or `name:line`)."""
    try:
        data = unpack(data, limits, name)
    except InputError as exc:
        yield RawDoc(name, error=exc)
        return
    yield from parse_documents(data, name)


def _decode_doc(decoder: DocDecoder, doc: Any, out: list[Decoded]) -> None:
    try:
        out.extend(decoder(doc))
    except DecodeError as exc:
        out.append(exc)
    except Exception as exc:  # a decoder bug must not stop a partition or a file
        out.append(DecodeError("decoder failed", f"{type(exc).__name__}: {exc}"))


def decode_bytes(
    data: bytes | None,
    format: str | DocDecoder,
    limits: Limits = RECORD,
    name: str | None = None,
) -> list[Decoded]:
    """Every item in one input, in order; `format` is a registry name or a built decoder.

    With a `name`, error details say where they are (`name:line: ...`).
    """
    decoder = decoder_for(format) if isinstance(format, str) else format
    out: list[Decoded] = []
    if not data:
        if limits.empty_is_error:
            out.append(InputError(f"empty {limits.unit}", f"the {limits.unit} has no value"))
        return out
    try:
        data = unpack(data, limits, name)
        doc = orjson.loads(data)  # the common case: one JSON document
    except InputError as exc:
        out.append(exc)
        return out
    except orjson.JSONDecodeError:
        _decode_rest(data, decoder, limits, name, out)
        return out
    _decode_doc(decoder, doc, out)
    return out


def _decode_rest(
    data: bytes, decoder: DocDecoder, limits: Limits, name: str | None, out: list[Decoded]
) -> None:
    """NDJSON, blank input, or input that does not parse at all."""
    if limits.empty_is_error and not data.strip():
        out.append(InputError(f"empty {limits.unit}", f"the {limits.unit} has no value"))
        return
    for raw in parse_documents(data, name or limits.unit):
        if raw.error is None:
            _decode_doc(decoder, raw.doc, out)
        elif name:
            err = raw.error
            out.append(InputError(err.reason, f"{raw.position}: {err.detail}", err.line))
        else:
            out.append(raw.error)
