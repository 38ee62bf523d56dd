"""Live sources configured for the daemon (Falco gRPC, Kafka, CloudTrail files, S3)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from monitor.app.config import Config, ConfigError
from monitor.types import OnItems, Source
from rules.catalogue import Catalogue

DeadLetter = Callable[..., Awaitable[Any]]

_KAFKA_CLIENT_OPTIONS = (
    ("kafka_security_protocol", "security_protocol"),
    ("kafka_sasl_mechanism", "sasl_mechanism"),
    ("kafka_sasl_username", "sasl_plain_username"),
    ("kafka_sasl_password", "sasl_plain_password"),
    # File names, not an SSLContext: the fetch worker process builds its own from them.
    ("kafka_ssl_cafile", "ssl_cafile"),
    ("kafka_ssl_certfile", "ssl_certfile"),
    ("kafka_ssl_keyfile", "ssl_keyfile"),
)


def build_sources(
    config: Config,
    ingest_as: Callable[[str], OnItems],
    catalogue: Catalogue,
    dead_letter: DeadLetter | None = None,
) -> dict[str, Source]:
    """Every source the configuration turns on, keyed by its /health name; `ingest_as(name)`
    is the ingest call that counts and dead-letters records as that source's."""
    sources: dict[str, Source] = {}
    if config.kafka_bootstrap:
        sources["kafka"] = _kafka(config, ingest_as("kafka"), catalogue, dead_letter)
    if config.falco_grpc_target:
        sources["falco_grpc"] = _falco_grpc(config, ingest_as("falco_grpc"), catalogue)
    try:
        sources.update(_trails(config, ingest_as))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return sources


def _kafka(
    config: Config, on_items: OnItems, catalogue: Catalogue, dead_letter: DeadLetter | None
) -> Source:
    from streams.kafka import KafkaSource
    from streams.kafka_options import KafkaOptions, parse_topics

    client = {
        option: getattr(config, key)
        for key, option in _KAFKA_CLIENT_OPTIONS
        if getattr(config, key)
    }
    try:
        options = KafkaOptions(
            config.kafka_bootstrap or "",
            parse_topics(config.kafka_topics),
            config.kafka_group,
            dlq_topic=config.kafka_dlq_topic,
            max_batch=config.kafka_max_batch,
            max_inflight=config.kafka_max_inflight,
            commit_every=config.kafka_commit_every,
            commit_interval=config.kafka_commit_interval,
            worker=config.kafka_worker,
            auto_offset_reset=config.kafka_offset_reset,
            client_options=client,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return KafkaSource(options, on_items, dead_letter=dead_letter, source_for=catalogue.source_for)


def _falco_grpc(config: Config, on_items: OnItems, catalogue: Catalogue) -> Source:
    from streams.falco_grpc import FalcoGrpcSource

    tls = None
    if config.falco_grpc_ca or config.falco_grpc_cert or config.falco_grpc_key:
        if not (config.falco_grpc_ca and config.falco_grpc_cert and config.falco_grpc_key):
            raise ConfigError(
                "falco_grpc_ca, falco_grpc_cert and falco_grpc_key go together (mutual TLS)"
            )
        tls = (config.falco_grpc_ca, config.falco_grpc_cert, config.falco_grpc_key)
    try:
        return FalcoGrpcSource(
            config.falco_grpc_target or "",
            on_items,
            mode=config.falco_grpc_mode,  # type: ignore[arg-type]
            tls=tls,
            insecure=config.falco_grpc_insecure,
            server_name=config.falco_grpc_server_name,
            source_for=catalogue.source_for,
        )
    except ValueError as exc:
        raise ConfigError(f"falco_grpc_target: {exc}") from None


def _trails(config: Config, ingest_as: Callable[[str], OnItems]) -> dict[str, Source]:
    cursors = Path(config.data_dir) / "cursors"
    options: dict[str, Any] = {}
    if config.trail_poll_seconds is not None:
        options["poll_interval"] = config.trail_poll_seconds
    if config.trail_since:
        options["since"] = config.trail_since
    sources: dict[str, Source] = {}
    if config.trail_dir:
        from streams.trail_dir import TrailDirSource

        sources["trail_dir"] = TrailDirSource(
            Path(config.trail_dir), ingest_as("trail_dir"), cursors / "trail-dir.json", **options
        )
    if config.trail_s3_bucket:
        from streams.trail_s3 import TrailS3Source

        sources["trail_s3"] = TrailS3Source(
            config.trail_s3_bucket,
            config.trail_s3_prefix,
            ingest_as("trail_s3"),
            cursors / "trail-s3.json",
            endpoint_url=config.trail_s3_endpoint_url,
            **options,
        )
    return sources
