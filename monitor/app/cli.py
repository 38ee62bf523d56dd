"""The `driftline` command: `detect` (offline batch) and `serve` (the daemon)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from monitor.app import report_formats
from monitor.app.access_cli import add_access_parsers
from monitor.app.backup import add_backup_parser
from monitor.app.batch import STDIN, run_batch
from monitor.app.config import ConfigError, load_config
from monitor.app.progress import Progress
from monitor.app.report_formats import Found
from monitor.app.serve import add_serve_parser
from monitor.engine import build_detector
from monitor.noise import IgnoreFileError, load_driftignore
from monitor.statesrc import SourceError
from monitor.tfstate import StateError
from monitor.types import Drift
from rules.catalogue import CatalogueError, Severity
from streams.files import event_files

EXIT_CLEAN, EXIT_DRIFT, EXIT_ERROR = 0, 1, 2
SEVERITY_NAMES = tuple(s.value for s in reversed(Severity))


def _read_stdin(events: list[str]) -> tuple[list[str], bytes | None]:
    if STDIN not in events:
        return events, None
    return [e for e in events if e != STDIN], sys.stdin.buffer.read()


def _report(args: argparse.Namespace, found: list[Found]) -> bytes:
    if args.format == "table":
        return report_formats.table(found)
    if args.format == "sarif":
        return report_formats.sarif(found, _version())
    return report_formats.junit(found, args.fail_on)


def _version() -> str:
    try:
        return metadata.version("driftline")
    except metadata.PackageNotFoundError:
        return "0"


def _detect(args: argparse.Namespace) -> int:
    try:
        detector = build_detector(args.state, args.severity_rules, args.apply_principal)
        if args.ignore_file:
            detector.noise.update(ignore=load_driftignore(args.ignore_file))
        paths, stdin = _read_stdin(args.events)
        files = event_files(paths)
    except (StateError, SourceError, CatalogueError, IgnoreFileError, FileNotFoundError) as exc:
        print(f"driftline: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if not files and stdin is None:
        print("driftline: error: no event files found in " + " ".join(args.events), file=sys.stderr)
        return EXIT_ERROR
    out = sys.stdout.buffer
    found: list[Found] = []

    def emit(drift: Drift, position: str) -> None:
        found.append(Found(drift, position))
        if args.format == "jsonl":  # streamed: a CI log shows drifts as they are found
            out.write(report_formats.jsonl(found[-1]))

    total = 0
    for f in files:
        with contextlib.suppress(OSError):
            total += f.stat().st_size
    errors: list[str] = []
    summary = run_batch(detector, files, emit, Progress(total), errors, stdin)
    if args.format != "jsonl":
        out.write(_report(args, found))
    out.flush()
    if not args.quiet:
        for line in summary.lines():
            print(line, file=sys.stderr)
        for line in errors:
            print(f"driftline:   e.g. {line}", file=sys.stderr)
    if summary.undecodable:
        print(
            f"driftline: error: none of the {summary.records} records read could be decoded",
            file=sys.stderr,
        )
        return EXIT_ERROR
    failing = any(report_formats.at_least(f.drift.severity, args.fail_on) for f in found)
    return EXIT_DRIFT if failing else EXIT_CLEAN


def _config_check(args: argparse.Namespace) -> int:
    """Validate a settings file (with DRIFTLINE_* applied) as `serve` would, starting nothing."""
    try:
        config = load_config(args.file, dict(os.environ), {})
    except ConfigError as exc:
        print(f"driftline: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"driftline: {args.file}: ok ({len(config.state)} state source(s), store {config.store})")
    return EXIT_CLEAN


def _add_config_parser(sub: Any) -> None:
    cfg = sub.add_parser("config", help="check a settings file")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    check = cfg_sub.add_parser(
        "check",
        help="validate a settings file without starting",
        description="Exit 0 when `serve --config FILE` would accept the settings, 2 (with the "
        "same message as start-up) when not. DRIFTLINE_* variables apply, as they do at start.",
    )
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=_config_check)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftline",
        description="Real-time Terraform drift monitor: cloud changes checked against tfstate.",
    )
    parser.add_argument("--version", action="version", version=f"driftline {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    det = sub.add_parser(
        "detect",
        help="check CloudTrail / Falco files against Terraform state (offline)",
        description="Print one drift per line as JSON (or --format table, sarif, junit). "
        "Exit 0: no drift (at or above --fail-on), 1: drift, 2: error, or records were read "
        "and none could be decoded.",
    )
    det.add_argument(
        "--state",
        action="append",
        required=True,
        metavar="URL",
        help="a state source (repeatable): a .tfstate file, folder or glob, s3://BUCKET/KEY, "
        "http(s)://..., tfc://ORG/WORKSPACE",
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
    det.add_argument(
        "--ignore-file",
        metavar="PATH",
        help="a .driftignore (driftctl's format): drifts it covers are not reported",
    )
    det.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    det.add_argument(
        "--format",
        choices=report_formats.FORMATS,
        default="jsonl",
        help="jsonl (default, one drift per line), table, sarif (SARIF 2.1.0 for "
        "code-scanning UIs) or junit (JUnit XML for CI test reports)",
    )
    det.add_argument(
        "--fail-on",
        choices=SEVERITY_NAMES,
        metavar="SEVERITY",
        help="exit 1 only for a drift at or above this severity "
        f"({', '.join(SEVERITY_NAMES)}; default: any drift)",
    )
    det.add_argument(
        "events",
        nargs="+",
        metavar="EVENTS",
        help="CloudTrail or Falco files or directories (json, json.gz, ndjson); - reads stdin",
    )
    det.set_defaults(func=_detect)
    add_serve_parser(sub)
    add_access_parsers(sub)
    _add_config_parser(sub)
    add_backup_parser(sub)
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
