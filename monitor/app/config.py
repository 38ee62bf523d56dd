"""Configuration: defaults < YAML file < environment (DRIFTLINE_*) < flags; validated at start."""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from monitor.auth.keys import is_key_shaped
from monitor.noise import UnmanagedScope
from monitor.outputs import SpecError, parse_spec
from monitor.outputs.service import config_id
from monitor.statesrc import Credentials, SourceError, SourceSpec, parse_source
from monitor.statesrc.spec import has_glob

DEV_ORIGINS = ["http://localhost:5173", "http://localhost:3000"]


LOOPBACK_NAMES = ["localhost", "127.0.0.1", "::1"]
WILDCARD = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    """A bind address only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ConfigError(ValueError):
    """Configuration that cannot work; the message says which setting and why."""


def default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "driftline")


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    metrics_port: int | None = None  # /metrics alone, without a key, on 127.0.0.1
    state: list[str] = field(default_factory=list)
    data_dir: str = field(default_factory=default_data_dir)
    store: str = "sqlite"  # sqlite | memory
    synchronous: str = "FULL"  # SQLite: FULL survives power loss, NORMAL only process crashes
    severity_rules: str | None = None
    apply_principals: list[str] = field(default_factory=list)
    ignore_file: str | None = None  # a .driftignore (driftctl's format), reloaded on change
    # Whether creates no state declares are reported: {default, accounts, regions,
    # resource_types} -> account (all of the account is watched) | state (only the states)
    unmanaged_scope: dict[str, Any] = field(default_factory=dict)
    cors_origins: list[str] = field(default_factory=lambda: list(DEV_ORIGINS))
    auth: bool = True  # API keys on every route but /livez and /readyz (--no-auth: loopback only)
    allowed_hosts: list[str] = field(default_factory=list)  # default: loopback names + host
    admin_key_file: str | None = None  # the first admin key, from a secret (never printed)
    auth_failures_per_minute: int = 10  # bad credentials from one client before 429
    session_hours: float = 12.0  # browser sessions (cookie) last this long
    max_body_bytes: int = 10 * 1024 * 1024
    max_decompressed_bytes: int = 64 * 1024 * 1024  # a gzip ingest body after gunzip
    max_records_per_request: int = 50_000
    max_json_depth: int = 64  # nesting of an ingest record (CloudTrail's is under 20)
    body_read_seconds: float = 30.0  # a request's body must arrive within this
    header_read_seconds: float = 10.0  # a request's headers must arrive within this
    max_ws_message_bytes: int = 64 * 1024
    sse_keepalive_seconds: float = 30.0
    subscriber_queue: int = 2000
    resume_buffer: int = 10000
    state_poll_seconds: float = 2.0  # local files; also how often due sources are checked
    state_remote_poll_seconds: float = 30.0  # s3://, http(s)://, tfc:// sources
    state_max_backoff_seconds: float = 300.0  # a failing source is retried at most this late
    state_s3_endpoint_url: str | None = None  # an S3-compatible store (MinIO, moto)
    state_tfc_address: str | None = None  # Terraform Enterprise (default app.terraform.io)
    event_retention_days: float = 30.0
    max_events: int = 5_000_000
    resolved_retention_days: float = 90.0
    max_drifts: int = 5_000_000
    max_messages: int = 1_000_000
    prune_interval_seconds: float = 60.0
    stats_interval_seconds: float = 10.0
    falco_grpc_target: str | None = None  # unix:///run/falco/falco.sock or host:port (mTLS)
    falco_grpc_mode: str = "sub"
    falco_grpc_ca: str | None = None
    falco_grpc_cert: str | None = None
    falco_grpc_key: str | None = None
    falco_grpc_insecure: bool = False
    falco_grpc_server_name: str | None = None
    trail_dir: str | None = None  # a folder of CloudTrail log files (AWSLogs/...)
    trail_s3_bucket: str | None = None
    trail_s3_prefix: str = ""
    trail_s3_endpoint_url: str | None = None
    trail_poll_seconds: float | None = None  # default: 2 s for a folder, 30 s for S3
    trail_since: str | None = None  # YYYY-MM-DD: skip older days the cursor has never seen
    kafka_bootstrap: str | None = None  # host:port[,host:port]
    kafka_topics: list[str] = field(default_factory=list)  # FORMAT:TOPIC (bare TOPIC = auto)
    kafka_group: str = "driftline"
    kafka_dlq_topic: str | None = None
    kafka_max_batch: int = 2000
    kafka_max_inflight: int = 16  # batches being stored at once (the store groups them)
    kafka_commit_every: int = 5000  # records stored before offsets are committed ...
    kafka_commit_interval: float = 1.0  # ... or seconds, whichever comes first
    kafka_worker: bool = True  # fetch and judge read-only records in a worker process
    kafka_offset_reset: str = "earliest"
    kafka_security_protocol: str | None = None  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None  # prefer DRIFTLINE_KAFKA_SASL_PASSWORD
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    graph_retention_hours: float = 24.0  # events, alerts and drifts leave the live graph
    graph_max_events: int = 50_000
    graph_max_drifts: int = 50_000
    graph_max_alerts: int = 20_000
    graph_window_seconds: float = 600.0  # Falco alert <-> change correlation window
    graph_max_elements: int = 5_000  # the /graph answer cap (nodes + edges)
    k8s_cluster: str | None = None  # the cluster name audit events are attributed to
    # Outputs (forwarders) declared here are created at start and owned by this file; see
    # docs/outputs.md. `public_url` is where receivers link to a drift.
    outputs: list[dict[str, Any]] = field(default_factory=list)
    public_url: str | None = None
    demo: bool = False
    demo_interval_seconds: float = 1.0
    log_level: str = "info"
    log_format: str = "text"  # text | json (one object a line)
    access_log: bool = False  # one line per HTTP request (on at log_level debug too)

    def validate(self) -> Config:
        """Check every setting; ConfigError names the first one that is wrong."""
        if not (0 <= self.port <= 65535):
            raise ConfigError(f"port: {self.port} is not a TCP port (0-65535)")
        if self.metrics_port is not None and not (1 <= self.metrics_port <= 65535):
            raise ConfigError(f"metrics_port: {self.metrics_port} is not a TCP port (1-65535)")
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise ConfigError("metrics_port: must differ from port")
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"{name}: {value!r} must be {' or '.join(allowed)}")
        if self.synchronous.upper() not in ("FULL", "NORMAL"):
            raise ConfigError(f"synchronous: {self.synchronous!r} must be FULL or NORMAL")
        self.synchronous = self.synchronous.upper()
        for name in _POSITIVE:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be positive, got {getattr(self, name)}")
        for name in _POSITIVE_SECONDS:
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name}: must be a positive number of seconds")
        self._check_paths()
        self._check_kafka()
        self._check_access()
        self._check_outputs()
        if self.log_level not in ("critical", "error", "warning", "info", "debug"):
            raise ConfigError(f"log_level: {self.log_level!r} is not a log level")
        return self

    def _check_paths(self) -> None:
        if not self.state and not self.demo:
            raise ConfigError(
                "state: no Terraform state given; pass --state PATH (repeatable), set "
                "DRIFTLINE_STATE, or run with --demo"
            )
        try:
            specs = self.state_specs()
        except SourceError as exc:
            raise ConfigError(f"state: {exc}") from None
        for spec in specs:
            local = spec.kind == "file" and not has_glob(spec.location)
            if local and not Path(spec.location).exists():
                raise ConfigError(f"state: {spec.location}: no such file or directory")
        if self.severity_rules and not Path(self.severity_rules).is_file():
            raise ConfigError(f"severity_rules: {self.severity_rules}: no such file")
        if self.ignore_file and not Path(self.ignore_file).is_file():
            raise ConfigError(f"ignore_file: {self.ignore_file}: no such file")
        try:
            UnmanagedScope.of(self.unmanaged_scope)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.trail_dir and not Path(self.trail_dir).is_dir():
            raise ConfigError(f"trail_dir: {self.trail_dir}: no such directory")
        for name in ("falco_grpc_ca", "falco_grpc_cert", "falco_grpc_key"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ConfigError(f"{name}: {path}: no such file")

    def state_specs(self) -> list[SourceSpec]:
        """The `state` URLs as sources; http(s) credentials may come from Terraform's
        TF_HTTP_USERNAME / TF_HTTP_PASSWORD, tfc:// tokens from TF_TOKEN_<host>."""
        env = os.environ
        http = Credentials(None, env.get("TF_HTTP_USERNAME"), env.get("TF_HTTP_PASSWORD"))
        out = []
        for url in self.state:
            is_http = url.startswith(("http://", "https://")) and "@" not in url
            endpoint = (
                self.state_s3_endpoint_url if url.startswith("s3://") else self.state_tfc_address
            )
            out.append(parse_source(url, http if is_http else None, endpoint))
        return out

    def _check_outputs(self) -> None:
        names: set[str] = set()
        for n, body in enumerate(self.outputs):
            try:
                spec = parse_spec(body, config_id(str(body.get("name", ""))))
            except SpecError as exc:
                raise ConfigError(f"outputs[{n}].{exc}") from None
            if spec.name in names:
                raise ConfigError(f"outputs[{n}].name: {spec.name!r} is declared twice")
            names.add(spec.name)

    def admin_key(self) -> str | None:
        """The first admin key `admin_key_file` holds (ConfigError when unreadable or
        not a key); None without the setting."""
        if self.admin_key_file is None:
            return None
        try:
            secret = Path(self.admin_key_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"admin_key_file: {self.admin_key_file}: {exc.strerror}") from None
        if not is_key_shaped(secret):
            raise ConfigError(
                f"admin_key_file: {self.admin_key_file} does not hold a key (dl_ and 43 "
                "base64url characters; make one with: driftline keys generate)"
            )
        return secret

    def _check_access(self) -> None:
        self.admin_key()
        if not self.auth and not is_loopback(self.host):
            raise ConfigError(
                f"auth: --no-auth is only allowed on a loopback address, not host {self.host!r}; "
                "create keys with `driftline keys create` instead"
            )
        if not self.allowed_hosts:
            self.allowed_hosts = [
                *LOOPBACK_NAMES,
                *([self.host] if self.host not in WILDCARD else []),
            ]

    def _check_kafka(self) -> None:
        if self.kafka_topics and not self.kafka_bootstrap:
            raise ConfigError("kafka_topics: set kafka_bootstrap (--kafka-bootstrap HOST:PORT)")
        if self.kafka_bootstrap and not self.kafka_topics:
            raise ConfigError("kafka_bootstrap: declare topics with --kafka-topic FORMAT:TOPIC")


