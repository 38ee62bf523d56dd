"""Ingest endpoints: Falco http_output / falcosidekick, and every CloudTrail shape.

A body is read within a time limit, may be gzip (`Content-Encoding`), and is parsed (off the
event loop when large) within the record, depth and size limits. The answer says what
happened: 202 with the counts and the first reasons, 422 when no record was accepted, 400 for
a body that is not records, 413 over a limit, 415 for an encoding other than gzip. Records
that fail are kept as dead letters (source `http:<endpoint>`), beside Kafka's.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from monitor.pipeline import IngestResult
from monitor.store import DeadLetter
from streams.body import NOT_JSON, OVER_LIMITS, Body, Reject, decode_body
from streams.documents import InputError, Limits
from streams.formats import DocDecoder, decoder_for
from web.envelope import ApiError, JSONResponse, ok
from web.facade import Api, api_of

log = logging.getLogger("driftline.web.ingest")

# Bodies above this are parsed and judged on a thread, so one large post never holds up the
# requests around it; smaller ones cost less than the hand-over would.
OFFLOAD_BYTES = 256 * 1024
# A large body is stored in slices of this many records, one after another: each slice's
# statements and graph update run on the event loop, and other requests get their turn
# between slices. The answer still comes only once every slice is committed.
SLICE = 250
MAX_DEAD_LETTERS = 1000  # kept per request; the counts in the answer cover every rejection
MAX_REASONS = 20
FALCO_TEXT_HINT = (
    "; Falco posts plain text unless configured for JSON: set `json_output: true` and "
    "`json_include_output_property: true` in falco.yaml"
)


async def read_body(request: Request, limit: int, seconds: float) -> bytes:
    """The request body, refusing (413) anything over `limit` bytes before reading it all,
    and (408) a body that has not fully arrived within `seconds`."""
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
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                total += len(chunk)
                if total > limit:
                    raise ApiError(
                        "PAYLOAD_TOO_LARGE", f"body is over the {limit} byte limit (max_body_bytes)"
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(
            "REQUEST_TIMEOUT",
            f"the body did not arrive within {seconds:g} s (body_read_seconds)",
            408,
        ) from None
    if total > OFFLOAD_BYTES:  # copying megabytes is a pause the loop need not take
        return await asyncio.to_thread(b"".join, chunks)
    return b"".join(chunks)


def _gzipped(request: Request) -> bool:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return True
    if encoding in ("identity", ""):
        return False
    raise ApiError(
        "UNSUPPORTED_MEDIA_TYPE",
        f"Content-Encoding {encoding!r} is not supported; send gzip or no encoding",
    )


def _refused(exc: InputError, what: str, hint: str) -> ApiError:
    if exc.reason in OVER_LIMITS or exc.reason.endswith("too large"):
        return ApiError("PAYLOAD_TOO_LARGE", f"{exc.reason}: {exc.detail}")
    if exc.reason != NOT_JSON:
        return ApiError(
            "VALIDATION_ERROR", f"body refused ({exc.reason}): {exc.detail}; send {what}s"
        )
    return ApiError(
        "VALIDATION_ERROR",
        f"body is not JSON or NDJSON: {exc.detail}; send one {what} as JSON, or NDJSON{hint}",
    )


def _letters(rejects: list[Reject], origin: str, body: bytes, at: str) -> list[DeadLetter]:
    if not rejects:
        return []
    # The same body sent again (a retrying shipper) names the same dead letters: kept once.
    request = "request " + hashlib.blake2b(body, digest_size=8).hexdigest()
    return [
        DeadLetter(origin, request, r.line, r.index, None, r.value, _reason(r), at)
        for r in rejects[:MAX_DEAD_LETTERS]
    ]


def _reason(r: Reject) -> str:
    return f"{r.reason}: {r.detail}" if r.detail else r.reason


def _answer(result: IngestResult, parsed: Body) -> dict[str, Any]:
    data = result.as_dict()
    errors: list[dict[str, Any]] = [
        {"index": r.index, "line": r.line or None, "reason": r.reason, "detail": r.detail}
        for r in parsed.rejects[:MAX_REASONS]
    ]
    for position, reason in result.failures[: MAX_REASONS - len(errors)]:
        errors.append({"record": position, "reason": reason.split(":", 1)[0], "detail": reason})
    data["errors"] = errors
    return data


async def _store(
    api: Api, parsed: Body, origin: str, letters: list[DeadLetter], large: bool
) -> IngestResult:
    items = parsed.items
    result = await api.ingest(items[:SLICE], origin, letters, offload=large)
    for start in range(SLICE, len(items), SLICE):
        result.add(await api.ingest(items[start : start + SLICE], origin, offload=large))
    return result


async def _ingest(
    request: Request, what: str, origin: str, decode: DocDecoder | None = None, hint: str = ""
) -> Response:
    api = api_of(request)
    s = api.settings
    gzipped = _gzipped(request)
    try:
        body = await read_body(request, s.max_body_bytes, s.body_read_seconds)
    except ClientDisconnect:  # the client gave up mid-body: nothing to answer, nothing wrong
        log.debug("%s: client disconnected before the body was complete", request.url.path)
        return Response(status_code=400)
    if not body or body.isspace():
        raise ApiError("VALIDATION_ERROR", f"empty body: send one {what} as JSON, or NDJSON")
    if decode is None:
        decode = decoder_for("auto", api.source_for)
    limits = Limits(
        max_bytes=s.max_decompressed_bytes if gzipped else s.max_body_bytes,
        unit="body",
        max_records=s.max_records,
        max_depth=s.max_depth,
    )
    large = gzipped or len(body) > OFFLOAD_BYTES
    try:
        if large:
            parsed = await asyncio.to_thread(decode_body, body, decode, limits, gzipped)
        else:
            parsed = decode_body(body, decode, limits, gzipped)
    except InputError as exc:
        raise _refused(exc, what, hint) from None
    if large and parsed.rejects:  # hashing a large body is work for a thread too
        letters = await asyncio.to_thread(_letters, parsed.rejects, origin, body, api.now())
    else:
        letters = _letters(parsed.rejects, origin, body, api.now())
    result = await _store(api, parsed, origin, letters, large)
    data = _answer(result, parsed)
    if result.accepted == 0:
        message = f"no record was accepted ({result.rejected} rejected)"
        return JSONResponse(
            {
                "success": False,
                "error": {"code": "UNPROCESSABLE_ENTITY", "message": message},
                "data": data,
            },
            status_code=422,
        )
    return ok(data, status=202)


async def falco_events(request: Request) -> Response:
    return await _ingest(request, "Falco alert", "http:falco", hint=FALCO_TEXT_HINT)


async def cloudtrail(request: Request) -> Response:
    return await _ingest(request, "CloudTrail record or log file", "http:cloudtrail")


async def k8s_audit(request: Request) -> Response:
    """The API server's webhook audit backend: an audit.k8s.io Event or EventList."""
    cluster = api_of(request).settings.k8s_cluster
    decode = decoder_for("k8s_audit", cluster=cluster)
    return await _ingest(request, "audit.k8s.io Event or EventList", "http:k8s_audit", decode)


async def gcp_audit(request: Request) -> Response:
    """Cloud Audit Logs: LogEntry, lists, {entries}, Pub/Sub push and pull bodies."""
    return await _ingest(
        request, "Cloud Audit Logs LogEntry", "http:gcp_audit", decoder_for("gcp_audit")
    )


async def azure_activity(request: Request) -> Response:
    """Azure Activity Log: {records: [...]} exports and EventData / REST shapes."""
    return await _ingest(
        request, "Azure Activity Log record", "http:azure_activity", decoder_for("azure_activity")
    )
