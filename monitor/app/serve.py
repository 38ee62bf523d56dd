"""`driftline serve`: the daemon behind uvicorn (embedded default: no Kafka needed)."""

from __future__ import annotations

import argparse
import gc
import os
import socket
import sys
import tempfile
from typing import Any

from monitor.app import logs
from monitor.app.config import ConfigError, load_config
from monitor.app.repeats import quiet_repeats
from monitor.auth.db import AuthDbError
from monitor.noise import IgnoreFileError
from monitor.store import StorageFault
from monitor.tfstate import StateError
from rules.catalogue import CatalogueError


def add_serve_parser(sub: Any) -> None:
    srv = sub.add_parser(
        "serve",
        help="run the daemon: HTTP ingest, REST, WebSocket and SSE",
        description="Settings come from --config FILE, then DRIFTLINE_* environment variables, "
        "then flags (later wins).",
    )
    srv.add_argument("--config", metavar="FILE", help="YAML settings file")
    srv.add_argument(
        "--state",
        action="append",
        metavar="URL",
        help="a state source (repeatable): a .tfstate file, folder or glob, s3://BUCKET/KEY, "
        "http(s)://..., tfc://ORG/WORKSPACE",
    )
    srv.add_argument("--host", help="listen address (default 127.0.0.1)")
    srv.add_argument("--port", type=int, help="listen port (default 8080)")
    srv.add_argument("--data-dir", help="where the store lives (default ~/.local/share/driftline)")
    srv.add_argument(
        "--admin-key-file",
        metavar="FILE",
        help="on first start, this key (a mounted secret) becomes the admin key; not printed",
    )
    srv.add_argument("--store", choices=["sqlite", "memory"], help="store backend")
    srv.add_argument("--severity-rules", metavar="PATH", help="severity rules override (YAML)")
    srv.add_argument(
        "--ignore-file",
        metavar="PATH",
        help="a .driftignore (driftctl's format), reloaded on change: covered drifts are "
        "stored as suppressed, not published",
    )
    srv.add_argument(
        "--apply-principal",
        action="append",
        metavar="ARN_OR_NAME",
        help="an identity that runs terraform apply (repeatable)",
    )
    srv.add_argument(
        "--cors-origin",
        action="append",
        metavar="ORIGIN",
        help="allowed browser origin (repeatable)",
    )
    srv.add_argument(
        "--no-auth",
        dest="auth",
        action="store_false",
        default=None,
        help="serve without API keys (refused unless the host is a loopback address)",
    )
    srv.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="a Host header to serve (repeatable; default: loopback names and --host; * for any)",
    )
    srv.add_argument(
        "--falco-grpc",
        metavar="TARGET",
        dest="falco_grpc_target",
        help="Falco gRPC outputs: unix:///run/falco/falco.sock or host:port (mTLS)",
    )
    srv.add_argument("--falco-grpc-mode", choices=["sub", "get"])
    srv.add_argument("--falco-grpc-ca", metavar="PEM")
    srv.add_argument("--falco-grpc-cert", metavar="PEM")
    srv.add_argument("--falco-grpc-key", metavar="PEM")
    srv.add_argument("--kafka-bootstrap", metavar="HOST:PORT", help="consume Kafka topics")
    srv.add_argument(
        "--kafka-topic",
        action="append",
        metavar="FORMAT:TOPIC",
        help="a topic and its format: cloudtrail, falco, k8s_audit, gcp_audit, "
        "azure_activity or auto (repeatable)",
    )
    srv.add_argument("--kafka-group", metavar="GROUP", help="consumer group (default driftline)")
    srv.add_argument("--kafka-dlq-topic", metavar="TOPIC", help="also send poison records here")
    srv.add_argument(
        "--trail-dir", metavar="DIR", help="watch a folder of CloudTrail log files (AWSLogs/...)"
    )
    srv.add_argument("--trail-s3-bucket", metavar="BUCKET", help="poll CloudTrail logs in S3")
    srv.add_argument("--trail-s3-prefix", metavar="PREFIX")
    srv.add_argument(
        "--demo",
        action="store_true",
        default=None,
        help="bundled demo state and a replayed stream of changes and alerts",
    )
    srv.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    srv.add_argument(
        "--log-format", choices=["text", "json"], help="text (default) or json, one object a line"
    )
    srv.add_argument(
        "--access-log",
        action="store_true",
        default=None,
        help="log every HTTP request (without debug logging)",
    )
    srv.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="also serve /metrics, without a key, on 127.0.0.1:PORT (for a local scraper)",
    )
    srv.set_defaults(func=_serve)


