"""schemathesis against /openapi.json, the app in memory: the document and the server agree."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance

from monitor.app.config import Config
from monitor.app.web_api import web_app
from tests.support.asgi import admin_key, in_memory, make_daemon
from web.openapi import SPEC

pytestmark = pytest.mark.timeout(120)
DEMO_STATE = Path(__file__).parent.parent / "monitor/app/demo/demo.tfstate"
# Long-lived streams: their conformance is the SSE / WebSocket tests' job. A new state
# source would be polled at whatever path or URL was generated: not something to fuzz.
NOISE_PATHS = (
    "/api/v1/suppressions",
    "/api/v1/custom-rules",
    "/api/v1/disabled-rules",
    "/api/v1/apply-principals",
)
# Outputs send to whatever URL was generated: their test endpoints are not fuzzed, and a
# create or patch needs a reachable http(s) URL, which no schema can say.
OUTPUT_PATHS = ("/api/v1/outputs",)
SKIPPED = {
    ("POST", "/api/v1/outputs/{id}/test"),
    ("POST", "/api/v1/config/webhooks/test"),
    ("POST", "/api/v1/outputs/{id}/deliveries/{did}/retry"),
    ("GET", "/ws"),
    ("GET", "/api/v1/stream"),
    ("POST", "/api/v1/state-sources"),
}


def _check(operation: schemathesis.APIOperation, examples: int, key: str) -> None:
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]

    # A random JSON object fits the ingest schema but is no record: the answer is a 422 with
    # the counts by design, so "valid data is accepted" cannot hold there.
    ingest = operation.method.upper() == "POST" and (
        "/ingest/" in operation.path or "/falco/" in operation.path
    )
    # Rules the document cannot state in OpenAPI's terms: `suppressed=true` on /drifts takes
    # page and limit only; a noise-control item needs a meaningful match (a custom rule needs a
    # severity or a category, globs must parse). Every other check still runs on them.
    combined = (operation.method.upper(), operation.path) == ("GET", "/api/v1/drifts") or (
        operation.method.upper() in ("POST", "PATCH", "DELETE")
        and operation.path.startswith(NOISE_PATHS + OUTPUT_PATHS)
    )
    excluded = [positive_data_acceptance] if ingest or combined else []

    @given(case=st.one_of(*(operation.as_strategy(generation_mode=m) for m in modes)))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, excluded_checks=excluded)

    run()


# A fuzz run over every operation (about 10 s): the slow tier, to keep the fast one fast.
@pytest.mark.integration
def test_the_api_keeps_to_its_document(tmp_path: Path) -> None:
    config = Config(
        state=[str(DEMO_STATE)],
        data_dir=str(tmp_path),
        state_poll_seconds=60,
        allowed_hosts=["testserver"],  # the Host schemathesis' ASGI client sends
        # Its bad-credential probes are many: they must meet 401s, not the 429 that follows.
        auth_failures_per_minute=1_000_000,
    )
    daemon = make_daemon(config)
    key = admin_key(daemon)
    # schemathesis runs the app's lifespan (the daemon) on an event loop thread of its own.
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", web_app(daemon), headers={"Authorization": f"Bearer {key}"}
    )
    failures: dict[str, str] = {}
    try:
        for result in schema.get_all_operations():
            operation = result.ok()
            if (operation.method.upper(), operation.path) in SKIPPED:
                continue
            try:
                _check(operation, examples=8, key=key)
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup
                failures[operation.label] = str(exc)[:1500]
    finally:
        asgi.shutdown_lifespans()
    assert not failures, "\n\n".join(f"{k}: {v}" for k, v in failures.items())


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


async def test_a_405_says_which_methods_the_path_has(tmp_path: Path) -> None:
    config = Config(state=[str(DEMO_STATE)], data_dir=str(tmp_path), state_poll_seconds=60)
    async with in_memory(config) as srv:
        for path, item in SPEC["paths"].items():
            if path == "/ws":
                continue
            documented = {m.upper() for m in item}
            url = path.replace("{id}", "x").replace("{address}", "x")
            routed, allowed = set(), set()
            for method in set(METHODS) - documented:
                reply = await srv.client.request(method, url)
                if reply.status_code != 405:
                    # A templated sibling routes it (PATCH /drifts/summary is /drifts/{id}).
                    routed.add(method)
                    continue
                allowed = {m.strip() for m in reply.headers["allow"].split(",")} - {"HEAD"}
                assert documented <= allowed, (method, path, allowed)
            assert allowed == documented | routed or not allowed, (path, allowed, routed)
