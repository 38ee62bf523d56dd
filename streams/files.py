"""Event files on disk: finding them, and reading each into documents with their positions."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from streams.documents import InputError, Limits, RawDoc, documents

EVENT_SUFFIXES = (".json", ".json.gz", ".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".gz")
# Offline files are read whole anyway; the limit only stops a gzip bomb.
FILE_LIMITS = Limits(max_bytes=4 * 1024 * 1024 * 1024, unit="file")


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


def read_documents(path: Path, limits: Limits = FILE_LIMITS) -> Iterator[RawDoc]:
    """Every document in one file (JSON, NDJSON, gzip); an unreadable file is one error."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        yield RawDoc(str(path), error=InputError("unreadable file", str(exc)))
        return
    yield from documents(data, limits, str(path))