def _announce_access(daemon: Any, where: str) -> None:
    """On first start, create an admin key and show it once (on stderr, never in a log)."""
    if not daemon.config.auth:
        print(
            "driftline: WARNING: --no-auth: anyone who can reach this address can read and "
            "write; keep it on loopback",
            file=sys.stderr,
        )
        return
    given = daemon.config.admin_key()
    created = daemon.access.bootstrap(given)
    if created is not None and given is not None:
        print(
            f"driftline: created the first admin key ({created[1].id}) from admin_key_file",
            file=sys.stderr,
        )
        return
    if created is None:
        print(
            "driftline: API keys required (driftline keys create --data-dir ... --role viewer)",
            file=sys.stderr,
        )
        return
    secret, key = created
    print(
        f"driftline: created the first admin key ({key.id}); it is shown only now, keep it:\n"
        f"    {secret}",
        file=sys.stderr,
    )
    auth = f'-H "Authorization: Bearer {secret}"'
    if daemon.config.demo:
        print(f"driftline: try:  curl -s {auth} {where}/api/v1/drifts", file=sys.stderr)
    print(f"driftline: SSE:  curl -N {auth} {where}/api/v1/stream", file=sys.stderr)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from monitor.app.daemon import Daemon
    from monitor.app.http_server import server_config
    from monitor.app.web_api import web_app

    flags = {
        "state": args.state,
        "host": args.host,
        "port": args.port,
        "data_dir": args.data_dir,
        "admin_key_file": args.admin_key_file,
        "store": args.store,
        "severity_rules": args.severity_rules,
        "ignore_file": args.ignore_file,
        "apply_principals": args.apply_principal,
        "cors_origins": args.cors_origin,
        "auth": args.auth,
        "allowed_hosts": args.allowed_host,
        "demo": args.demo,
        "kafka_bootstrap": args.kafka_bootstrap,
        "kafka_topics": args.kafka_topic,
        "kafka_group": args.kafka_group,
        "kafka_dlq_topic": args.kafka_dlq_topic,
        "trail_dir": args.trail_dir,
        "trail_s3_bucket": args.trail_s3_bucket,
        "trail_s3_prefix": args.trail_s3_prefix,
        "falco_grpc_target": args.falco_grpc_target,
        "falco_grpc_mode": args.falco_grpc_mode,
        "falco_grpc_ca": args.falco_grpc_ca,
        "falco_grpc_cert": args.falco_grpc_cert,
        "falco_grpc_key": args.falco_grpc_key,
        "log_level": args.log_level,
        "log_format": args.log_format,
        "access_log": args.access_log,
        "metrics_port": args.metrics_port,
    }
    try:
        config = load_config(args.config, dict(os.environ), flags)
        if config.demo and args.data_dir is None and "DRIFTLINE_DATA_DIR" not in os.environ:
            # A demo starts from nothing each time unless told where to keep its data.
            config.data_dir = tempfile.mkdtemp(prefix="driftline-demo-")
        daemon = Daemon(config)
    except (
        ConfigError,
        StateError,
        CatalogueError,
        AuthDbError,
        IgnoreFileError,
        StorageFault,
    ) as exc:
        print(f"driftline: error: {exc}", file=sys.stderr)
        return 2
    logs.configure(config.log_level, config.log_format)
    quiet_repeats()
    where = f"http://{config.host}:{config.port}"
    print(
        f"driftline: {len(daemon.detector.index)} managed resources from "
        f"{len(daemon.state.states)} state file(s); store: {config.data_dir}",
        file=sys.stderr,
    )
    _announce_access(daemon, where)
    print(f"driftline: listening on {where}", file=sys.stderr)
    settings = server_config(web_app(daemon), config)
    server = uvicorn.Server(settings)
    sockets = [settings.bind_socket()]
    if config.metrics_port is not None:
        # Loopback only, whatever --host says: this port answers /metrics without a key.
        sockets.append(socket.create_server(("127.0.0.1", config.metrics_port)))
        print(
            f"driftline: metrics on http://127.0.0.1:{config.metrics_port}/metrics", file=sys.stderr
        )
    # The state index, catalogue and graph are long-lived: keep the collector off them.
    gc.freeze()
    server.run(sockets=sockets)
    return 0
