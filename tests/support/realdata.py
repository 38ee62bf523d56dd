"""Where the shared real data lives, and how to read its dataset wrappers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
REALDATA = Path(os.environ.get("DRIFTLINE_REALDATA", ROOT.parent / "shared" / "realdata"))
CLOUDTRAIL = REALDATA / "cloudtrail"
TFSTATE = REALDATA / "tfstate"
FALCO = REALDATA / "falco_alerts"
K8S = REALDATA / "k8s_audit"


def unwrap(doc: Any) -> Any:
    """The dataset's `{"_source_repo": ..., "record"|"alert": {...}}` lines hold one real item."""
    if isinstance(doc, dict) and "_source_repo" in doc:
        return doc.get("record", doc.get("alert", doc))
    return doc


def cloudtrail_records(folder: str) -> list[dict[str, Any]]:
    """Every record of one cloudtrail/ folder, in file order."""
    out: list[dict[str, Any]] = []
    for path in sorted((CLOUDTRAIL / folder).iterdir()):
        data = path.read_bytes()
        try:
            docs = [orjson.loads(data)]
        except orjson.JSONDecodeError:
            docs = [orjson.loads(line) for line in data.splitlines() if line.strip()]
        for doc in docs:
            doc = unwrap(doc)
            if isinstance(doc, dict) and "Records" in doc:
                out.extend(doc["Records"])
            elif isinstance(doc, list):
                out.extend(doc)
            else:
                out.append(doc)
    return out


def falco_alerts() -> Iterator[tuple[str, Any]]:
    """(position, alert) for every line of every falco_alerts/ file."""
    for path in sorted(FALCO.iterdir()):
        for n, line in enumerate(path.read_bytes().splitlines(), 1):
            if line.strip():
                yield f"{path.name}:{n}", unwrap(orjson.loads(line))
