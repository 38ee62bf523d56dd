"""A directory watcher for CloudTrail log files (AWSLogs/<account>/CloudTrail/<region>/...).

It polls the tree (no inotify, so it also works on NFS, bind mounts and `aws s3 sync`
targets) and skips whole day folders the cursor has already passed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from monitor.types import OnItems
from streams.trail_files import (
    DATED_KEY_RE,
    REGION,
    STREAM_ROOT_RE,
    StillWriting,
    TrailFile,
    TrailFileSource,
    Vanished,
)

DEFAULT_PATTERN = re.compile(
    rf"(?:^|/)AWSLogs/(?:o-[a-z0-9]{{10,32}}/)?\d{{12}}/CloudTrail/{REGION}"
    r"/\d{4}/\d{2}/\d{2}/[^/]+\.json(?:\.gz)?$"
)
_ACCOUNT_DIR_RE = re.compile(r"(?:^|/)AWSLogs/(?:o-[a-z0-9]{10,32}/)?\d{12}$")


def _last_stream_root(path: str) -> re.Match[str] | None:
    found = None
    for found in STREAM_ROOT_RE.finditer(path):  # noqa: B007 - the last match is wanted
        pass
    return found


class TrailDirSource(TrailFileSource):
    """New `.json` / `.json.gz` CloudTrail files below `root`, in name order, each once."""

    kind = "trail_dir"

    def __init__(
        self,
        root: Path,
        on_items: OnItems,
        cursor_path: Path,
        *,
        poll_interval: float = 2.0,
        pattern: str | re.Pattern[str] | None = None,
        max_files_per_poll: int = 500,
        **options: Any,
    ) -> None:
        self.root = Path(root).resolve()
        # The default pattern only ever matches below .../CloudTrail/<region>/, so the walk
        # can skip CloudTrail-Digest and CloudTrail-Insight, which grow forever.
        self._default_pattern = pattern is None
        self.pattern = DEFAULT_PATTERN if pattern is None else re.compile(pattern)
        super().__init__(
            on_items,
            cursor_path,
            source_id=f"dir:{self.root}",
            poll_interval=poll_interval,
            max_files_per_poll=max_files_per_poll,
            **options,
        )

    def _prepare(self) -> None:
        if not self.root.is_dir():
            raise FileNotFoundError(f"trail_dir: {self.root} is not a directory")

    def _split(self, path: str) -> tuple[str, str]:
        """(stream, key): the region folder and YYYY/MM/DD/name, or the parent and the name."""
        m = _last_stream_root(path)
        if m is not None:
            rest = path[m.end() + 1 :]
            if DATED_KEY_RE.fullmatch(rest):
                return self._rel(path[: m.end()]), rest
        parent, _, name = path.rpartition("/")
        return self._rel(parent), name

    def _rel(self, path: str) -> str:
        return os.path.relpath(path, self.root).replace(os.sep, "/")

    def _stream_dir(self, dirpath: str) -> tuple[str, str] | None:
        """For a folder inside a stream: (stream, folder relative to the stream)."""
        m = _last_stream_root(dirpath)
        if m is None or (m.end() < len(dirpath) and dirpath[m.end()] != "/"):
            return None
        return self._rel(dirpath[: m.end()]), dirpath[m.end() + 1 :]

    def _prune(self, dirpath: str, name: str) -> bool:
        if name.startswith("."):
            return True
        child = f"{dirpath}/{name}"
        if self._default_pattern and _ACCOUNT_DIR_RE.search(dirpath):
            return name != "CloudTrail"
        inside = self._stream_dir(child)
        if inside is None or not inside[1]:
            return False
        stream, folder = inside
        # Every key below `folder` sorts before folder + "0" ("0" follows "/"), so a folder
        # the mark has passed holds nothing new.
        return self._start_after(stream, True) >= folder + "0"

    def _list(self, limit: int) -> list[TrailFile]:
        out: list[TrailFile] = []
        per_stream: dict[str, int] = {}
        own = str(self.cursor.path.resolve()).replace(os.sep, "/")  # a cursor kept in root
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirpath = dirpath.replace(os.sep, "/")
            dirnames[:] = sorted(d for d in dirnames if not self._prune(dirpath, d))
            for name in sorted(filenames):
                path = f"{dirpath}/{name}"
                if name.startswith(".") or not self.pattern.search(path) or path == own:
                    continue
                stream, key = self._split(path)
                if self._is_done(stream, key) or per_stream.get(stream, 0) >= limit:
                    continue
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                per_stream[stream] = per_stream.get(stream, 0) + 1
                out.append(TrailFile(stream, key, path, st.st_size, str(st.st_mtime_ns)))
        return out

    def _read(self, f: TrailFile) -> bytes:
        try:
            with open(f.location, "rb") as fh:
                data = fh.read(self.max_file_bytes + 1)
                after = os.fstat(fh.fileno())
        except FileNotFoundError:
            raise Vanished(f.location) from None
        # A writer still appending shows as a size or mtime different from the listing.
        if after.st_size != len(data) or (after.st_size, str(after.st_mtime_ns)) != (
            f.size,
            f.version,
        ):
            raise StillWriting(f.location)
        return data
