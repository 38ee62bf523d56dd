"""Targets tried in order against the state: the catalogue schema and the engine pieces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from monitor.tfstate import StateIndex, parse_state
from rules import CatalogueError
from rules.catalogue import load_file
from rules.paths import PathError, parse_template, render
from rules.transforms import TRANSFORMS, canon_scalar

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
