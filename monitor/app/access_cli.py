"""`driftline keys create|list|revoke` and `driftline audit verify`, offline on a data dir.

A contract other tools rely on: `keys create` prints the new key alone on stdout (with
`--json`, one object with `key` and the key's fields); messages go to stderr.
"""

from __future__ import annotations

import argparse
import getpass
import secrets
import sys
from pathlib import Path
from typing import Any

import orjson

from monitor.app.config import default_data_dir
from monitor.auth import AuditEntry, Role
from monitor.auth.db import AuthDbError
from monitor.auth.keys import PREFIX, SECRET_BYTES, KeyOpError
from monitor.auth.service import Access
from monitor.clock import utc_now

EXIT_OK, EXIT_BROKEN, EXIT_ERROR = 0, 1, 2


def _access(args: argparse.Namespace) -> Access:
    return Access.open(args.data_dir, utc_now)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _create(args: argparse.Namespace) -> int:
    if not (Path(args.data_dir) / "driftline.db").exists():
        print(
            f"driftline: note: {args.data_dir} holds no Driftline store yet; the key works "
            "for a server started with this --data-dir",
            file=sys.stderr,
        )
    access = _access(args)
    try:
        secret, key = access.keys.create(args.name, args.role, _actor(), args.expires_in)
        access.audit.append_now(
            [
                AuditEntry(
                    "api_key.create",
                    key.id,
                    {"name": key.name, "role": key.role},
                    _actor(),
                    _actor(),
                )
            ]
        )
    finally:
        access.db.close()
    if args.json:
        sys.stdout.write(orjson.dumps({"key": secret, **key.as_dict()}).decode() + "\n")
    else:
        sys.stdout.write(secret + "\n")
        print(
            f"driftline: created {key.role} key {key.id} ({key.name}); it is shown only now",
            file=sys.stderr,
        )
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    access = _access(args)
    try:
        keys = access.keys.list()
    finally:
        access.db.close()
    if args.json:
        sys.stdout.write(orjson.dumps([k.as_dict() for k in keys]).decode() + "\n")
        return EXIT_OK
    now = utc_now()
    print(f"{'ID':22} {'NAME':24} {'ROLE':8} {'STATE':8} {'CREATED':24} LAST USED")
    for k in keys:
        state = k.refusal(now) or "active"
        print(
            f"{k.id:22} {k.name[:24]:24} {k.role:8} {state:8} {k.created_at:24} "
            f"{k.last_used_at or '-'}"
        )
    return EXIT_OK


def _revoke(args: argparse.Namespace) -> int:
    access = _access(args)
    try:
        key = access.keys.revoke(args.id)
        access.audit.append_now(
            [AuditEntry("api_key.revoke", key.id, {"name": key.name}, _actor(), _actor())]
        )
    finally:
        access.db.close()
    print(f"driftline: revoked key {key.id} ({key.name}) at {key.revoked_at}", file=sys.stderr)
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    access = _access(args)
    try:
        result = access.audit.verify(args.expected_min_seq)
    finally:
        access.db.close()
    sys.stdout.write(orjson.dumps(result.as_dict()).decode() + "\n")
    return EXIT_OK if result.status == "ok" else EXIT_BROKEN


def _generate(args: argparse.Namespace) -> int:
    """A new key's secret, stored nowhere: for admin_key_file in a deployment's secret."""
    print(PREFIX + secrets.token_urlsafe(SECRET_BYTES))
    return 0


def _run(func: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except (KeyOpError, AuthDbError) as exc:
            print(f"driftline: error: {exc}", file=sys.stderr)
            return EXIT_ERROR

    return wrapped


def add_access_parsers(sub: Any) -> None:
    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument(
        "--data-dir",
        default=default_data_dir(),
        help="the server's data directory (default ~/.local/share/driftline)",
    )
    keys = sub.add_parser("keys", help="create, list and revoke API keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    create = ksub.add_parser(
        "create",
        parents=[data_dir],
        help="create a key and print it (alone, on stdout; it is never shown again)",
    )
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--expires-in", type=float, metavar="DAYS", help="days until it expires")
    create.add_argument("--json", action="store_true", help="print the key and its fields")
    create.set_defaults(func=_run(_create))
    lst = ksub.add_parser("list", parents=[data_dir], help="every key's fields, never a secret")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=_run(_list))
    gen = ksub.add_parser(
        "generate",
        help="print a new key without storing it (for admin_key_file: a Docker or "
        "Kubernetes secret that becomes the first admin key)",
    )
    gen.set_defaults(func=_generate)
    rev = ksub.add_parser("revoke", parents=[data_dir], help="revoke a key by its id")
    rev.add_argument("id")
    rev.set_defaults(func=_run(_revoke))
    audit = sub.add_parser("audit", help="check the audit log's hash chain")
    asub = audit.add_subparsers(dest="audit_command", required=True)
    ver = asub.add_parser(
        "verify", parents=[data_dir], help="exit 0 when the chain holds, 1 when broken"
    )
    ver.add_argument(
        "--expected-min-seq",
        type=int,
        default=0,
        metavar="N",
        help="the log must reach at least this sequence number (catches deleted newest rows)",
    )
    ver.set_defaults(func=_run(_verify))
