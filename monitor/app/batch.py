"""Offline batch detection over files: the engine behind `driftline detect`."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from monitor.app.progress import Progress
from monitor.detect import Detector
from monitor.types import ChangeEvent, DecodeError, Drift, FalcoAlert
from streams.decode import decode_document
from streams.documents import RawDoc, documents
from streams.files import FILE_LIMITS, event_files, read_documents

STDIN = "-"


@dataclass
class BatchSummary:
    files: int = 0
    records: int = 0
    changes: int = 0
    duplicates: int = 0
    runtime_alerts: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    drifts: Counter[str] = field(default_factory=Counter)

    @property
    def undecodable(self) -> bool:
        """Records were read and not one of them could be decoded."""
        return self.records > 0 and self.changes + self.duplicates + self.runtime_alerts == 0

    def lines(self) -> list[str]:
        total = sum(self.drifts.values())
        out = [
            f"driftline: {self.files} files, {self.records} records: {self.changes} changes, "
            f"{self.runtime_alerts} runtime alerts, {sum(self.rejected.values())} rejected, "
            f"{self.duplicates} duplicates",
            f"driftline: {total} drifts"
            + (
                " (" + ", ".join(f"{k} {v}" for k, v in sorted(self.drifts.items())) + ")"
                if total
                else ""
            ),
        ]
        for reason, count in self.rejected.most_common():
            out.append(f"driftline: rejected {count}: {reason}")
        return out


def _inputs(
    files: list[Path], stdin: bytes | None
) -> Iterator[tuple[Path | None, Iterator[RawDoc]]]:
    if stdin is not None:
        yield None, documents(stdin, FILE_LIMITS, "<stdin>")
    for path in files:
        yield path, read_documents(path)


def run_batch(
    detector: Detector,
    paths: Iterable[str | Path],
    emit: Callable[[Drift, str], None],
    progress: Progress | None = None,
    first_errors: list[str] | None = None,
    stdin: bytes | None = None,
) -> BatchSummary:
    """Decode and judge every record under `paths` (and in `stdin`, read as one file); each
    drift goes to `emit` once, with the position (file, or file:line) it was read at."""
    files = event_files(paths)
    summary = BatchSummary(files=len(files) + (stdin is not None))
    seen: set[str] = set()
    done_bytes = 0
    source_for = detector.catalogue.source_for
    for path, docs in _inputs(files, stdin):
        for raw in docs:
            if raw.error is not None:
                summary.records += 1
                summary.rejected[raw.error.reason] += 1
                if first_errors is not None and len(first_errors) < 5:
                    first_errors.append(f"{raw.position}: {raw.error}")
                continue
            for item in decode_document(raw.doc, source_for):
                summary.records += 1
                if isinstance(item, DecodeError):
                    summary.rejected[item.reason] += 1
                    if first_errors is not None and len(first_errors) < 5:
                        first_errors.append(f"{raw.position}: {item}")
                elif isinstance(item, FalcoAlert):
                    summary.runtime_alerts += 1
                elif isinstance(item, ChangeEvent):
                    if item.event_id in seen:
                        summary.duplicates += 1
                        continue
                    seen.add(item.event_id)
                    summary.changes += 1
                    result = detector.detect(item)
                    if result.skipped:
                        summary.skipped[result.skipped] += 1
                    for drift in result.drifts:
                        summary.drifts[drift.kind.value] += 1
                        emit(drift, raw.position)
        with contextlib.suppress(OSError):
            done_bytes += path.stat().st_size if path is not None else 0
        if progress is not None:
            progress.update(done_bytes, summary.records, sum(summary.drifts.values()))
    if progress is not None:
        progress.close()
    return summary
