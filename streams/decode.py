"""Any supported document to decoded items: CloudTrail changes, Falco alerts, or errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from monitor.types import Decoded, DecodeError
from streams.cloudtrail import decode_record, is_cloudtrail_record, iter_records
from streams.falco import SourceFor, decode_alert, is_falco_alert, no_source


def decode_document(doc: Any, source_for: SourceFor = no_source) -> Iterator[Decoded]:
    """Every record in a document; a bad record yields its DecodeError and decoding goes on."""
    if isinstance(doc, dict) and "eventName" in doc:
        # One CloudTrail record, the common case (Kafka, EventBridge-less webhooks): skip the
        # envelope machinery.
        try:
            yield decode_record(doc)
        except DecodeError as exc:
            yield exc
        return
    for rec in iter_records(doc):
        try:
            if is_falco_alert(rec):
                yield decode_alert(rec, source_for)
            elif is_cloudtrail_record(rec):
                yield decode_record(rec)
            else:
                keys = ", ".join(sorted(rec)[:5]) if isinstance(rec, dict) else type(rec).__name__
                yield DecodeError("unknown record shape", f"neither CloudTrail nor Falco ({keys})")
        except DecodeError as exc:
            yield exc
