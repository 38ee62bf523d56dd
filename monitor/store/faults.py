"""Storage faults of a file store: SQLite's error codes and the database file's identity.

SQLite keeps writing into a database file that was unlinked (its inode lives while open), so
a removed data dir would go on acknowledging writes that a restart finds gone; the writer
compares the file with the one it opened before every write instead.
"""

from __future__ import annotations

import os
import sqlite3

from monitor.store.protocol import StorageFault

# Primary result codes (https://www.sqlite.org/rescode.html).
_FULL = 13
_CAUSES = {
    8: "the database is read-only",  # SQLITE_READONLY
    10: "disk I/O error",  # SQLITE_IOERR
    13: "the disk is full",  # SQLITE_FULL
    14: "the database file cannot be opened",  # SQLITE_CANTOPEN
}

Identity = tuple[int, int]


def as_fault(exc: BaseException, path: str) -> StorageFault | None:
    """The StorageFault an SQLite error means, or None when it is not one."""
    if not isinstance(exc, sqlite3.Error):
        return None
    code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
    cause = _CAUSES.get(code)
    if cause is None:
        return None
    return StorageFault(f"store {path}: {cause} ({exc})", full=code == _FULL)


def identity(path: str) -> Identity | None:
    """The (device, inode) of a file, or None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def file_fault(path: str, opened: Identity | None) -> str | None:
    """Why the database file at `path` can no longer take writes, or None."""
    now = identity(path)
    if now is None:
        return f"store {path}: the database file is gone (was the data dir removed?)"
    if opened is not None and now != opened:
        return f"store {path}: the database file was replaced since it was opened"
    directory = os.path.dirname(path) or "."
    if not os.access(directory, os.W_OK):
        return f"store {path}: the data dir {directory} is not writable"
    return None