# Settings with a fixed set of values, and the order validate() checks them in.
_CHOICES = {
    "store": ("sqlite", "memory"),
    "kafka_offset_reset": ("earliest", "latest"),
    "falco_grpc_mode": ("sub", "get"),
    "log_format": ("text", "json"),
}
_POSITIVE = (
    "max_body_bytes",
    "max_decompressed_bytes",
    "max_records_per_request",
    "max_json_depth",
    "max_ws_message_bytes",
    "subscriber_queue",
    "resume_buffer",
    "max_events",
    "max_drifts",
    "max_messages",
    "graph_max_events",
    "graph_max_drifts",
    "graph_max_alerts",
    "graph_max_elements",
    "kafka_max_batch",
    "kafka_max_inflight",
    "kafka_commit_every",
    "auth_failures_per_minute",
)
_POSITIVE_SECONDS = (
    "body_read_seconds",
    "header_read_seconds",
    "sse_keepalive_seconds",
    "state_poll_seconds",
    "state_remote_poll_seconds",
    "state_max_backoff_seconds",
    "demo_interval_seconds",
    "event_retention_days",
    "resolved_retention_days",
    "prune_interval_seconds",
    "stats_interval_seconds",
    "graph_retention_hours",
    "graph_window_seconds",
    "trail_poll_seconds",
    "kafka_commit_interval",
    "session_hours",
)


