"""The causal graph on real states and a real attack replay, its bounds and its queries."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from graph import queries
from graph.builder import GraphBuilder
from graph.model import (
    ACTOR,
    AFFECTS,
    CAUSED,
    DEPENDS_ON,
    DRIFT,
    EDGE_TYPES,
    EVENT,
    FALCO,
    FOLLOWED_BY,
    NODE_TYPES,
    PERFORMED,
    RELATED,
    RESOURCE,
    UNMANAGED,
    DriftNode,
    GraphLimits,
    ResourceNode,
    UnmanagedNode,
    parse_ts,
)
from graph.store import GraphStore
from monitor.detect import Detector
from monitor.tfstate import StateIndex, load_state_file, parse_state
from monitor.types import ChangeEvent, FalcoAlert
from rules import load_catalogue, load_severity
from rules.catalogue import Catalogue
from streams.cloudtrail import decode_record
from streams.timefmt import format_time
from tests.support.graph_data import (
    CLOCK,
    INSTANCE,
    Batch,
    stratus_batches,
    stratus_index,
    stratus_state,
)
from tests.support.realdata import TFSTATE, cloudtrail_records

# Stratus detonations span four months; keep them all in one graph.
LONG = GraphLimits(retention_seconds=400 * 86400)
# Which node types each edge type may join.
SCHEMA: dict[str, tuple[set[str], set[str]]] = {
    DEPENDS_ON: ({RESOURCE}, {RESOURCE}),
    PERFORMED: ({ACTOR}, {EVENT}),
    CAUSED: ({EVENT}, {DRIFT}),
    AFFECTS: ({DRIFT}, {RESOURCE, UNMANAGED}),
    RELATED: ({FALCO}, {EVENT, DRIFT}),
    FOLLOWED_BY: ({EVENT}, {EVENT}),
}


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


def _index(catalogue: Catalogue, *paths: str) -> StateIndex:
    return StateIndex([load_state_file(TFSTATE / p) for p in paths], catalogue.identifiers)


def _deps(b: GraphBuilder) -> dict[tuple[str, str], str]:
    return {
        (u.removeprefix("resource:"), v.removeprefix("resource:")): a["via"]
        for u, v, a in b.g.edges(data=True)
        if a["label"] == DEPENDS_ON
    }


def _ends_follow_schema(b: GraphBuilder) -> Counter[str]:
    seen: Counter[str] = Counter()
    for u, v, a in b.g.edges(data=True):
        label = a["label"]
        sources, targets = SCHEMA[label]
        assert b.g.nodes[u]["v"].kind in sources, (label, u, v)
        assert b.g.nodes[v]["v"].kind in targets, (label, u, v)
        seen[label] += 1
    assert seen == Counter({k: v for k, v in b.edge_counts.items() if v})
    return seen


# ---- depends_on from real states ---------------------------------------------------------


def test_tfdrift_state_dependencies_and_attribute_references(catalogue: Catalogue) -> None:
    b = GraphBuilder(
        _index(catalogue, "tfdrift-falco/pkg_detector_testdata_terraform.tfstate"),
        clock=lambda: CLOCK,
    )
    deps = _deps(b)
    assert b.node_counts()[RESOURCE] == 15
    # Both sources agree: the recorded dependency and the attribute that makes it.
    assert deps[("aws_instance.webserver", "aws_security_group.webserver")] == (
        "dependencies,vpc_security_group_ids"
    )
    assert deps[("aws_instance.webserver", "aws_subnet.public")] == "dependencies,subnet_id"
    assert deps[("aws_instance.webserver", "aws_vpc.test")] == "dependencies"
    assert deps[("aws_iam_instance_profile.app", "aws_iam_role.app")] == "dependencies,role"
    assert deps[("aws_s3_bucket_versioning.data", "aws_s3_bucket.data")] == "dependencies,bucket"
    assert deps[("aws_route_table.public", "aws_internet_gateway.test")] == (
        "dependencies,gateway_id"
    )
    # A bucket's satellites share its id; they must not depend on one another.
    assert ("aws_s3_bucket_versioning.data", "aws_s3_bucket_public_access_block.data") not in deps
    # data sources are not nodes; the instance's `data.aws_ami` dependency is dropped.
    assert not any(v.startswith("data.") for _, v in deps)
    assert all(not u.startswith("aws_vpc.") for u, _ in deps)  # the VPC depends on nothing
    _ends_follow_schema(b)

    blast = b.blast_radius("aws_vpc.test", limit=3)
    dependents = {
        "aws_internet_gateway.test",
        "aws_route_table.public",
        "aws_route_table_association.public",
        "aws_security_group.webserver",
        "aws_subnet.public",
        "aws_instance.webserver",
    }
    assert blast["count"] == len(dependents)
    assert len(blast["addresses"]) == 3 and set(blast["addresses"]) < dependents
    assert b.blast_radius("aws_instance.webserver") == {"count": 0, "addresses": []}
    assert b.blast_radius("aws_vpc.nope") == {"count": 0, "addresses": []}


def test_eks_state_module_dependencies_cover_every_instance(catalogue: Catalogue) -> None:
    b = GraphBuilder(
        _index(catalogue, "aws-samples-china-region-eks/eks_terraform.tfstate.backup"),
        clock=lambda: CLOCK,
    )
    deps = _deps(b)
    rta = "module.vpc.aws_route_table_association.private[1]"
    # `dependencies` name `module.vpc.aws_subnet.private` (both instances); the attribute
    # says which one the association really uses.
    assert deps[(rta, "module.vpc.aws_subnet.private[1]")] == "dependencies,subnet_id"
    assert deps[(rta, "module.vpc.aws_subnet.private[0]")] == "dependencies"
    # aws-cn partition ARNs resolve like any other.
    assert deps[("module.eks.aws_eks_cluster.this[0]", "module.eks.aws_iam_role.cluster[0]")] == (
        "dependencies,role_arn"
    )
    # References inside nested blocks (vpc_config.0.subnet_ids, security_group_ids).
    assert (
        "subnet_ids"
        in deps[("module.eks.aws_eks_cluster.this[0]", "module.vpc.aws_subnet.private[0]")]
    )
    assert (
        "security_group_ids"
        in deps[("module.eks.aws_eks_cluster.this[0]", "module.eks.aws_security_group.cluster[0]")]
    )
    assert (
        "vpc_zone_identifier"
        in deps[("module.eks.aws_autoscaling_group.workers[0]", "module.vpc.aws_subnet.private[1]")]
    )
    assert deps[("module.vpc.aws_nat_gateway.this[0]", "module.vpc.aws_eip.nat[0]")] == (
        "dependencies,allocation_id"
    )
    assert deps[
        ("module.vpc.aws_route.private_nat_gateway[0]", "module.vpc.aws_nat_gateway.this[0]")
    ] == ("dependencies,nat_gateway_id")
    _ends_follow_schema(b)
    vpc = "resource:module.vpc.aws_vpc.this[0]"
    # Terraform records dependencies transitively: one hop already reaches the workers.
    near = queries.impact(b, vpc, 1)
    direct = {n["data"]["address"] for n in near["nodes"] if n["data"]["distance"] == 1}
    assert {
        "module.vpc.aws_subnet.private[0]",
        "aws_security_group.all_worker_mgmt",
        "module.eks.aws_autoscaling_group.workers[0]",
    } <= direct
    assert near["count"] == len(direct) == b.blast_radius(vpc)["count"]
    assert "module.vpc.aws_vpc.this[0]" not in direct
    for e in near["edges"]:
        assert e["data"]["label"] == DEPENDS_ON


def test_split_eks_and_vpc_states_link_through_attributes(catalogue: Catalogue) -> None:
    b = GraphBuilder(
        _index(
            catalogue,
            "wendiblac-project-bedrock/eks_terraform.tfstate",
            "wendiblac-project-bedrock/vpc_terraform.tfstate",
        ),
        clock=lambda: CLOCK,
    )
    deps = _deps(b)
    # Two state files: no recorded dependency crosses them, the subnet ids do.
    assert deps[("aws_eks_node_group.this", "aws_subnet.public[0]")] == "subnet_ids"
    assert deps[("aws_eks_node_group.this", "aws_subnet.public[1]")] == "subnet_ids"
    assert ("aws_eks_node_group.this", "aws_subnet.private[0]") not in deps
    assert deps[("aws_eks_cluster.this", "aws_vpc.main")] == "vpc_id"
    tag = 'aws_ec2_tag.private_subnet_tags["subnet-04746109f33098115"]'
    assert deps[(tag, "aws_subnet.private[1]")] == "resource_id"
    assert deps[("aws_eks_node_group.this", "aws_iam_role.eks_node_role")] == (
        "dependencies,node_role_arn"
    )
    blast = b.blast_radius("aws_vpc.main", limit=100)
    assert "aws_eks_node_group.this" in blast["addresses"]
    assert tag in blast["addresses"]
    # Across the two files the hops are real: subnets first, what uses them second.
    one = queries.impact(b, "resource:aws_vpc.main", 1)
    two = queries.impact(b, "resource:aws_vpc.main", 2)
    at = {n["data"]["address"]: n["data"]["distance"] for n in two["nodes"]}
    assert at["aws_subnet.public[0]"] == 1 and at["aws_eks_cluster.this"] == 1
    assert at["aws_eks_node_group.this"] == 2 and at[tag] == 2
    assert one["count"] < two["count"] == blast["count"]
    assert one["by_distance"] == {"1": one["count"]}
    _ends_follow_schema(b)


# ---- a real attack replay with Falco alerts ----------------------------------------------


@pytest.fixture(scope="module")
def stratus(catalogue: Catalogue) -> GraphBuilder:
    index = stratus_index(catalogue)
    b = GraphBuilder(index, LONG, clock=lambda: CLOCK)
    for changes, drifts, alerts in stratus_batches(catalogue, index):
        b.observe(changes, drifts, alerts)
    return b


def _node(b: GraphBuilder, nid: str) -> Any:
    return b.g.nodes[nid]["v"]


def _by_label(b: GraphBuilder, label: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [(u, v, a) for u, v, a in b.g.edges(data=True) if a["label"] == label]


def test_stratus_replay_has_every_live_type_with_the_right_ends(stratus: GraphBuilder) -> None:
    counts = stratus.node_counts()
    assert all(counts[t] > 0 for t in NODE_TYPES), counts
    seen = _ends_follow_schema(stratus)
    assert set(seen) == set(EDGE_TYPES) - {DEPENDS_ON}  # the warm-up state has no dependencies
    # Every drift has its cause and its target; every event its actor.
    for nid in stratus.live_ids(DRIFT):
        labels = Counter(a["label"] for a in stratus.g.pred[nid].values())
        assert labels[CAUSED] == 1
        assert [a["label"] for a in stratus.g.succ[nid].values()] == [AFFECTS]
    for nid in stratus.live_ids(EVENT):
        assert sum(a["label"] == PERFORMED for a in stratus.g.pred[nid].values()) == 1
    # An unmanaged creation points at an unmanaged node, a modification at the resource.
    affects = {_node(stratus, u).event_name: v for u, v, _ in _by_label(stratus, AFFECTS)}
    assert affects["CreateAccessKey"].startswith("unmanaged:aws_iam_access_key:AKIA")
    assert affects["StopLogging"].startswith("resource:aws_cloudtrail.")
    assert _node(stratus, affects["ModifyInstanceAttribute"]).inst.resource_id == INSTANCE


def test_stratus_session_is_chained_in_time_order(stratus: GraphBuilder) -> None:
    chain = [(_node(stratus, u), _node(stratus, v)) for u, v, _ in _by_label(stratus, FOLLOWED_BY)]
    assert chain
    for before, after in chain:
        assert before.session == after.session
        assert before.ts <= after.ts
    names = {(a.event_name, b.event_name) for a, b in chain}
    assert ("StopInstances", "ModifyInstanceAttribute") in names
    assert ("ModifyInstanceAttribute", "StartInstances") in names
    # The failed DeleteLoginProfile is no drift, but its actor had just drifted: it is shown.
    failed = [n for n in map(lambda i: _node(stratus, i), stratus.live_ids(EVENT)) if n.error_code]
    assert {n.event_name for n in failed} >= {"DeleteLoginProfile"}
    assert ("CreateLoginProfile", "DeleteLoginProfile") in names


def test_falco_alerts_relate_by_host_ip_and_actor_within_the_window(
    stratus: GraphBuilder,
) -> None:
    related: dict[str, list[tuple[str, str]]] = {}
    for u, v, a in _by_label(stratus, RELATED):
        related.setdefault(_node(stratus, u).rule, []).append((v, a["via"]))
    # The host alert: the three drifts on that instance (12:03-12:04, alert at 12:06).
    host = related["Read sensitive file untrusted"]
    assert {via for _, via in host} == {"host"}
    assert len(host) == 3
    assert all(_node(stratus, v).resource_id == INSTANCE for v, _ in host)
    # The container alert: the security group call from its remote IP.
    (shell,) = related["Terminal shell in container"]
    assert shell[1] == "ip"
    assert _node(stratus, shell[0]).event_name == "AuthorizeSecurityGroupIngress"
    # The k8s user alert (13:35): christophe's calls between 13:25 and 13:45, found whether
    # they came before the alert or after it.
    k8s = related["Disallowed K8s User"]
    assert {via for _, via in k8s} == {"actor"}
    names = {_node(stratus, v).event_name for v, _ in k8s}
    assert {"UpdateAssumeRolePolicy", "CreateUser", "CreateRole", "CreateLoginProfile"} <= names
    times = [_node(stratus, v).time for v, _ in k8s]
    assert min(times) < "2024-08-01T13:35:00Z" < max(times)
    assert all("2024-08-01T13:25:00Z" <= t <= "2024-08-01T13:45:00Z" for t in times)
    # Outside the window, or sharing nothing: a node without edges.
    assert "open_from_cat" not in related and "Write below binary dir" not in related
    assert stratus.node_counts()[FALCO] == 5


def test_related_events_for_a_drift(stratus: GraphBuilder) -> None:
    modify = next(
        _node(stratus, n)
        for n in stratus.live_ids(DRIFT)
        if _node(stratus, n).event_name == "ModifyInstanceAttribute"
    )
    items = stratus.related_events(modify.drift_id)
    relations = [(i["relation"], i.get("rule") or i.get("event_name")) for i in items]
    assert ("related", "Read sensitive file untrusted") in relations
    assert ("session_before", "StopInstances") in relations
    assert ("session_after", "StartInstances") in relations
    assert stratus.related_events("drift-nope") == []
    orjson.dumps(items)


def test_observing_the_same_batch_again_changes_nothing(catalogue: Catalogue) -> None:
    index = stratus_index(catalogue)
    b = GraphBuilder(index, LONG, clock=lambda: CLOCK)
    batches = list(stratus_batches(catalogue, index))
    deltas = [b.observe(*batch) for batch in batches]
    before = (b.g.number_of_nodes(), dict(b.edge_counts))
    assert all(b.observe(*batch) is None for batch in batches)
    assert (b.g.number_of_nodes(), dict(b.edge_counts)) == before
    # The deltas add up to the graph (nothing aged out with this retention).
    added = {el["data"]["id"] for d in deltas if d for el in d.added_nodes}
    live = {n for n in b.g if not n.startswith("resource:")}
    assert added == live
    edges = {el["data"]["id"] for d in deltas if d for el in d.added_edges}
    assert len(edges) == sum(b.edge_counts.values())
    first = next(d for d in deltas if d)
    payload = orjson.loads(orjson.dumps(first.as_dict()))
    assert payload["reset"] is False
    assert {"id", "label", "type"} <= set(payload["added"]["nodes"][0]["data"])


# ---- bounds ------------------------------------------------------------------------------


def _stream(catalogue: Catalogue, index: StateIndex, steps: int, spacing: float) -> Iterator[Batch]:
    """The stratus calls over and over, each round with new ids, later times, other access
    keys and source IPs (so sessions, IPs and drifts keep churning), plus an alert per call
    sharing its IP."""
    detector = Detector(catalogue, load_severity(), index, clock=lambda: CLOCK)
    base = [
        r
        for r in sorted(cloudtrail_records("stratus_detonation_logs"), key=lambda r: r["eventTime"])
        if not decode_record(r).read_only
    ]
    start = parse_ts("2024-08-01T00:00:00Z") or 0.0
    for n in range(steps):
        src = base[n % len(base)]
        when = format_time(datetime.fromtimestamp(start + n * spacing, UTC))
        ip = f"10.{n % 200}.{(n // 200) % 200}.7"
        uid = dict(src.get("userIdentity") or {})
        uid["accessKeyId"] = f"AKIA{n % 997:016d}"
        rec = {
            **src,
            "eventID": f"{src.get('eventID')}-{n}",
            "eventTime": when,
            "sourceIPAddress": ip,
            "userIdentity": uid,
        }
        ev = decode_record(rec)
        alert = FalcoAlert(
            f"alert-{n}",
            when,
            "Warning",
            "medium",
            "Outbound connection",
            "out",
            "syscall",
            f"host-{n % 50}",
            (),
            {"fd.rip": ip},
        )
        yield [ev], list(detector.detect(ev).drifts), [alert]


def test_memory_stays_flat_over_a_long_stream(catalogue: Catalogue) -> None:
    index = stratus_index(catalogue)
    limits = GraphLimits(
        retention_seconds=400 * 86400,
        max_events=300,
        max_drifts=200,
        max_alerts=100,
        prelude_actors=20,
        prelude_per_actor=3,
        recent_per_key=8,
    )
    b = GraphBuilder(index, limits, clock=lambda: CLOCK)
    resources = b.node_counts()[RESOURCE]
    sizes = []
    for n, batch in enumerate(_stream(catalogue, index, 12_000, 1.0)):
        b.observe(*batch)
        if n % 3000 == 2999:
            sizes.append(b.g.number_of_nodes())
    counts = b.node_counts()
    assert counts[EVENT] == 300 and counts[DRIFT] == 200 and counts[FALCO] == 100
    assert counts[RESOURCE] == resources
    assert b.evicted[EVENT] > 5_000 and b.evicted[FALCO] > 10_000
    # Actors and unmanaged nodes only live as long as their edges.
    for nid in list(b.actors) + list(b.unmanaged):
        assert b.g.degree(nid) > 0
    assert sum(counts.values()) == b.g.number_of_nodes()
    assert max(sizes) - min(sizes) <= counts[ACTOR] + counts[UNMANAGED] + 50
    # Every side index is bounded by the live items it describes.
    assert len(b.session_last) <= counts[EVENT]
    assert len(b.context) <= 20
    assert len(b.prelude) <= 20
    assert len(b.targets) <= 4 * (counts[EVENT] + counts[DRIFT])
    assert len(b.alert_keys) <= 12 * counts[FALCO]
    assert sum(b.edge_counts.values()) == b.g.number_of_edges()
    assert min(b.edge_counts.values()) >= 0


def test_items_age_out_by_time(catalogue: Catalogue) -> None:
    index = stratus_index(catalogue)
    # The stream runs from 00:00 to 05:33; the clock says 06:00.
    b = GraphBuilder(
        index, GraphLimits(retention_seconds=3600), clock=lambda: "2024-08-01T06:00:00Z"
    )
    for batch in _stream(catalogue, index, 2_000, 10.0):
        b.observe(*batch)
    newest = b.high_water
    assert newest is not None
    for kind in (EVENT, DRIFT, FALCO):
        times = [ts for ts, _ in b.aging[kind]]
        assert times and min(times) >= newest - 3600
    assert b.evicted[EVENT] > 0
    # An item older than the retention is not added at all.
    old = FalcoAlert("old", "2024-07-01T00:00:00Z", "Warning", "medium", "r", "o", None, None)
    assert b.observe([], [], [old]) is None
    assert b.counters["too_old"] == 1
    # A time far in the future counts as the clock's time (plus the allowed skew): it
    # cannot flush the graph.
    future = FalcoAlert("future", "2030-01-01T00:00:00Z", "Warning", "medium", "r", "o", None, None)
    b.observe([], [], [future])
    assert b.node_counts()[EVENT] > 0


def test_a_big_update_is_published_as_a_reset(catalogue: Catalogue) -> None:
    index = stratus_index(catalogue)
    b = GraphBuilder(
        index,
        GraphLimits(retention_seconds=400 * 86400, max_delta_elements=10),
        clock=lambda: CLOCK,
    )
    batches = list(_stream(catalogue, index, 40, 1.0))
    changes = [e for c, _, _ in batches for e in c]
    drifts = [d for _, ds, _ in batches for d in ds]
    alerts = [a for _, _, alerts in batches for a in alerts]
    delta = b.observe(changes, drifts, alerts)
    assert (
        delta is not None
        and delta.reset
        and delta.as_dict() == {"reset": True, "reason": "more than 10 changes in one update"}
    )


def test_reload_replaces_resources_and_keeps_live_nodes(
    catalogue: Catalogue, stratus: GraphBuilder
) -> None:
    doc = stratus_state(catalogue)
    index = StateIndex([parse_state(doc, "s.tfstate")], catalogue.identifiers)
    b = GraphBuilder(index, LONG, clock=lambda: CLOCK)
    for batch in stratus_batches(catalogue, index):
        b.observe(*batch)
    live = {n for n in b.g if not n.startswith("resource:")}
    instance = next(n for n in b.resources if _node(b, n).inst.resource_id == INSTANCE)
    trail = next(n for n in b.resources if _node(b, n).inst.type == "aws_cloudtrail")
    drifts_on_instance = [u for u in b.g.pred[instance]]
    assert drifts_on_instance
    # The new state: the instance is gone; a VPC and a subnet in it arrive (one depends_on).
    doc2 = copy.deepcopy(doc)
    doc2["resources"] = [
        r for r in doc2["resources"] if r["instances"][0]["attributes"]["id"] != INSTANCE
    ]
    doc2["resources"] += [
        {
            "mode": "managed",
            "type": "aws_vpc",
            "name": "main",
            "provider": "aws",
            "instances": [{"attributes": {"id": "vpc-1"}}],
        },
        {
            "mode": "managed",
            "type": "aws_subnet",
            "name": "a",
            "provider": "aws",
            "instances": [{"attributes": {"id": "subnet-1", "vpc_id": "vpc-1"}}],
        },
    ]
    delta = b.reload_state(StateIndex([parse_state(doc2, "s.tfstate")], catalogue.identifiers))
    assert delta is not None and not delta.reset
    assert instance in delta.removed_nodes and instance not in b.g
    assert {el["data"]["id"] for el in delta.added_nodes} == {
        "resource:aws_vpc.main",
        "resource:aws_subnet.a",
    }
    assert [el["data"]["id"] for el in delta.added_edges] == [
        "depends_on:resource:aws_subnet.a->resource:aws_vpc.main"
    ]
    assert {n for n in b.g if not n.startswith("resource:")} == live
    assert all(b.g.out_degree(d) == 0 for d in drifts_on_instance)  # lost `affects` only
    assert trail in b.g and b.g.in_degree(trail) > 0
    assert b.blast_radius("aws_vpc.main") == {"count": 1, "addresses": ["aws_subnet.a"]}
    assert b.stats()["state_reloads"] == 1


# ---- queries -----------------------------------------------------------------------------


def test_node_pages_cross_type_boundaries(stratus: GraphBuilder) -> None:
    counts = stratus.node_counts()
    total = sum(counts.values())
    seen: list[str] = []
    page = 1
    while True:
        items, n = queries.nodes_page(stratus, page, 7)
        assert n == total
        if not items:
            break
        seen.extend(el["data"]["id"] for el in items)
        page += 1
    assert len(seen) == total == len(set(seen)) == stratus.g.number_of_nodes()
    assert seen[: counts[RESOURCE]] == stratus.resources
    items, n = queries.nodes_page(stratus, 2, 3, {DRIFT, FALCO})
    assert n == counts[DRIFT] + counts[FALCO]
    assert [el["data"]["type"] for el in items] == [DRIFT] * 3
    items, n = queries.nodes_page(
        stratus, 1, 1000, None, parse_ts("2024-08-01T12:00:00Z"), parse_ts("2024-08-01T12:30:00Z")
    )
    assert items and n == len(items)
    assert all(
        "2024-08-01T12:00:00Z" <= el["data"]["time"] <= "2024-08-01T12:30:00Z" for el in items
    )
    assert not any(el["data"]["type"] == RESOURCE for el in items)


def test_edge_pages_match_the_graph(stratus: GraphBuilder) -> None:
    every: list[str] = []
    page = 1
    while True:
        items, total = queries.edges_page(stratus, page, 10)
        if not items:
            break
        every.extend(el["data"]["id"] for el in items)
        page += 1
    assert len(every) == total == len(set(every)) == stratus.g.number_of_edges()
    items, total = queries.edges_page(stratus, 1, 1000, {RELATED})
    assert total == stratus.edge_counts[RELATED] == len(items)
    assert {el["data"]["label"] for el in items} == {RELATED}


def test_full_graph_is_capped_and_says_so(stratus: GraphBuilder) -> None:
    whole = queries.full_graph(stratus)
    assert not whole["truncated"]
    assert len(whole["nodes"]) == stratus.g.number_of_nodes()
    assert len(whole["edges"]) == stratus.g.number_of_edges()
    small = queries.full_graph(stratus, max_elements=20)
    assert small["truncated"] and len(small["nodes"]) + len(small["edges"]) <= 20
    ids = {n["data"]["id"] for n in small["nodes"]}
    assert all(e["data"]["source"] in ids and e["data"]["target"] in ids for e in small["edges"])
    # The newest drift comes with its story.
    assert {n["data"]["type"] for n in small["nodes"]} >= {DRIFT, EVENT, ACTOR}
    only = queries.full_graph(stratus, types={FALCO, EVENT})
    assert {n["data"]["type"] for n in only["nodes"]} == {FALCO, EVENT}
    assert {e["data"]["label"] for e in only["edges"]} <= {RELATED, FOLLOWED_BY}


def test_neighbors_impact_and_path(stratus: GraphBuilder) -> None:
    instance = next(n for n in stratus.resources if _node(stratus, n).inst.resource_id == INSTANCE)
    one = queries.neighbors(stratus, instance, 1)
    assert {n["data"]["type"] for n in one["nodes"]} == {RESOURCE, DRIFT}
    three = queries.neighbors(stratus, instance, 3)
    types = {n["data"]["type"] for n in three["nodes"]}
    assert {ACTOR, EVENT, FALCO} <= types
    assert max(n["data"]["distance"] for n in three["nodes"]) == 3
    actor = next(n["data"]["id"] for n in three["nodes"] if n["data"]["type"] == ACTOR)
    found = queries.path(stratus, actor, instance)
    assert found["found"] and found["length"] == 3
    assert [n["data"]["type"] for n in found["nodes"]] == [ACTOR, EVENT, DRIFT, RESOURCE]
    assert [e["data"]["label"] for e in found["edges"]] == [PERFORMED, CAUSED, AFFECTS]
    loose = next(n for n in stratus.live_ids(FALCO) if stratus.g.degree(n) == 0)
    assert queries.path(stratus, loose, instance)["found"] is False
    assert queries.resolve(stratus, _node(stratus, instance).inst.address) == instance
    stats = stratus.stats()
    assert stats["total_nodes"] == stratus.g.number_of_nodes()
    assert stats["total_edges"] == stratus.g.number_of_edges()
    assert stats["node_types"] == stratus.node_counts()


def test_the_pipeline_observer_publishes_deltas_and_survives_failures(
    catalogue: Catalogue,
) -> None:
    index = stratus_index(catalogue)
    b = GraphBuilder(index, LONG, clock=lambda: CLOCK)
    published: list[dict[str, Any]] = []
    observe = b.observer(lambda delta: published.append(delta.as_dict()))
    batches = list(stratus_batches(catalogue, index))
    for batch in batches:
        observe(*batch)
    assert published and all(p["reset"] is False for p in published)
    assert sum(len(p["added"]["nodes"]) for p in published) == b.g.number_of_nodes() - len(
        b.resources
    )
    b2 = GraphBuilder(index, LONG, clock=lambda: CLOCK)
    broken = b2.observer(lambda delta: [][0])
    broken(*batches[0])  # a failing publisher is logged and counted, not raised
    assert b2.stats()["observe_errors"] == 1


# ---- the store on its own, and the parsed fields the graph reads -------------------------


def test_store_removal_takes_edges_and_orphans_and_eviction_reports_each_item() -> None:
    store = GraphStore()
    drift = DriftNode(
        "d1", "modified", "high", "aws_vpc", "vpc-1", None, None, "e1", "X", "t", 1.0, "t"
    )
    store.put("drift:d1", drift)
    store.put("unmanaged:aws_vpc:vpc-1", UnmanagedNode("aws_vpc", "vpc-1", "t", 1.0))
    store.unmanaged["unmanaged:aws_vpc:vpc-1"] = None
    store.put("resource:a", ResourceNode(_instance("a")))
    store.put("resource:b", ResourceNode(_instance("b")))
    store.resources += ["resource:a", "resource:b"]
    assert store.link("drift:d1", "unmanaged:aws_vpc:vpc-1", AFFECTS)
    assert not store.link("drift:d1", "unmanaged:aws_vpc:vpc-1", AFFECTS)  # already joined
    assert store.link("resource:a", "resource:b", DEPENDS_ON, "dependencies")
    assert store.link("resource:b", "resource:a", DEPENDS_ON, "dependencies")
    # Edges with the same label and reason share one attribute dict.
    assert store.g.edges["resource:a", "resource:b"] is store.g.edges["resource:b", "resource:a"]
    assert store.edge_counts[AFFECTS] == 1 and store.edge_counts[DEPENDS_ON] == 2
    store.aging[DRIFT].extend([(1.0, "drift:d1"), (2.0, "drift:gone")])

    forgotten: list[tuple[str, float]] = []
    delta = store.begin(100)
    store.evict(1.5, [(DRIFT, 10)], lambda nid, value, ts: forgotten.append((nid, ts)))
    # The drift goes by age, taking its edge and the unmanaged node left without one.
    assert forgotten == [("drift:d1", 1.0)]
    assert delta.dropped_nodes == ["drift:d1", "unmanaged:aws_vpc:vpc-1"]
    assert store.unmanaged == {} and store.edge_counts[AFFECTS] == 0
    assert list(store.aging[DRIFT]) == [(2.0, "drift:gone")]
    # Over the cap the oldest goes even when young; a node already gone is not reported.
    store.evict(0.0, [(DRIFT, 0)], lambda nid, value, ts: forgotten.append((nid, ts)))
    assert forgotten == [("drift:d1", 1.0)] and store.evicted[DRIFT] == 2
    # Resources are no orphans: removing one keeps the other.
    store.unlink("resource:b", "resource:a")
    assert store.remove("resource:a") is not None and "resource:b" in store
    assert store.edge_counts[DEPENDS_ON] == 0
    assert store.g.number_of_edges() == 0
    assert store.remove("resource:a") is None


def _instance(name: str) -> Any:
    doc = {
        "version": 4,
        "terraform_version": "1.9.0",
        "resources": [
            {
                "mode": "managed",
                "type": "aws_vpc",
                "name": name,
                "provider": 'provider["registry.terraform.io/hashicorp/aws"]',
                "instances": [{"schema_version": 0, "attributes": {"id": f"vpc-{name}"}}],
            }
        ],
    }
    return next(iter(StateIndex([parse_state(doc, "s.tfstate")], {}).by_address.values()))


@pytest.mark.parametrize(
    "uid",
    [
        {"type": "IAMUser", "arn": "arn:aws:iam::1:user/a", "principalId": "AID1"},
        {"type": "AssumedRole", "principalId": "AROA1:sess"},
        {"type": "AWSService", "invokedBy": "ec2.amazonaws.com"},
        {"type": "Root", "arn": "", "principalId": "", "userName": ""},
        {"type": "IAMUser", "arn": 7, "principalId": "AID2"},
        None,
        "not an identity",
    ],
)
def test_actor_key_is_the_actors_key_without_building_it(uid: Any) -> None:
    rec = {"eventID": "e", "eventSource": "s", "eventName": "n", "eventTime": "t"}
    fast = ChangeEvent("e", "s", "n", "t", {**rec, "userIdentity": uid})
    slow = ChangeEvent("e", "s", "n", "t", {**rec, "userIdentity": uid})
    assert fast.actor_key == slow.actor.key
