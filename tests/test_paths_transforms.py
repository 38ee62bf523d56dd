from __future__ import annotations

from typing import Any

import pytest

from rules.paths import PathError, extract, parse_path
from rules.transforms import STATE_PARSERS, TRANSFORMS, TransformError, canon_json

RECORD = {
    "requestParameters": {
        "instancesSet": {"items": [{"instanceId": "i-1"}, {"instanceId": "i-2"}]},
        "instanceType": {"value": "t3.large"},
        "empty": None,
    },
    "responseElements": None,
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("requestParameters.instanceType.value", ["t3.large"]),
        ("requestParameters.instancesSet.items[*].instanceId", ["i-1", "i-2"]),
        ("requestParameters.instancesSet.items[1].instanceId", ["i-2"]),
        ("requestParameters.instancesSet.items[5].instanceId", []),
        ("requestParameters.missing.deeper", []),
        ("requestParameters.empty", []),
        ("responseElements.anything", []),
    ],
)
def test_extract(path: str, expected: list[Any]) -> None:
    assert extract(RECORD, parse_path(path)) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "foo.bar",
        "requestParameters.",
        "requestParameters..x",
        "requestParameters.a b",
        "[0].x",
        "requestParameters x",
    ],
)
def test_malformed_paths_are_rejected(bad: str) -> None:
    with pytest.raises(PathError):
        parse_path(bad)


def _differs(transform: str, new: Any, old: Any) -> bool:
    make, canon = TRANSFORMS[transform]
    parser = STATE_PARSERS.get(transform)
    if parser:
        old = parser(old)
    return bool(canon(make(new, old)) != canon(old))


@pytest.mark.parametrize(
    ("transform", "new", "old", "differs"),
    [
        ("value", "t3.micro", "t3.micro", False),
        ("value", "t3.large", "t3.micro", True),
        ("value", 30, "30", False),
        ("bool", "true", True, False),
        ("bool", "false", True, True),
        ("int", "7", 7, False),
        # Policies: key order, whitespace, URL-encoding and "a" vs ["a"] do not matter.
        (
            "json",
            '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*"}]}',
            '{"Statement":[{"Action":["s3:*"],"Effect":"Allow"}],\n "Version": "2012-10-17"}',
            False,
        ),
        ("json", "%7B%22a%22%3A%5B%22x%22%2C%22y%22%5D%7D", '{"a":["y","x"]}', False),
        ("json", '{"a":["x","z"]}', '{"a":["y","x"]}', True),
        # A single statement object is a one-statement list; Principal "*" is not {"AWS": "*"}
        # (it also grants to anonymous and service principals).
        (
            "json",
            '{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject"}}',
            '{"Statement":[{"Effect":"Allow","Principal":"*","Action":["s3:GetObject"]}]}',
            False,
        ),
        (
            "json",
            '{"Statement":[{"Effect":"Allow","Principal":"*"}]}',
            '{"Statement":[{"Effect":"Allow","Principal":{"AWS":"*"}}]}',
            True,
        ),
        (
            "json",
            '{"Statement":[{"Condition":{"Bool":{"aws:SecureTransport":false}}}]}',
            '{"Statement":[{"Condition":{"Bool":{"aws:SecureTransport":"false"}}}]}',
            False,
        ),
        ("json", "%7B%0A%20%20%22a%22%3A%20%22x%22%7D", '{"a":["x"]}', False),
        ("tags_replace", [{"Key": "env", "Value": "prod"}], {"env": "prod"}, False),
        (
            "tags_replace",
            {"items": [{"key": "env", "value": "prod"}]},
            {"env": "prod", "x": "y"},
            True,
        ),
        ("value", "True", True, False),
        ("set", ["443", "80"], [80, 443], False),
        ("value", "10.0.0.5/24", "10.0.0.0/24", False),
        ("value", "2001:DB8::/32", "2001:db8::/32", False),
        ("set", ["10.0.0.0/16"], "10.0.0.0/16", False),
        ("set", {"items": ["sg-2", "sg-1"]}, ["sg-1", "sg-2"], False),
        ("set", ["sg-3"], ["sg-1", "sg-2"], True),
        ("set_add", "arn:p1", ["arn:p1"], False),
        ("set_add", "arn:p2", ["arn:p1"], True),
        ("set_remove", "arn:p9", ["arn:p1"], False),
        ("set_remove", "arn:p1", ["arn:p1"], True),
        ("tags", [{"key": "env", "value": "prod"}], {"env": "prod", "team": "a"}, False),
        ("tags", [{"Key": "env", "Value": "dev"}], {"env": "prod"}, True),
        ("tags_remove", ["env"], {"team": "a"}, False),
        ("tags_remove", [{"key": "team"}], {"team": "a"}, True),
        (
            "ip_permissions_add",
            {
                "items": [
                    {
                        "ipProtocol": "tcp",
                        "fromPort": 22,
                        "toPort": 22,
                        "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]},
                    }
                ]
            },
            [{"protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_blocks": ["0.0.0.0/0"]}],
            False,
        ),
        (
            "ip_permissions_add",
            {
                "items": [
                    {
                        "ipProtocol": "tcp",
                        "fromPort": 22,
                        "toPort": 22,
                        "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]},
                    }
                ]
            },
            [],
            True,
        ),
        (
            "ip_permissions_remove",
            {"items": [{"ipProtocol": "-1", "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]}}]},
            [{"protocol": "-1", "from_port": 0, "to_port": 0, "cidr_blocks": ["0.0.0.0/0"]}],
            True,
        ),
    ],
)
def test_transform_comparisons(transform: str, new: Any, old: Any, differs: bool) -> None:
    assert _differs(transform, new, old) is differs


def test_bad_values_raise_transform_error() -> None:
    for transform, value in (("json", "{not json"), ("bool", "maybe"), ("int", "x")):
        with pytest.raises(TransformError):
            TRANSFORMS[transform][0](value, None)


def test_canon_json_is_order_insensitive_for_statements() -> None:
    a = {"Statement": [{"Sid": "1"}, {"Sid": "2"}]}
    b = {"Statement": [{"Sid": "2"}, {"Sid": "1"}]}
    assert canon_json(a) == canon_json(b)
