"""API objects as Terraform blocks (rules/blocks.py) and the transforms built on them."""

from __future__ import annotations

from typing import Any

import pytest

from rules.blocks import canon_blocks, put_named, snake_case, to_blocks
from rules.catalogue import Change
from rules.targets import CatalogueError, parse_attributes
from rules.transforms import TRANSFORMS
from rules.values import is_hidden


@pytest.mark.parametrize(
    ("api", "terraform"),
    [
        ("transitionToIA", "transition_to_ia"),
        ("ID", "id"),
        ("KMSMasterKeyId", "kms_master_key_id"),
        ("NoncurrentDays", "noncurrent_days"),
        ("status", "status"),
    ],
)
def test_snake_case(api: str, terraform: str) -> None:
    assert snake_case(api) == terraform


def test_to_blocks_follows_the_state_shape() -> None:
    state = [
        {"id": "a", "filter": [{"prefix": "", "and": []}], "expiration": []},
        {"id": "b", "filter": [{"prefix": "", "and": [{"prefix": "", "tags": {"k": "v"}}]}]},
    ]
    request = {
        "ID": "a",
        "Unknown": 1,
        "Filter": {"And": {"Prefix": "x/", "Tag": [{"Key": "k", "Value": "w"}]}},
        "Expiration": {"Days": 3},
    }
    blocks = to_blocks(request, state, {"And.Tag": "tags"})
    assert blocks == [
        {
            "id": "a",
            "filter": [{"and": [{"prefix": "x/", "tags": {"k": "w"}}]}],
            "expiration": [{"days": 3}],
        }
    ]


def test_to_blocks_without_a_state_keeps_every_key() -> None:
    assert to_blocks(
        [{"parameterName": "p", "isModifiable": False}], [], {"parameterName": "name"}
    ) == [{"name": "p", "is_modifiable": False}]


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        # Terraform's zero values for unset arguments are the same as absent ones.
        ([{"days": 90, "date": "", "expired": False, "t": []}], [{"days": "90"}], True),
        # A block holding nothing is still there (WAF default_action allow {} vs block {}).
        ([{"allow": [{"custom": []}], "block": []}], [{"allow": [{}]}], True),
        ([{"allow": [{}]}], [{"block": [{}]}], False),
        # Sets of blocks: order does not matter, values do.
        ([{"n": "a"}, {"n": "b"}], [{"n": "b"}, {"n": "a"}], True),
        ([{"n": "a"}, {"n": "b"}], [{"n": "a"}], False),
        ([{"n": "a", "v": 1}], [{"n": "a", "v": 2}], False),
    ],
)
def test_canon_blocks(a: Any, b: Any, equal: bool) -> None:
    assert (canon_blocks(a) == canon_blocks(b)) is equal


def test_put_named_replaces_by_name_and_keeps_the_rest() -> None:
    old = [{"name": "a", "value": "1"}, {"name": "b", "value": "2"}]
    assert put_named([{"name": "b", "value": "3"}], old) == [
        {"name": "a", "value": "1"},
        {"name": "b", "value": "3"},
    ]


def test_toggle_set_turns_named_types_on_and_off() -> None:
    make, canon = TRANSFORMS["toggle_set"]
    new = make(
        [{"types": ["audit"], "enabled": False}, {"types": ["scheduler"], "enabled": True}],
        ["api", "audit"],
    )
    assert canon(new) == canon(["api", "scheduler"])


@pytest.mark.parametrize(
    ("new", "old", "equal"),
    [
        ("arn:aws:ecs:us-east-1:123456789012:task-definition/web:5", "web:5", True),
        ("web:5", "arn:aws:ecs:us-east-1:123456789012:task-definition/web:5", True),
        ("arn:aws:iam::123456789012:instance-profile/path/web", "web", True),
        ("web:6", "web:5", False),
        ("arn:aws:ecs:us-east-1:123456789012:task-definition/web:6", "web:5", False),
    ],
)
def test_name_or_arn(new: str, old: str, equal: bool) -> None:
    make, canon = TRANSFORMS["name_or_arn"]
    assert (canon(make(new, old)) == canon(old)) is equal


@pytest.mark.parametrize(
    ("value", "hidden"),
    [
        ("HIDDEN_DUE_TO_SECURITY_REASONS", True),
        ("<sensitiveDataRemoved>", True),
        ("***", True),
        ({"value": "<sensitiveDataRemoved>"}, True),
        ([{"name": "a", "password": "***"}], True),
        ("hidden", False),
        ({"value": "t3.micro"}, False),
    ],
)
def test_is_hidden(value: Any, hidden: bool) -> None:
    assert is_hidden(value) is hidden


def test_keys_only_apply_to_block_transforms() -> None:
    with pytest.raises(CatalogueError, match="keys only apply"):
        parse_attributes(
            "x", {"tags": {"from": "requestParameters.t", "keys": {"A": "a"}}}, Change.MODIFY
        )
    with pytest.raises(CatalogueError, match="keys maps"):
        parse_attributes(
            "x",
            {"rule": {"from": "requestParameters.r", "as": "blocks", "keys": {"A": "Bad-Name"}}},
            Change.MODIFY,
        )


def test_from_takes_alternative_paths() -> None:
    (attr,) = parse_attributes(
        "x", {"role": {"from": ["responseElements.a", "requestParameters.b"]}}, Change.MODIFY
    )
    assert attr.path == ("responseElements", "a") and attr.alternatives == (
        ("requestParameters", "b"),
    )
