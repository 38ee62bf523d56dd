"""CloudTrail records (and their envelopes) to ChangeEvents."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import orjson

from monitor.types import ChangeEvent, DecodeError
from streams.timefmt import normalise_time

EVENTBRIDGE_DETAIL = "AWS API Call via CloudTrail"
_NESTED = ("requestParameters", "responseElements", "additionalEventData")


def content_id(prefix: str, doc: Any) -> str:
    """A stable id for a record that carries none (same content, same id)."""
    digest = hashlib.blake2b(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS), digest_size=16)
    return f"{prefix}-{digest.hexdigest()}"


def is_cloudtrail_record(doc: Any) -> bool:
    return isinstance(doc, dict) and "eventName" in doc


def iter_records(doc: Any) -> Iterator[Any]:
    """Unwrap `{"Records": [...]}`, JSON arrays and EventBridge envelopes into records."""
    if isinstance(doc, list):
        for item in doc:
            yield from iter_records(item)
        return
    if isinstance(doc, dict):
        records = doc.get("Records")
        if isinstance(records, list):
            yield from records
            return
        if doc.get("detail-type") == EVENTBRIDGE_DETAIL and isinstance(doc.get("detail"), dict):
            yield doc["detail"]
            return
    yield doc


def parse_object(value: Any, what: str) -> dict[str, Any] | None:
    """A nested object that some pipelines (Logstash, Falco's ct.request) stringify."""
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, str):
        if value in ("", "null", "<NA>"):
            return None
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise DecodeError(f"bad {what}", "not a JSON object") from None
        if parsed is None or isinstance(parsed, dict):
            return parsed
    raise DecodeError(f"bad {what}", f"expected an object, got {type(value).__name__}")


def _nested_objects(rec: dict[str, Any]) -> dict[str, Any]:
    """The record with its stringified nested objects parsed (a copy; the input is kept)."""
    for key in _NESTED:
        value = rec.get(key)
        if value is not None and not isinstance(value, dict):
            rec = {**rec, key: parse_object(value, key)}
    return rec


def decode_record(rec: Any) -> ChangeEvent:
    """One CloudTrail record to a ChangeEvent; DecodeError names what is wrong."""
    # Every record of a stream passes here: the common shape (nested objects already parsed)
    # is checked without a loop or a call, stringified ones take the slower path.
    if not isinstance(rec, dict):
        raise DecodeError("not a record", f"expected an object, got {type(rec).__name__}")
    get = rec.get
    name = get("eventName")
    if not isinstance(name, str) or not name:
        raise DecodeError("not a CloudTrail record", "no eventName")
    source = get("eventSource")
    if not isinstance(source, str) or not source:
        raise DecodeError("not a CloudTrail record", "no eventSource")
    when = get("eventTime")
    if when is None:
        when = get("@timestamp")
        if when is None:
            raise DecodeError("no timestamp", "neither eventTime nor @timestamp")
    event_id = get("eventID")
    if not isinstance(event_id, str) or not event_id:
        event_id = content_id("ct", rec)
    req, resp, extra = get("requestParameters"), get("responseElements"), get("additionalEventData")
    if (
        (req is not None and req.__class__ is not dict)
        or (resp is not None and resp.__class__ is not dict)
        or (extra is not None and extra.__class__ is not dict)
    ):
        rec = _nested_objects(rec)
    uid = rec.get("userIdentity")
    if uid is not None and not isinstance(uid, dict):
        raise DecodeError("bad userIdentity", f"expected an object, got {type(uid).__name__}")
    if not (when.__class__ is str and len(when) == 20 and when[10] == "T" and when[19] == "Z"):
        when = normalise_time(when)  # CloudTrail's own form is already canonical
    return ChangeEvent(event_id, source, name, when, rec)
