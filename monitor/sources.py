"""Live sources configured for the daemon (Falco gRPC, Kafka, CloudTrail files, S3)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from monitor.config import Config, ConfigError
from rules.catalogue import Catalogue
from streams.decode import Decoded

OnItems = Callable[[list[Decoded]], Awaitable[Any]]


class Source(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def status(self) -> dict[str, Any]: ...


def build_sources(config: Config, on_items: OnItems, catalogue: Catalogue) -> dict[str, Source]:
    """Every source the configuration turns on, keyed by its /health name."""
    sources: dict[str, Source] = {}
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
