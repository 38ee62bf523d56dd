"""Live sources configured for the daemon (Falco gRPC, Kafka, CloudTrail files, S3)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from monitor.app.config import Config, ConfigError
from monitor.types import OnItems, Source
from rules.catalogue import Catalogue


def build_sources(
    config: Config,
    on_items: OnItems,
    catalogue: Catalogue,
    dead_letter: Callable[..., Awaitable[Any]] | None = None,
) -> dict[str, Source]:
    """Every source the configuration turns on, keyed by its /health name."""
    sources: dict[str, Source] = {}
    if config.kafka_bootstrap:
        from streams.kafka import KafkaSource, parse_topics

        client: dict[str, Any] = {}
        for key, option in (
            ("kafka_security_protocol", "security_protocol"),
            ("kafka_sasl_mechanism", "sasl_mechanism"),
            ("kafka_sasl_username", "sasl_plain_username"),
            ("kafka_sasl_password", "sasl_plain_password"),
        ):
            if getattr(config, key):
                client[option] = getattr(config, key)
        # File names, not an SSLContext: the fetch worker process builds its own from them.
        for key, option in (
            ("kafka_ssl_cafile", "ssl_cafile"),
            ("kafka_ssl_certfile", "ssl_certfile"),
            ("kafka_ssl_keyfile", "ssl_keyfile"),
        ):
            if getattr(config, key):
                client[option] = getattr(config, key)
        try:
            sources["kafka"] = KafkaSource(
                config.kafka_bootstrap,
                parse_topics(config.kafka_topics),
                config.kafka_group,
                on_items,
                dead_letter=dead_letter,
                dlq_topic=config.kafka_dlq_topic,
                max_batch=config.kafka_max_batch,
                max_inflight=config.kafka_max_inflight,
                commit_every=config.kafka_commit_every,
                commit_interval=config.kafka_commit_interval,
                worker=config.kafka_worker,
                auto_offset_reset=config.kafka_offset_reset,
                source_for=catalogue.source_for,
                client_options=client,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if config.falco_grpc_target:
        from streams.falco_grpc import FalcoGrpcSource

        tls = None
        if config.falco_grpc_ca or config.falco_grpc_cert or config.falco_grpc_key:
            if not (config.falco_grpc_ca and config.falco_grpc_cert and config.falco_grpc_key):
                raise ConfigError(
                    "falco_grpc_ca, falco_grpc_cert and falco_grpc_key go together (mutual TLS)"
                )
            tls = (config.falco_grpc_ca, config.falco_grpc_cert, config.falco_grpc_key)
        try:
            sources["falco_grpc"] = FalcoGrpcSource(
                config.falco_grpc_target,
                on_items,
                mode=config.falco_grpc_mode,  # type: ignore[arg-type]
                tls=tls,
                insecure=config.falco_grpc_insecure,
                server_name=config.falco_grpc_server_name,
                source_for=catalogue.source_for,
            )
        except ValueError as exc:
            raise ConfigError(f"falco_grpc_target: {exc}") from None
    cursors = Path(config.data_dir) / "cursors"
    trail_options: dict[str, Any] = {}
    if config.trail_poll_seconds is not None:
        trail_options["poll_interval"] = config.trail_poll_seconds
    if config.trail_since:
        trail_options["since"] = config.trail_since
    try:
        if config.trail_dir:
            from streams.trail_dir import TrailDirSource

            sources["trail_dir"] = TrailDirSource(
                Path(config.trail_dir), on_items, cursors / "trail-dir.json", **trail_options
            )
        if config.trail_s3_bucket:
            from streams.trail_s3 import TrailS3Source

            sources["trail_s3"] = TrailS3Source(
                config.trail_s3_bucket,
                config.trail_s3_prefix,
                on_items,
                cursors / "trail-s3.json",
                endpoint_url=config.trail_s3_endpoint_url,
                **trail_options,
            )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return sources
