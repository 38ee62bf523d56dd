"""Strict query strings on every GET: unknown or repeated parameters are a 400 naming them."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.routing import Route

from monitor.app.config import Config
from tests.support.asgi import in_memory
from web.app import routes
from web.openapi import SPEC
from web.query import query_names

pytestmark = pytest.mark.timeout(60)
DEMO_STATE = Path(__file__).parent.parent / "monitor/app/demo/demo.tfstate"
GETS = [
    "/api/v1/drifts",
    "/api/v1/events",
    "/api/v1/dead-letters",
    "/api/v1/state/resources",
    "/api/v1/graph",
    "/api/v1/graph/nodes",
    "/api/v1/graph/edges",
    "/api/v1/stats",
    "/health",
]


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(state=[str(DEMO_STATE)], data_dir=str(tmp_path / "data"), state_poll_seconds=60)


async def test_a_typo_is_a_400_naming_it_everywhere(config: Config) -> None:
    async with in_memory(config) as srv:
        for path in GETS:
            reply = await srv.client.get(path, params={"serverity": "critical"})
            assert reply.status_code == 400, path
            assert "serverity" in reply.json()["error"]["message"], path


async def test_a_repeated_single_filter_is_refused_everywhere(config: Config) -> None:
    async with in_memory(config) as srv:
        for path in ("/api/v1/drifts", "/api/v1/events"):
            reply = await srv.client.get(path + "?severity=high&severity=critical")
            assert reply.status_code == 400
            assert "severity" in reply.json()["error"]["message"]
        for path in ("/api/v1/graph/nodes", "/api/v1/graph"):
            reply = await srv.client.get(path + "?since=1&since=2")
            assert reply.status_code == 400


async def test_a_multi_valued_filter_takes_repeats_as_alternatives(config: Config) -> None:
    async with in_memory(config) as srv:
        repeated = await srv.client.get("/api/v1/graph/nodes?type=resource&type=actor&limit=1000")
        comma = await srv.client.get("/api/v1/graph/nodes?type=resource,actor&limit=1000")
        assert repeated.status_code == comma.status_code == 200
        assert repeated.json()["data"]["total"] == comma.json()["data"]["total"] > 0


async def test_out_of_range_numbers_are_400(config: Config) -> None:
    async with in_memory(config) as srv:
        for url in (
            "/api/v1/drifts?limit=1001",
            "/api/v1/events?page=0",
            "/api/v1/graph?limit=5001",
            "/api/v1/graph/nodes?page=99999999999999999999",
        ):
            assert (await srv.client.get(url)).status_code == 400, url


def _strict(endpoint: object) -> bool:
    while endpoint is not None:
        if getattr(endpoint, "strict_query", False):
            return True
        endpoint = getattr(endpoint, "__wrapped__", None)
    return False


def test_every_get_route_checks_its_query_against_the_spec() -> None:
    for route in routes():
        if isinstance(route, Route) and route.methods and "GET" in route.methods:
            assert route.path.replace(":path}", "}") in SPEC["paths"], route.path
            assert _strict(route.endpoint), route.path
    assert query_names(SPEC, "/api/v1/graph/nodes")["type"] is True
    assert query_names(SPEC, "/api/v1/drifts")["severity"] is False
    assert "ticket" in query_names(SPEC, "/api/v1/stream")  # a credential, not a filter


async def test_credentials_come_before_parameters(config: Config) -> None:
    async with in_memory(config) as srv:
        anonymous = await srv.client.get(
            "/api/v1/drifts?serverity=critical", headers={"Authorization": ""}
        )
        assert anonymous.status_code == 401
