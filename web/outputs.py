"""`/api/v1/outputs`: outputs (forwarders), their deliveries and tests; secrets write-only."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from monitor.outputs import DELIVERY_STATUSES, OutputConflict, Outputs, SpecError
from web.envelope import ApiError, choice_param, json_object, ok, page_data, page_params
from web.facade import api_of


def _outputs(request: Request) -> Outputs:
    return api_of(request).outputs


def _found(value: Any, what: str) -> Any:
    if value is None:
        raise ApiError("NOT_FOUND", f"{what} not found", 404)
    return value


def _bad(exc: ValueError) -> ApiError:
    if isinstance(exc, OutputConflict):
        return ApiError("CONFLICT", str(exc))
    return ApiError("VALIDATION_ERROR", str(exc))


async def list_outputs(request: Request) -> Response:
    return ok({"outputs": await _outputs(request).views()})


async def get_output(request: Request) -> Response:
    output_id = request.path_params["id"]
    return ok(_found(await _outputs(request).view(output_id), f"Output '{output_id}'"))


async def create_output(request: Request) -> Response:
    """`{name, type, url, secret?, min_severity?, filter?, events?, ...}` -> 201."""
    body = json_object(await request.body(), "body")
    try:
        return ok(await _outputs(request).create(body), status=201)
    except (SpecError, OutputConflict) as exc:
        raise _bad(exc) from None


async def patch_output(request: Request) -> Response:
    output_id = request.path_params["id"]
    body = json_object(await request.body(), "body")
    try:
        view = await _outputs(request).patch(output_id, body)
    except (SpecError, OutputConflict) as exc:
        raise _bad(exc) from None
    return ok(_found(view, f"Output '{output_id}'"))


async def delete_output(request: Request) -> Response:
    output_id = request.path_params["id"]
    try:
        gone = await _outputs(request).delete(output_id)
    except OutputConflict as exc:
        raise _bad(exc) from None
    return ok(_found(gone, f"Output '{output_id}'"))


async def test_output(request: Request) -> Response:
    output_id = request.path_params["id"]
    return ok(_found(await _outputs(request).test(output_id), f"Output '{output_id}'"))


async def test_webhook(request: Request) -> Response:
    """The TFDrift UI's `{url}` (any output body works): one test message, its answer."""
    body = json_object(await request.body(), "body")
    try:
        return ok(await _outputs(request).test_body(body))
    except SpecError as exc:
        raise _bad(exc) from None


async def deliveries(request: Request) -> Response:
    output_id = request.path_params["id"]
    page, limit = page_params(request)
    status = choice_param(request, "status", DELIVERY_STATUSES)
    found = await _outputs(request).deliveries(output_id, status, page, limit)
    items, total = _found(found, f"Output '{output_id}'")
    return ok(page_data("deliveries", items, page, limit, total))


async def retry_delivery(request: Request) -> Response:
    output_id, raw = request.path_params["id"], request.path_params["did"]
    if not raw.isdigit() or len(raw) > 18:
        raise ApiError("NOT_FOUND", f"Delivery '{raw}' not found", 404)
    view = await _outputs(request).retry(output_id, int(raw))
    return ok(_found(view, f"Delivery '{raw}' of output '{output_id}'"))
