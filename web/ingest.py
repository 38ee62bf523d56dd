"""Ingest endpoints: Falco http_output / falcosidekick, and every CloudTrail shape."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from monitor.types import DecodeError
from streams.documents import InputError, Limits, decode_bytes
from streams.formats import DocDecoder, decoder_for
from web.envelope import ApiError, ok
from web.facade import api_of


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over `limit` bytes before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiError("BAD_REQUEST", "Content-Length is not a number") from None
        if size > limit:
            raise ApiError(
                "PAYLOAD_TOO_LARGE",
                f"body of {size} bytes is over the {limit} byte limit (max_body_bytes)",
            )
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise ApiError(
                "PAYLOAD_TOO_LARGE", f"body is over the {limit} byte limit (max_body_bytes)"
            )
        chunks.append(chunk)
    return b"".join(chunks)


# The body's size is checked as it is read (max_body_bytes); bodies are never gunzipped.
BODY_LIMITS = Limits(max_bytes=1 << 62, unit="body", gzip=False)


async def _ingest(request: Request, what: str, decode: DocDecoder | None = None) -> Response:
    api = api_of(request)
    body = await read_body(request, api.settings.max_body_bytes)
    if not body.strip():
        raise ApiError("VALIDATION_ERROR", f"empty body: send one {what} as JSON, or NDJSON")
    if decode is None:
        decode = decoder_for("auto", api.source_for)
    items = decode_bytes(body, decode, BODY_LIMITS)
    whole = items[0] if items else None
    if isinstance(whole, InputError) and whole.line is None:
        raise ApiError("VALIDATION_ERROR", f"body is not JSON or NDJSON: {whole.detail}")
    if not items:
        raise ApiError("VALIDATION_ERROR", "body holds no records")
    first_errors = [
        {"index": n, "reason": i.reason, "detail": i.detail}
        for n, i in enumerate(items)
        if isinstance(i, DecodeError)
    ][:20]
    result = await api.ingest(items)
    data = result.as_dict()
    data["errors"] = first_errors
    return ok(data, status=202)


async def falco_events(request: Request) -> Response:
    return await _ingest(request, "Falco alert")


async def cloudtrail(request: Request) -> Response:
    return await _ingest(request, "CloudTrail record or log file")


async def k8s_audit(request: Request) -> Response:
    """The API server's webhook audit backend: an audit.k8s.io Event or EventList."""
    cluster = api_of(request).settings.k8s_cluster
    decode = decoder_for("k8s_audit", cluster=cluster)
    return await _ingest(request, "audit.k8s.io Event or EventList", decode)


async def gcp_audit(request: Request) -> Response:
    """Cloud Audit Logs: LogEntry, lists, {entries}, Pub/Sub push and pull bodies."""
    return await _ingest(request, "Cloud Audit Logs LogEntry", decoder_for("gcp_audit"))


async def azure_activity(request: Request) -> Response:
    """Azure Activity Log: {records: [...]} exports and EventData / REST shapes."""
    return await _ingest(request, "Azure Activity Log record", decoder_for("azure_activity"))
