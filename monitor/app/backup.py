"""`driftline backup`: consistent copies of the data directory's databases, while it runs.

SQLite's online backup API copies a database page by page under one read transaction, so
the copy is the database as of one commit: never half a group commit, counters that match
the rows. It is taken in one step: a stepped backup restarts whenever another connection
writes, which under steady ingest might never finish.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path
from typing import Any

import orjson

from monitor.app.config import default_data_dir

DATABASES = ("driftline.db", "auth.db")
EXIT_OK, EXIT_ERROR = 0, 2


class BackupError(Exception):
    """A copy that could not be taken or does not check out."""


def backup_file(source: Path, target: Path) -> dict[str, Any]:
    """Copy `source` to `target` with the online backup API; check the copy's integrity."""
    if target.exists():
        raise BackupError(f"{target}: already exists (a backup never overwrites)")
    # Read-write (not mode=ro): a reader of a WAL database may need to create its -shm file.
    src = sqlite3.connect(f"file:{source}?mode=rw", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # all pages in one step: one consistent snapshot
            check = dst.execute("PRAGMA quick_check").fetchone()[0]
            version = dst.execute("PRAGMA user_version").fetchone()[0]
        finally:
            dst.close()
    except sqlite3.Error as exc:
        target.unlink(missing_ok=True)
        raise BackupError(f"{source}: {exc}") from None
    finally:
        src.close()
    if check != "ok":
        raise BackupError(f"{target}: the copy fails SQLite's quick_check: {check}")
    return {"file": str(target), "bytes": target.stat().st_size, "schema_version": version}


def backup(data_dir: Path, dest: Path) -> list[dict[str, Any]]:
    """Copy every database of `data_dir` into the directory `dest` (created)."""
    sources = [data_dir / name for name in DATABASES if (data_dir / name).is_file()]
    if not sources:
        raise BackupError(f"{data_dir}: no Driftline database here")
    dest.mkdir(parents=True, exist_ok=True)
    return [backup_file(src, dest / src.name) for src in sources]


def _run(args: argparse.Namespace) -> int:
    try:
        copies = backup(Path(args.data_dir), Path(args.dest))
    except (BackupError, OSError) as exc:
        print(f"driftline: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    sys.stdout.buffer.write(orjson.dumps({"copies": copies}) + b"\n")
    return EXIT_OK


def add_backup_parser(sub: Any) -> None:
    cmd = sub.add_parser(
        "backup",
        help="copy the store and auth.db consistently, while the server runs",
        description="Writes DEST/driftline.db and DEST/auth.db, each a snapshot as of one "
        "commit, checked with quick_check. Restore: stop the server and copy them into the "
        "data directory.",
    )
    cmd.add_argument("--data-dir", default=default_data_dir(), help="the server's data directory")
    cmd.add_argument("dest", metavar="DEST", help="a directory for the copies (created)")
    cmd.set_defaults(func=_run)
