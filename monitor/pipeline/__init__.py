"""The pipeline: ingest stages, group commit to the store, publishing to the hub."""

from monitor.pipeline.pipeline import Pipeline
from monitor.pipeline.publish import PendingMessage, Publisher
from monitor.pipeline.stages import IngestResult, Stage
from monitor.types import Decoded

__all__ = [
    "Decoded",
    "IngestResult",
    "PendingMessage",
    "Pipeline",
    "Publisher",
    "Stage",
]