def _mappings(name: str, value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):  # from the environment: JSON
        value = json.loads(value)
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{name}: expected a list of mappings")
    return [{str(k): v for k, v in item.items()} for item in value]


def _coerce(name: str, value: Any, kind: str) -> Any:
    if kind.endswith(" | None"):
        if value is None or value == "":
            return None
        kind = kind[: -len(" | None")]
    try:
        if kind == "list[dict[str, Any]]":
            return _mappings(name, value)
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            return str(value).lower() in ("1", "true", "yes", "on")
        if kind.startswith("dict["):
            # From the file a mapping; from the environment YAML (or JSON) text.
            found = yaml.safe_load(value) if isinstance(value, str) else value
            if not isinstance(found, dict):
                raise TypeError(name)
            return found
        if kind == "list[str]":
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            return [str(v) for v in value]
        return str(value)
    except (TypeError, ValueError, yaml.YAMLError):
        raise ConfigError(f"{name}: {value!r} is not a valid {kind}") from None


def load_config(file: str | None, env: dict[str, str], flags: dict[str, Any]) -> Config:
    """Merge the three sources; unknown keys in the file are errors, not silently ignored."""
    kinds = {f.name: str(f.type) for f in fields(Config)}
    values: dict[str, Any] = {}
    if file:
        try:
            doc = yaml.safe_load(Path(file).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"config file {file}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {file}: not valid YAML: {exc}") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"config file {file}: expected a mapping of settings")
        for key, value in doc.items():
            name = str(key).replace("-", "_")
            if name not in kinds:
                raise ConfigError(f"config file {file}: unknown setting {key!r}")
            values[name] = _coerce(name, value, kinds[name])
    for name, kind in kinds.items():
        raw = env.get("DRIFTLINE_" + name.upper())
        if raw is not None:
            values[name] = _coerce(name, raw, kind)
    for name, value in flags.items():
        if value is not None and value != [] and name in kinds:
            values[name] = _coerce(name, value, kinds[name])
    return Config(**values).validate()
