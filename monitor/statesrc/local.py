"""State files on disk: a file, a folder of `*.tfstate`, or a glob."""

from __future__ import annotations

import glob
from pathlib import Path

from monitor.statesrc.backend import Entry, Unreachable
from monitor.statesrc.spec import has_glob

# `terraform workspace new X` with the local backend writes terraform.tfstate.d/X/...
WORKSPACE_DIR = "terraform.tfstate.d"


def workspace_of(path: Path) -> str:
    parts = path.parts
    if len(parts) >= 3 and parts[-3] == WORKSPACE_DIR:
        return parts[-2]
    return "default"


class LocalBackend:
    """Files listed by stat (mtime and size are the change signal)."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def _files(self) -> list[Path]:
        if has_glob(self.pattern):
            return sorted(Path(p) for p in glob.glob(self.pattern, recursive=True))
        p = Path(self.pattern)
        if p.is_dir():
            return sorted(p.rglob("*.tfstate"))
        return [p] if p.exists() else []

    def listing(self) -> list[Entry]:
        if not has_glob(self.pattern):
            parent = Path(self.pattern).parent
            if not parent.is_dir():
                raise Unreachable(f"{parent}: no such directory")
        out = []
        for f in self._files():
            try:
                st = f.stat()
            except OSError:
                continue  # removed between the listing and the stat: gone
            if f.is_file():
                signal = f"{st.st_mtime_ns}:{st.st_size}"
                out.append(Entry(str(f), workspace_of(f), signal, st.st_mtime))
        return out

    def fetch(self, entry: Entry) -> bytes:
        try:
            return Path(entry.key).read_bytes()
        except OSError as exc:
            raise Unreachable(f"{entry.key}: cannot read: {exc.strerror or exc}") from None
