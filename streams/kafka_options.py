"""Kafka source configuration: one frozen value, topic specs and aiokafka client options."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka.helpers import create_ssl_context

from streams.formats import FORMATS

_SSL_FILE_KEYS = ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password")


def parse_topics(specs: Iterable[str]) -> dict[str, str]:
    """`FORMAT:TOPIC` strings (a bare `TOPIC` means `auto`) to a topic -> format map."""
    topics: dict[str, str] = {}
    for spec in specs:
        fmt, sep, topic = spec.partition(":")
        if not sep:
            fmt, topic = "auto", spec
        fmt, topic = fmt.strip(), topic.strip()
        if fmt not in FORMATS:
            raise ValueError(f"kafka topic {spec!r}: unknown format {fmt!r} (one of {FORMATS})")
        if not topic:
            raise ValueError(f"kafka topic {spec!r}: no topic name")
        if topics.get(topic, fmt) != fmt:
            raise ValueError(f"kafka topic {topic!r} declared with two formats")
        topics[topic] = fmt
    return topics


def client_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    """aiokafka client keyword arguments; ssl_cafile/certfile/keyfile become an ssl_context."""
    opts = dict(options)
    files = {k: opts.pop(k) for k in _SSL_FILE_KEYS if k in opts}
    if files and "ssl_context" not in opts:
        opts["ssl_context"] = create_ssl_context(
            cafile=files.get("ssl_cafile"),
            certfile=files.get("ssl_certfile"),
            keyfile=files.get("ssl_keyfile"),
            password=files.get("ssl_password"),
        )
    return opts


@dataclass(frozen=True)
class KafkaOptions:
    """Where to consume, and how: everything a KafkaSource is configured with."""

    bootstrap: str
    topics: Mapping[str, str]  # topic -> format (see `parse_topics`)
    group_id: str
    dlq_topic: str | None = None
    commit_every: int = 5000  # records stored since the last commit that make one due
    commit_interval: float = 1.0  # seconds after which stored records are committed anyway
    max_batch: int = 2000
    max_inflight: int = 16  # batches handed to on_items before the first has returned
    worker: bool = True  # fetch and triage in a worker process
    poll_interval: float = 0.2
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    commit_timeout: float = 30.0
    probe_interval: float = 5.0
    auto_offset_reset: str = "earliest"
    max_record_bytes: int = 64 * 1024 * 1024  # after gunzip
    client_options: Mapping[str, Any] = field(default_factory=dict)  # security, SASL, TLS
    consumer_options: Mapping[str, Any] = field(default_factory=dict)  # fetch tuning

    def __post_init__(self) -> None:
        if not self.topics:
            raise ValueError("kafka: no topics declared")
        for topic, fmt in self.topics.items():
            if fmt not in FORMATS:
                raise ValueError(f"kafka topic {topic!r}: unknown format {fmt!r}")
        if self.dlq_topic is not None and self.dlq_topic in self.topics:
            raise ValueError(f"kafka: the DLQ topic {self.dlq_topic!r} is also consumed")
        if (
            self.commit_every < 1
            or self.max_batch < 1
            or self.max_inflight < 1
            or self.commit_interval <= 0
        ):
            raise ValueError(
                "kafka: commit_every, max_batch, max_inflight and commit_interval must be > 0"
            )

    @property
    def poll_ms(self) -> int:
        return max(1, int(self.poll_interval * 1000))

    def worker_config(self) -> dict[str, Any]:
        """What the fetch worker process is told (as JSON) when it starts."""
        return {
            "bootstrap": self.bootstrap,
            "topics": dict(self.topics),
            "client": dict(self.client_options),
            "consumer": {
                k: v
                for k, v in self.consumer_options.items()
                if k not in ("group_id", "enable_auto_commit", "auto_offset_reset")
            },
            "auto_offset_reset": self.auto_offset_reset,
            "max_batch": self.max_batch,
            "poll_ms": self.poll_ms,
            "max_record_bytes": self.max_record_bytes,
            "backoff_initial": self.backoff_initial,
            "backoff_max": self.backoff_max,
        }
