"""`python -m rules`: validate the catalogue, print its coverage and how it compares to the peer.

The peer files (TFDrift-Falco's mappings, `../shared/peer-coverage/*.tsv`) name events the
way the peer spells them; real logs differ in small, known ways (Lambda's date suffixes, GCP's
API version prefix, Azure's case), so names are compared after `peer_key`, and an entry can
list the peer's spelling under `peer:` when it differs in any other way.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rules.catalogue import Catalogue, CatalogueError, EventRule, SkipRule, load_catalogue

PEER_DIR = Path(__file__).resolve().parents[2] / "shared" / "peer-coverage"
PEER_FILES = {
    "aws": "tfdrift-falco-aws.tsv",
    "gcp": "tfdrift-falco-gcp.tsv",
    "azure": "tfdrift-falco-azure.tsv",
}
SOURCE_CONFLICTS = "tfdrift-falco-aws-source-conflicts.tsv"
_LAMBDA_SUFFIX = re.compile(r"20\d{6}(v\d+)?$")
_API_VERSION = re.compile(r"^(v\d+(beta\d*|alpha\d*)?|beta|alpha)\.")


def peer_key(provider: str, name: str) -> str:
    """The spelling-independent form of an event name, for matching against the peer."""
    if provider == "aws":
        return _LAMBDA_SUFFIX.sub("", name)
    if provider == "gcp":
        # google.cloud.x.v1.Service.Method and v1.compute.x.y: drop the version either way.
        name = _API_VERSION.sub("", name)
        return re.sub(r"\.v\d+(beta\d*|alpha\d*)?\.", ".", name).lower()
    return name.lower().removesuffix(":created")


@dataclass(frozen=True)
class PeerRow:
    provider: str
    name: str
    resource_type: str
    extracts: bool
    event_source: str | None = None  # only where the type depends on the service


@dataclass
class Coverage:
    """How one provider's peer names fare against the catalogue."""

    provider: str
    mapped: list[PeerRow] = field(default_factory=list)
    skipped: list[PeerRow] = field(default_factory=list)
    missing: list[PeerRow] = field(default_factory=list)
    peer_extracts: int = 0
    with_attributes: int = 0
    other_type: list[tuple[PeerRow, tuple[str, ...]]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.mapped) + len(self.skipped) + len(self.missing)

    @property
    def names(self) -> int:
        return len({r.name for r in (*self.mapped, *self.skipped, *self.missing)})


def read_peer(directory: Path) -> list[PeerRow]:
    """Every row of the peer files; a name whose type depends on the service (the
    source-conflict file) gives one row per service."""
    rows: list[PeerRow] = []
    for provider, filename in PEER_FILES.items():
        for cols in _tsv(directory / filename):
            rows.append(PeerRow(provider, cols[0], cols[1], len(cols) > 3 and cols[3] == "yes"))
    conflicts = directory / SOURCE_CONFLICTS
    if not conflicts.exists():
        return rows
    extracts = {r.name: r.extracts for r in rows if r.provider == "aws"}
    split: list[PeerRow] = []
    for cols in _tsv(conflicts):
        name, source, rtype = cols[:3]
        split.append(PeerRow("aws", name, rtype, extracts.get(name, False), source))
    names = {r.name for r in split}
    return [r for r in rows if r.provider != "aws" or r.name not in names] + split


def _tsv(path: Path) -> Iterable[list[str]]:
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            yield line.split("\t")


def compare(cat: Catalogue, rows: Sequence[PeerRow]) -> dict[str, Coverage]:
    """Each peer row is mapped (a rule), deliberately skipped, or missing."""
    index: dict[tuple[str, str], list[EventRule | SkipRule]] = {}
    entries: list[EventRule | SkipRule] = [*cat.rules.values(), *cat.skipped.values()]
    for entry in entries:
        keys = {peer_key(entry.provider, entry.event_name)}
        keys.update(peer_key(entry.provider, n) for n in entry.peer_names)
        for key in keys:
            index.setdefault((entry.provider, key), []).append(entry)
    result = {p: Coverage(p) for p in PEER_FILES}
    for row in rows:
        cov = result[row.provider]
        found = [
            e
            for e in index.get((row.provider, peer_key(row.provider, row.name)), [])
            if row.event_source is None or e.event_source == row.event_source
        ]
        rules = [e for e in found if isinstance(e, EventRule)]
        if rules:
            cov.mapped.append(row)
            types = tuple(t for r in rules for t in r.all_types)
            if row.resource_type not in types:
                cov.other_type.append((row, types))
            if row.extracts:
                cov.peer_extracts += 1
                cov.with_attributes += any(r.has_attributes for r in rules)
        elif found:
            cov.skipped.append(row)
        else:
            cov.missing.append(row)
    return result


def report(cat: Catalogue, peer: dict[str, Coverage] | None, verbose: bool) -> list[str]:
    services = {r.event_source for r in cat.rules.values()}
    with_attrs = sum(1 for r in cat.rules.values() if r.has_attributes)
    lines = [
        f"{len(cat)} event names, {len(services)} services, "
        f"{with_attrs} with attribute extraction, {len(cat.resource_types())} resource types, "
        f"{len(cat.skipped)} deliberately not drift"
    ]
    if peer is None:
        return [*lines, "peer coverage: no peer files found (see --peer)"]
    lines.append("peer coverage (TFDrift-Falco's names):")
    for cov in peer.values():
        lines.append(
            f"  {cov.provider:5} {cov.names} names ({cov.total} name/service pairs): "
            f"{len(cov.mapped)} mapped "
            f"({cov.with_attributes} of the {cov.peer_extracts} the peer extracts attributes for "
            f"with attributes), {len(cov.skipped)} deliberately skipped, "
            f"{len(cov.missing)} missing"
        )
        for row in cov.missing:
            lines.append(f"    missing: {row.name} ({row.resource_type})")
        if verbose:
            for row, types in cov.other_type:
                lines.append(f"    other type: {row.name}: peer {row.resource_type}, ours {types}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rules", description=__doc__)
    parser.add_argument("--peer", type=Path, default=PEER_DIR, metavar="DIR")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also list names mapped to another type"
    )
    args = parser.parse_args(argv)
    try:
        cat = load_catalogue()
    except CatalogueError as exc:
        print(f"catalogue error: {exc}", file=sys.stderr)
        return 2
    peer = compare(cat, read_peer(args.peer)) if args.peer.is_dir() else None
    try:
        print("\n".join(report(cat, peer, args.verbose)))
    except BrokenPipeError:  # `python -m rules | head`
        sys.stderr.close()
    return 0
