"""Reading event files: JSON documents, NDJSON, gzip; each record with its position."""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from monitor.types import DecodeError

EVENT_SUFFIXES = (".json", ".json.gz", ".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".gz")


@dataclass(frozen=True, slots=True)
class RawDoc:
    """A parsed JSON document (or the reason it could not be parsed) and where it came from."""

    position: str
    doc: Any = None
    error: DecodeError | None = None


def event_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files named directly, plus every JSON/NDJSON(.gz) file below each directory, sorted."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(
                sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(EVENT_SUFFIXES))
            )
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return out


def read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DecodeError("bad gzip", f"{path}: {exc}") from None
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
            yield RawDoc(name, error=DecodeError("bad JSON", str(whole_error)))
            return
    for lineno, line in enumerate(stripped.split(b"\n"), 1):
        line = line.strip()
        if not line:
            continue
        try:
            yield RawDoc(f"{name}:{lineno}", orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            yield RawDoc(f"{name}:{lineno}", error=DecodeError("bad JSON", str(exc)))


def read_documents(path: Path) -> Iterator[RawDoc]:
    try:
        data = read_bytes(path)
    except DecodeError as exc:
        yield RawDoc(str(path), error=exc)
        return
    except OSError as exc:
        yield RawDoc(str(path), error=DecodeError("unreadable file", str(exc)))
        return
    yield from parse_documents(data, str(path))
