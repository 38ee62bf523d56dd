"""The graph API (in memory; its live topic over a real uvicorn), fed through the real ingest
endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest

from graph.model import GraphLimits
from monitor.app.config import Config
from monitor.app.daemon import Daemon
from rules import load_catalogue
from tests.support.asgi import in_memory
from tests.support.graph_data import INSTANCE, stratus_alerts, stratus_state
from tests.support.live import SSEReader, running
from tests.support.realdata import TFSTATE, cloudtrail_records

pytestmark = pytest.mark.timeout(60)
LIMITS = GraphLimits(retention_seconds=400 * 86400, max_elements=2_000)
TAG = 'aws_ec2_tag.private_subnet_tags["subnet-04746109f33098115"]'


@contextlib.asynccontextmanager
async def graph_server(
    tmp_path: Path, serve: Callable[[Config], Any] = in_memory
) -> AsyncIterator[tuple[Daemon, httpx.AsyncClient]]:
    """Driftline (in memory, or `running` on a free port) over the stratus state and the
    Bedrock VPC/EKS states."""
    state = tmp_path / "stratus.tfstate"
    state.write_text(json.dumps(stratus_state(load_catalogue())))
    config = Config(
        state=[str(state), str(TFSTATE / "wendiblac-project-bedrock")],
        data_dir=str(tmp_path / "data"),
        store="memory",
        state_poll_seconds=60,
        graph_retention_hours=LIMITS.retention_seconds / 3600,
        graph_max_elements=LIMITS.max_elements,
    )
    async with serve(config) as srv:
        yield srv.daemon, srv.client


async def _feed(client: httpx.AsyncClient) -> None:
    records = cloudtrail_records("stratus_detonation_logs")
    body = b"\n".join(orjson.dumps(r) for r in records)
    resp = await client.post("/api/v1/ingest/cloudtrail", content=body)
    assert resp.status_code == 202 and resp.json()["data"]["drifts"] > 10
    body = b"\n".join(orjson.dumps(a) for a in stratus_alerts())
    resp = await client.post("/api/v1/falco/events", content=body)
    assert resp.status_code == 202 and resp.json()["data"]["falco_alerts"] == 5


async def _get(client: httpx.AsyncClient, url: str, status: int = 200) -> Any:
    resp = await client.get(url)
    assert resp.status_code == status, (url, resp.text)
    body = resp.json()
    assert body["success"] is (status == 200)
    return body["data"] if status == 200 else body["error"]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[Daemon, httpx.AsyncClient]]:
    async with graph_server(tmp_path) as srv:
        await _feed(srv[1])
        yield srv


async def test_the_whole_graph_as_cytoscape_elements(server: Any) -> None:
    _, client = server
    data = await _get(client, "/api/v1/graph")
    assert not data["truncated"]
    nodes = {n["data"]["id"]: n["data"] for n in data["nodes"]}
    assert {"resource", "drift", "event", "falco", "actor", "unmanaged"} <= {
        n["type"] for n in nodes.values()
    }
    assert all({"id", "label", "type"} <= set(n) for n in nodes.values())
    labels = set()
    for e in data["edges"]:
        d = e["data"]
        assert {"id", "source", "target", "label"} <= set(d)
        assert d["source"] in nodes and d["target"] in nodes
        labels.add(d["label"])
    assert labels == {"depends_on", "performed", "caused", "affects", "related", "followed_by"}
    stats = await _get(client, "/api/v1/graph/stats")
    assert stats["total_nodes"] == len(nodes) == data["total_nodes"]
    assert stats["total_edges"] == len(data["edges"])
    assert sum(stats["node_types"].values()) == stats["total_nodes"]

    small = await _get(client, "/api/v1/graph?limit=25")
    assert small["truncated"] and len(small["nodes"]) + len(small["edges"]) <= 25
    only = await _get(client, "/api/v1/graph?type=drift,falco&type=event")
    assert {n["data"]["type"] for n in only["nodes"]} == {"drift", "falco", "event"}
    window = await _get(
        client, "/api/v1/graph?since=2024-08-01T12:00:00Z&until=2024-08-01T12:30:00Z"
    )
    timed = [n["data"] for n in window["nodes"] if n["data"]["type"] in ("event", "drift")]
    assert timed and all("2024-08-01T12:00" <= n["time"] <= "2024-08-01T12:30" for n in timed)
    for bad in ("limit=0", f"limit={LIMITS.max_elements + 1}", "limit=x", "type=vertex"):
        err = await _get(client, f"/api/v1/graph?{bad}", 400)
        assert err["code"] == "VALIDATION_ERROR"


async def test_node_and_edge_pages(server: Any) -> None:
    _, client = server
    stats = await _get(client, "/api/v1/graph/stats")
    seen: list[str] = []
    page = 1
    while True:
        data = await _get(client, f"/api/v1/graph/nodes?page={page}&limit=9")
        assert data["total"] == stats["total_nodes"] and data["limit"] == 9
        if not data["nodes"]:
            assert page == data["pages"] + 1
            break
        seen.extend(n["data"]["id"] for n in data["nodes"])
        page += 1
    assert len(seen) == len(set(seen)) == stats["total_nodes"]
    big = await _get(client, "/api/v1/graph/nodes?limit=1000")
    assert len(big["nodes"]) == min(1000, stats["total_nodes"])
    drifts = await _get(client, "/api/v1/graph/nodes?type=drift&limit=5&page=2")
    assert drifts["total"] == stats["node_types"]["drift"]
    assert [n["data"]["type"] for n in drifts["nodes"]] == ["drift"] * 5
    window = await _get(
        client, "/api/v1/graph/nodes?since=2024-08-01T13:00:00Z&until=2024-08-01T14:00:00Z"
    )
    assert window["total"] == len(window["nodes"]) > 0
    assert all("2024-08-01T13" <= n["data"]["time"] < "2024-08-01T14" for n in window["nodes"])

    edges: list[str] = []
    page = 1
    while True:
        data = await _get(client, f"/api/v1/graph/edges?page={page}&limit=50")
        if not data["edges"]:
            break
        edges.extend(e["data"]["id"] for e in data["edges"])
        page += 1
    assert len(edges) == len(set(edges)) == stats["total_edges"]
    related = await _get(client, "/api/v1/graph/edges?type=related&limit=1000")
    assert related["total"] == stats["edge_types"]["related"] == len(related["edges"])

    for url in (
        "/api/v1/graph/nodes?limit=1001",
        "/api/v1/graph/nodes?limit=0",
        "/api/v1/graph/nodes?page=0",
        "/api/v1/graph/nodes?page=two",
        "/api/v1/graph/nodes?type=edge",
        "/api/v1/graph/edges?type=drift",
        "/api/v1/graph/nodes?since=yesterday",
    ):
        err = await _get(client, url, 400)
        assert err["code"] == "VALIDATION_ERROR", url
    # An inverted window is empty, as on /drifts and /events (the document cannot state it).
    inverted = "/api/v1/graph/nodes?since=2024-08-02T00:00:00Z&until=2024-08-01T00:00:00Z"
    assert (await _get(client, inverted))["total"] == 0


async def test_one_node_its_neighbours_impact_and_paths(server: Any) -> None:
    _, client = server
    tag = await _get(client, "/api/v1/graph/nodes/" + quote(f"resource:{TAG}", safe=""))
    assert tag["data"]["address"] == TAG and tag["edges_out"] == {"depends_on": 1}
    vpc = await _get(client, "/api/v1/graph/nodes/aws_vpc.main")  # a bare address works too
    assert vpc["data"]["id"] == "resource:aws_vpc.main"
    assert vpc["blast_radius"]["count"] > 4

    impact = await _get(client, "/api/v1/graph/impact/resource:aws_vpc.main?depth=2")
    assert impact["count"] == vpc["blast_radius"]["count"]
    at = {n["data"]["address"]: n["data"]["distance"] for n in impact["nodes"]}
    assert at["aws_subnet.public[0]"] == 1 and at[TAG] == 2
    one = await _get(client, "/api/v1/graph/impact/aws_vpc.main?depth=1")
    assert one["count"] < impact["count"]

    drifts = await _get(client, "/api/v1/graph/nodes?type=drift&limit=1000")
    modify = next(
        n["data"] for n in drifts["nodes"] if n["data"]["event_name"] == "ModifyInstanceAttribute"
    )
    near = await _get(client, f"/api/v1/graph/neighbors/{modify['id']}")
    assert near["depth"] == 1
    kinds = {n["data"]["type"] for n in near["nodes"]}
    assert kinds == {"drift", "event", "resource", "falco"}
    wide = await _get(client, f"/api/v1/graph/neighbors/{modify['id']}?depth=3")
    assert len(wide["nodes"]) > len(near["nodes"]) and "actor" in {
        n["data"]["type"] for n in wide["nodes"]
    }
    actor = next(n["data"]["id"] for n in wide["nodes"] if n["data"]["type"] == "actor")
    instance = next(n["data"]["id"] for n in near["nodes"] if n["data"]["type"] == "resource")
    assert modify["resource_id"] == INSTANCE and instance.startswith("resource:aws_instance.")
    path = await _get(
        client, f"/api/v1/graph/path?from={quote(actor, safe='')}&to={quote(instance, safe='')}"
    )
    assert path["found"] and [n["data"]["type"] for n in path["nodes"]] == [
        "actor",
        "event",
        "drift",
        "resource",
    ]
    apart = await _get(client, f"/api/v1/graph/path?from={quote(instance)}&to=aws_vpc.main")
    assert apart == {
        "from": instance,
        "to": "resource:aws_vpc.main",
        "found": False,
        "length": None,
        "nodes": [],
        "edges": [],
    }

    for url in (
        "/api/v1/graph/nodes/resource:aws_vpc.nope",
        "/api/v1/graph/neighbors/nope",
        "/api/v1/graph/impact/nope",
        f"/api/v1/graph/path?from=nope&to={quote(instance)}",
    ):
        err = await _get(client, url, 404)
        assert err["code"] == "NOT_FOUND" and "nope" in err["message"], url
    for url in (
        f"/api/v1/graph/neighbors/{modify['id']}?depth=4",
        f"/api/v1/graph/neighbors/{modify['id']}?depth=0",
        f"/api/v1/graph/neighbors/{modify['id']}?depth=deep",
        "/api/v1/graph/impact/aws_vpc.main?depth=11",
        f"/api/v1/graph/impact/{modify['id']}",  # not a resource
        "/api/v1/graph/path?from=aws_vpc.main",
    ):
        err = await _get(client, url, 400)
        assert err["code"] == "VALIDATION_ERROR", url


@pytest.mark.integration
async def test_updates_are_published_on_the_graph_topic(tmp_path: Path) -> None:
    async with (
        graph_server(tmp_path, running) as (_, client),
        client.stream("GET", "/api/v1/stream?topics=graph") as sse,
    ):
        reader = SSEReader(sse)
        await asyncio.wait_for(reader.until("connected"), 10)
        await _feed(client)
        _, event, delta = await asyncio.wait_for(reader.until("graph"), 10)
        assert event == "graph" and delta["reset"] is False
        added = {n["data"]["type"] for n in delta["added"]["nodes"]}
        assert {"event", "drift", "actor"} <= added
        assert all(
            {"id", "source", "target", "label"} <= set(e["data"]) for e in delta["added"]["edges"]
        )


async def test_drift_records_carry_blast_radius_and_graph_related_events(server: Any) -> None:
    _, client = server
    drifts = (await _get(client, "/api/v1/drifts?limit=1000"))["drifts"]
    enriched = [await _get(client, f"/api/v1/drifts/{d['id']}") for d in drifts]
    assert all({"count", "addresses"} <= set(d["blast_radius"]) for d in enriched)
    with_falco = [d for d in enriched if any(e.get("type") == "falco" for e in d["related_events"])]
    assert with_falco, "a drift correlated with a Falco alert lists it among related_events"
    assert all(d["related_events"] for d in enriched)
