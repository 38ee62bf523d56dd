"""State sources: local files and globs, S3, Terraform's HTTP backend, HCP Terraform."""

from monitor.statesrc.backend import Backend, Entry, Unreachable
from monitor.statesrc.sources import PollResult, Source, StateSources, Timing, make_backend
from monitor.statesrc.spec import Credentials, SourceError, SourceSpec, parse_source

__all__ = [
    "Backend",
    "Credentials",
    "Entry",
    "PollResult",
    "Source",
    "SourceError",
    "SourceSpec",
    "StateSources",
    "Timing",
    "Unreachable",
    "make_backend",
    "parse_source",
]
