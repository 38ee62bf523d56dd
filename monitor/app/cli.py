"""The `driftline` command: `detect` (offline batch) and `serve` (the daemon)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence

import orjson

from monitor.app.access_cli import add_access_parsers
from monitor.app.batch import run_batch
from monitor.app.progress import Progress
from monitor.app.serve import add_serve_parser
from monitor.engine import build_detector
from monitor.tfstate import StateError
from monitor.types import Drift
from rules.catalogue import CatalogueError
from streams.files import event_files

EXIT_CLEAN, EXIT_DRIFT, EXIT_ERROR = 0, 1, 2


def _detect(args: argparse.Namespace) -> int:
    try:
        detector = build_detector(args.state, args.severity_rules, args.apply_principal)
        files = event_files(args.events)
    except (StateError, CatalogueError, FileNotFoundError) as exc:
        print(f"driftline: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if not files:
        print("driftline: error: no event files found in " + " ".join(args.events), file=sys.stderr)
        return EXIT_ERROR
    out = sys.stdout.buffer
    found = 0

    def emit(drift: Drift) -> None:
        nonlocal found
        found += 1
        out.write(orjson.dumps(drift.as_dict()) + b"\n")

    total = 0
    for f in files:
        with contextlib.suppress(OSError):
            total += f.stat().st_size
    errors: list[str] = []
    summary = run_batch(detector, files, emit, Progress(total), errors)
    out.flush()
    if not args.quiet:
        for line in summary.lines():
            print(line, file=sys.stderr)
        for line in errors:
            print(f"driftline:   e.g. {line}", file=sys.stderr)
    return EXIT_DRIFT if found else EXIT_CLEAN


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftline",
        description="Real-time Terraform drift monitor: cloud changes checked against tfstate.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    det = sub.add_parser(
        "detect",
        help="check CloudTrail / Falco files against Terraform state (offline)",
        description="Print one drift per line as JSON. Exit 0: no drift, 1: drift, 2: error.",
    )
    det.add_argument(
        "--state",
        action="append",
        required=True,
        metavar="PATH",
        help="a .tfstate file or a directory of them (repeatable)",
    )
    det.add_argument(
        "--severity-rules",
        metavar="PATH",
        help="a YAML file overriding the built-in severity rules",
    )
    det.add_argument(
        "--apply-principal",
        action="append",
        default=[],
        metavar="ARN_OR_NAME",
        help="an identity that runs terraform apply; its calls are not drift",
    )
    det.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    det.add_argument(
        "events",
        nargs="+",
        metavar="EVENTS",
        help="CloudTrail or Falco files or directories (json, json.gz, ndjson)",
    )
    det.set_defaults(func=_detect)
    add_serve_parser(sub)
    add_access_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
