"""Targets tried in order against the state: the catalogue schema and the engine pieces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from monitor.detect import Detector
from monitor.tfstate import StateIndex, parse_state
from monitor.types import ChangeEvent
from rules import CatalogueError, load_severity
from rules.catalogue import Catalogue, load_file
from rules.paths import PathError, parse_template, render
from rules.transforms import TRANSFORMS, canon_scalar
from streams.formats import decoder_for

HEAD = "version: 1\nprovider: aws\nevent_source: x.amazonaws.com\nevents:\n"


def _load(tmp_path: Path, body: str) -> Any:
    path = tmp_path / "x.yaml"
    path.write_text(HEAD + body)
    return load_file(path)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "  A: {change: modify, resource: [{type: aws_route, id: x.y}]}",
            "must start with",
        ),
        (
            "  A: {change: modify, resource: [{type: aws_route, id: requestParameters.a,"
            " match: {b: requestParameters.b}}]}",
            "not both",
        ),
        (
            "  A: {change: modify, id: 'requestParameters.a[*].b', resource: [aws_route_table,"
            " {type: aws_route, match: {b: requestParameters.b}}]}",
            "fan out",
        ),
        (
            "  A: {change: delete, id: requestParameters.a, resource: aws_route,"
            " unmanaged: aws_route}",
            "unmanaged does not apply",
        ),
        ("  A: {change: modify, resource: [{type: aws_route}]}", "id (one or more paths)"),
        (
            "  A: {change: modify, resource: [{type: aws_route, id: requestParameters.a,"
            " change: create, attributes: {b: requestParameters.b}}]}",
            "only apply to change: modify",
        ),
        (
            "  A: {change: modify, each: requestParameters.items, resource: [{type: aws_route,"
            " id: each.a}]}",
            "each: a path with",
        ),
        (
            "  A: {change: modify, resource: [{type: aws_route, id: requestParameters.a,"
            " change: delete, creates: requestParameters.b}]}",
            "creates needs",
        ),
        (
            "  A: {change: modify, resource: [{type: aws_route, id: '{requestParameters.a|up}'}]}",
            "unknown template filter",
        ),
        (
            "  A: {change: modify, resource: [{type: aws_route, match: {a: {const: [1]}}}]}",
            "a match value is a template",
        ),
    ],
)
def test_malformed_targets_are_rejected(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(CatalogueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _load(tmp_path, body)


def test_targets_keep_their_order_change_and_own_keys(tmp_path: Path) -> None:
    entries, _ = _load(
        tmp_path,
        "  DeleteRoute:\n"
        "    change: modify\n"
        "    resource:\n"
        "      - type: aws_route\n"
        "        match: {route_table_id: requestParameters.t, destination_cidr_block:"
        " requestParameters.d}\n"
        "        change: delete\n"
        "      - aws_route_table\n"
        "    id: requestParameters.t\n"
        "    unmanaged: {type: aws_route, id: '{requestParameters.t}_{requestParameters.d}'}\n",
    )
    rule = entries[0]
    assert [t.resource_type for t in rule.targets] == ["aws_route", "aws_route_table"]
    assert [t.change.value for t in rule.targets] == ["delete", "modify"]
    assert [t.shared for t in rule.targets] == [False, True]
    assert rule.resource_types == ("aws_route_table",)
    assert rule.all_types == ("aws_route", "aws_route_table")
    root = {"requestParameters": {"t": "rtb-1", "d": "0.0.0.0/0"}}
    assert rule.unmanaged and render(root, rule.unmanaged.ids[0]) == "rtb-1_0.0.0.0/0"


def test_templates_render_or_say_nothing() -> None:
    tpl = parse_template("{requestParameters.role}:{requestParameters.name}")
    assert render({"requestParameters": {"role": "r", "name": "p"}}, tpl) == "r:p"
    assert render({"requestParameters": {"role": "r"}}, tpl) is None
    assert (
        render(
            {"requestParameters": {"egress": False}}, parse_template("{requestParameters.egress}")
        )
        == "false"
    )
    with pytest.raises(PathError):
        parse_template("{requestParameters.items[*].id}")


def test_optional_and_dns_template_fields() -> None:
    tpl = parse_template("{requestParameters.z}_{each.name|dns}_{each.type}{each.set?}")
    root = {"requestParameters": {"z": "Z1"}, "each": {"name": "\\052.Example.COM.", "type": "A"}}
    assert render(root, tpl) == "Z1_*.example.com_A"
    assert render({**root, "each": {"name": "a.", "type": "A", "set": "blue"}}, tpl) == (
        "Z1_a_Ablue"
    )
    # Without `?` an absent value still means the template says nothing.
    assert render(root, parse_template("{each.set}")) is None


def test_each_fans_out_targets_with_their_own_ids(tmp_path: Path) -> None:
    entries, _ = _load(
        tmp_path,
        "  Batch:\n"
        "    change: modify\n"
        "    each: requestParameters.changes[*]\n"
        "    resource:\n"
        "      - {type: aws_route, when: {each.action: DELETE}, change: delete, id: each.id}\n"
        "    unmanaged: {type: aws_route, id: each.id, when: {each.action: [CREATE, UPSERT]}}\n",
    )
    state = parse_state(
        {
            "version": 4,
            "terraform_version": "1.9.0",
            "resources": [
                {
                    "mode": "managed",
                    "type": "aws_route",
                    "name": "a",
                    "instances": [{"attributes": {"id": "r-1"}}],
                }
            ],
        },
        "s.tfstate",
    )
    catalogue = Catalogue([entries[0]], {})
    detector = Detector(catalogue, load_severity(), StateIndex([state]))
    record = {
        "eventVersion": "1.08",
        "eventID": "e-1",
        "eventTime": "2026-01-01T00:00:00Z",
        "eventSource": "x.amazonaws.com",
        "eventName": "Batch",
        "awsRegion": "us-east-1",
        "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::1:user/u", "accountId": "1"},
        "requestParameters": {
            "changes": [
                {"action": "DELETE", "id": "r-1"},
                {"action": "CREATE", "id": "r-2"},
                {"action": "DELETE", "id": "r-3"},
            ]
        },
    }
    [event] = [e for e in decoder_for("cloudtrail")(record) if isinstance(e, ChangeEvent)]
    found = {(d.kind.value, d.resource_id) for d in detector.detect(event).drifts}
    assert found == {("missing", "r-1"), ("unmanaged", "r-2")}


def test_composite_lookup_compares_canonically() -> None:
    doc = {
        "version": 4,
        "terraform_version": "1.9.0",
        "resources": [
            {
                "mode": "managed",
                "type": "aws_network_acl_rule",
                "name": "ssh",
                "instances": [
                    {
                        "attributes": {
                            "id": "nacl-123",
                            "network_acl_id": "acl-1",
                            "rule_number": 100,
                            "egress": False,
                            "cidr_block": "2001:db8::/32",
                        }
                    }
                ],
            }
        ],
    }
    index = StateIndex([parse_state(doc, "s.tfstate")])
    names = ("network_acl_id", "rule_number", "egress")
    assert index.find_match("aws_network_acl_rule", names, ("acl-1", "100", "false"))
    assert not index.find_match("aws_network_acl_rule", names, ("acl-1", "100", "true"))
    assert index.find_match("aws_network_acl_rule", ("cidr_block",), ("2001:DB8:0::/32",))


def test_a_list_attribute_matches_each_of_its_items() -> None:
    doc = {
        "version": 4,
        "terraform_version": "1.9.0",
        "resources": [
            {
                "mode": "managed",
                "type": "aws_security_group_rule",
                "name": "ssh",
                "instances": [
                    {
                        "attributes": {
                            "id": "sgrule-1",
                            "security_group_id": "sg-1",
                            "cidr_blocks": ["10.0.0.0/8", "192.168.0.0/16"],
                            "ipv6_cidr_blocks": [],
                        }
                    }
                ],
            }
        ],
    }
    index = StateIndex([parse_state(doc, "s.tfstate")])
    names = ("security_group_id", "cidr_blocks", "ipv6_cidr_blocks")
    assert index.find_match("aws_security_group_rule", names, ("sg-1", "192.168.0.0/16", ""))
    assert index.find_match("aws_security_group_rule", names, ("sg-1", "10.0.0.0/8", ""))
    assert not index.find_match("aws_security_group_rule", names, ("sg-1", "0.0.0.0/0", ""))


def test_named_blocks_put_and_remove_compare_documents() -> None:
    make, canon = TRANSFORMS["block_put"]
    old = [{"name": "keep", "policy": '{"Version":"2012-10-17","Statement":[]}'}]
    same = make({"name": "keep", "policy": '{"Statement": [], "Version": "2012-10-17"}'}, old)
    assert canon(same) == canon(old)
    added = make({"name": "new", "policy": "{}"}, old)
    assert canon(added) != canon(old) and len(added) == 2
    remove, _ = TRANSFORMS["block_remove"]
    assert remove("keep", old) == []
    # Terraform records "no inline policy" as one empty block.
    assert canon([{"name": "", "policy": ""}]) == canon([])


@pytest.mark.parametrize(
    ("a", "b"),
    [("10.0.0.5/8", "10.0.0.0/8"), ("2001:DB8::/32", "2001:db8::/32"), ("True", True), ("22", 22)],
)
def test_scalar_spellings_compare_equal(a: Any, b: Any) -> None:
    assert canon_scalar(a) == canon_scalar(b)


def test_an_emptied_policy_equals_an_absent_one() -> None:
    make, canon = TRANSFORMS["json"]
    assert canon(make("", None)) == canon(None)
