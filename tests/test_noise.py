"""Noise control, pure: match keys, the index, expiry, custom and disabled rules, apply
principals, the unmanaged scope and `.driftignore` (driftctl's documented examples)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import pytest

from monitor.detect import Detector
from monitor.engine import build_detector
from monitor.noise import (
    CustomRule,
    DisabledRule,
    MatchError,
    MatchIndex,
    NoiseRules,
    Suppression,
    UnmanagedScope,
    parse_driftignore,
    parse_match,
)
from monitor.noise.rules import drift_getter
from monitor.types import Drift, DriftKind, SkipReason
from streams.cloudtrail import decode_record
from tests.support.records import DEMO_STATE, resize

NOW = "2026-06-01T00:00:00.000Z"


@functools.cache
def _detector() -> Detector:
    return build_detector([DEMO_STATE], clock=lambda: NOW)


def _fresh() -> Detector:
    """A detector with noise rules of its own (the cached one's stay empty)."""
    d = _detector()
    return Detector(d.catalogue, d.severity, d.index, (), d.clock)


def _resized(detector: Detector | None = None, event_id: str = "e-1") -> Any:
    return (detector or _detector()).detect(decode_record(resize(event_id, "t3.2xlarge")))


def _drift() -> Drift:
    [d] = _resized().drifts
    return d  # type: ignore[no-any-return]


def _sup(match: dict[str, str], expires_at: str | None = None, sid: str = "sup-1") -> Suppression:
    return Suppression.of(
        {
            "id": sid,
            "match": match,
            "reason": "known",
            "created_by": "tests",
            "created_at": NOW,
            "expires_at": expires_at,
        }
    )


def _suppressed_by(match: dict[str, str], drift: Drift | None = None) -> str | None:
    judged = NoiseRules(suppressions=(_sup(match),)).judge(drift or _drift(), NOW)
    assert isinstance(judged, Drift)
    return judged.suppressed_by


# The resize drift: aws_instance.web (i-0d3m0web00000001), instance_type, by alice in
# 123456789012 / us-east-1, ModifyInstanceAttribute, medium.
KEYS = [
    ("resource_address", "aws_instance.web", "aws_instance.db"),
    ("resource_address", "aws_instance.*", "module.*"),
    ("resource_type", "aws_instance", "aws_s3_bucket"),
    ("resource_type", "aws_*", "google_*"),
    ("resource_id", "i-0d3m0web00000001", "i-other"),
    ("resource_id", "i-0d3m0web*", "i-0d3m0db*"),
    ("field", "instance_type", "instance"),
    ("kind", "modified", "missing"),
    ("actor", "alice@example.com", "bob@example.com"),
    ("actor", "arn:aws:iam::123456789012:role/Admin", "arn:aws:iam::123456789012:role/CI"),
    ("actor", "arn:aws:sts::*:assumed-role/Admin/*", "arn:aws:sts::*:assumed-role/CI/*"),
    ("account", "123456789012", "999999999999"),
    ("region", "us-east-1", "eu-*"),
    ("event_name", "ModifyInstanceAttribute", "StopInstances"),
    ("event_name", "Modify*", "Delete*"),
    ("severity", "medium", "critical"),
]


@pytest.mark.parametrize(("key", "hit", "miss"), KEYS)
def test_each_match_key_alone(key: str, hit: str, miss: str) -> None:
    assert _suppressed_by({key: hit}) == "sup-1"
    assert _suppressed_by({key: miss}) is None


def test_match_keys_combined_must_all_hold() -> None:
    both = {"resource_type": "aws_instance", "actor": "alice@*", "region": "us-east-1"}
    assert _suppressed_by(both) == "sup-1"
    assert _suppressed_by({**both, "actor": "bob@*"}) is None
    assert _suppressed_by({**both, "region": "eu-west-1"}) is None


def test_field_is_a_path_prefix() -> None:
    tagged = dataclasses.replace(_drift(), field="tags.Owner")
    assert _suppressed_by({"field": "tags"}, tagged) == "sup-1"
    assert _suppressed_by({"field": "tags.Owner"}, tagged) == "sup-1"
    assert _suppressed_by({"field": "tag"}, tagged) is None  # a prefix of segments, not text
    assert _suppressed_by({"field": "tags.Own"}, tagged) is None


@pytest.mark.parametrize(
    "match",
    [{}, {"colour": "red"}, {"kind": "changed"}, {"severity": "urgent"}, {"resource_id": ""}],
)
def test_bad_matches_are_refused(match: dict[str, str]) -> None:
    with pytest.raises(MatchError):
        parse_match(match)


def test_expiry_uses_the_clock_reading() -> None:
    rules = NoiseRules(suppressions=(_sup({"resource_type": "aws_instance"}, "2026-06-02T00:00Z"),))
    before = rules.judge(_drift(), NOW)
    after = rules.judge(_drift(), "2026-06-02T00:00:00.001Z")
    assert isinstance(before, Drift) and before.suppressed_by == "sup-1"
    assert isinstance(after, Drift) and after.suppressed_by is None


def test_an_expired_suppression_lets_a_later_one_match() -> None:
    old = _sup({"resource_type": "aws_instance"}, "2026-01-01T00:00:00Z", "sup-old")
    new = _sup({"actor": "alice@example.com"}, None, "sup-new")
    judged = NoiseRules(suppressions=(old, new)).judge(_drift(), NOW)
    assert isinstance(judged, Drift) and judged.suppressed_by == "sup-new"


def test_the_index_checks_only_its_buckets() -> None:
    """1,000 suppressions of other resources cost one lookup, not 1,000 checks."""
    items = [(parse_match({"resource_id": f"i-{n:05d}"}), n) for n in range(1000)]
    items.append((parse_match({"resource_id": "i-0d3m0web00000001", "field": "instance_*"}), -1))
    index = MatchIndex(items)
    get = drift_getter(_drift())
    calls: list[str] = []

    def counting(key: str) -> tuple[str, ...]:
        calls.append(key)
        return get(key)

    assert index.first(counting) == -1
    # One lookup per anchored key, then the one candidate's two keys.
    assert calls == ["resource_id", "field", "resource_id"]
    assert not index.scan


def test_the_earliest_added_matching_item_wins() -> None:
    index = MatchIndex(
        [
            (parse_match({"event_name": "Modify*"}), "glob first"),
            (parse_match({"resource_id": "i-0d3m0web00000001"}), "exact later"),
        ]
    )
    assert index.first(drift_getter(_drift())) == "glob first"


def test_suppressed_drifts_are_marked_not_dropped_by_detection() -> None:
    det = _fresh()
    det.noise.update(suppressions=(_sup({"resource_address": "aws_instance.web"}),))
    [d] = _resized(det).drifts
    assert d.suppressed_by == "sup-1" and d.as_dict()["suppressed_by"] == "sup-1"
    assert "suppressed_by" not in _drift().as_dict()


def _custom(match: dict[str, str], **out: str) -> CustomRule:
    return CustomRule.of(
        {"id": "rule-1", "match": match, "created_by": "t", "created_at": NOW, **out}
    )


def test_custom_rules_come_before_the_built_in_severity_rules() -> None:
    det = _fresh()
    assert _resized(det).drifts[0].severity == "medium"
    det.noise.update(
        custom_rules=(
            _custom(
                {"event_name": "ModifyInstanceAttribute", "field": "instance_type"},
                severity="critical",
            ),
        )
    )
    assert _resized(det, "e-2").drifts[0].severity == "critical"
    det.noise.update(custom_rules=(_custom({"resource_type": "aws_instance"}, category="iam"),))
    d = _resized(det, "e-3").drifts[0]
    assert d.category == "iam" and d.severity == det.severity.rate("iam", d.field, "modified", "x")


def test_custom_rules_match_state_tags() -> None:
    det = _fresh()
    tags = det.index.by_address["aws_instance.web"].attributes.get("tags") or {}
    assert tags, "the demo instance carries tags"
    key, value = next(iter(tags.items()))
    det.noise.update(custom_rules=(_custom({"tag": f"{key}={value}"}, severity="high"),))
    assert _resized(det).drifts[0].severity == "high"
    det.noise.update(custom_rules=(_custom({"tag": f"{key}=not-{value}"}, severity="high"),))
    assert _resized(det, "e-2").drifts[0].severity == "medium"
    det.noise.update(custom_rules=(_custom({"tag": key}, severity="low"),))
    assert _resized(det, "e-3").drifts[0].severity == "low"


def test_custom_rule_bodies_are_checked() -> None:
    with pytest.raises(MatchError):
        _custom({"event_name": "X"})  # neither severity nor category
    with pytest.raises(MatchError):
        _custom({"actor": "bob"}, severity="high")  # not a custom rule key
    with pytest.raises(MatchError):
        _custom({"event_name": "X"}, severity="urgent")


def _off(match: dict[str, str]) -> DisabledRule:
    return DisabledRule.of({"id": "off-1", "match": match, "created_by": "t", "created_at": NOW})


@pytest.mark.parametrize(
    "match", [{"event_name": "ModifyInstanceAttribute"}, {"resource_type": "aws_instance"}]
)
def test_disabled_rules_stop_reporting(match: dict[str, str]) -> None:
    det = _fresh()
    det.noise.update(disabled_rules=(_off(match),))
    found = _resized(det)
    assert found.drifts == () and found.skipped == SkipReason.DISABLED
    det.noise.update(disabled_rules=())
    assert len(_resized(det, "e-2").drifts) == 1


def test_apply_principals_change_at_runtime() -> None:
    det = _fresh()
    det.noise.update(apply_principals=frozenset({"arn:aws:iam::123456789012:role/Admin"}))
    assert _resized(det).skipped == SkipReason.TERRAFORM
    det.noise.update(apply_principals=frozenset())
    assert len(_resized(det, "e-2").drifts) == 1


def test_unmanaged_scope_most_specific_setting_wins() -> None:
    unmanaged = dataclasses.replace(_drift(), kind=DriftKind.UNMANAGED, resource_address=None)
    scope = UnmanagedScope.of(
        {
            "default": "state",
            "accounts": {"123456789012": "account"},
            "regions": {"us-east-1": "state"},
            "resource_types": {"aws_instance": "account"},
        }
    )
    assert scope.reports(unmanaged)
    assert not scope.reports(dataclasses.replace(unmanaged, resource_type="aws_vpc"))
    assert scope.reports(dataclasses.replace(unmanaged, resource_type="aws_vpc", region="eu-1"))
    assert not scope.reports(
        dataclasses.replace(unmanaged, resource_type="aws_vpc", account_id="1", region="eu-1")
    )
    rules = NoiseRules(unmanaged=UnmanagedScope.of({"default": "state"}))
    assert rules.judge(unmanaged, NOW) == SkipReason.OUT_OF_SCOPE
    assert rules.judge(_drift(), NOW) == _drift()  # a managed resource's drift: in scope
    with pytest.raises(ValueError):
        UnmanagedScope.of({"default": "everything"})


# The examples driftctl's documentation gives for .driftignore, and its escaping rules.
DRIFTCTL_EXAMPLE = """\
# Will ignore S3 bucket called my-bucket
aws_s3_bucket.my-bucket
# Will ignore every aws_instance resource
aws_instance.*
# Will ignore environment for all lambda functions
aws_lambda_function.*.environment
# Will ignore lastModified for my-lambda-name lambda function
aws_lambda_function.my-lambda-name.last_modified
# A name with dots in it
aws_s3_bucket.my\\.dotted\\.bucket
"""


def _on(rtype: str, rid: str, field: str | None = None) -> Drift:
    return dataclasses.replace(_drift(), resource_type=rtype, resource_id=rid, field=field)


@pytest.mark.parametrize(
    ("drift", "line"),
    [
        (("aws_s3_bucket", "my-bucket", "acl"), 2),
        (("aws_s3_bucket", "my-bucket", None), 2),
        (("aws_s3_bucket", "other-bucket", "acl"), None),
        (("aws_instance", "i-123", "instance_type"), 4),
        (("aws_lambda_function", "any", "environment"), 6),
        (("aws_lambda_function", "any", "environment.variables.KEY"), 6),
        (("aws_lambda_function", "any", "runtime"), None),
        (("aws_lambda_function", "my-lambda-name", "Last_Modified"), 8),
        (("aws_lambda_function", "my-lambda-name", None), None),  # field lines need a field
        (("aws_s3_bucket", "my.dotted.bucket", "acl"), 10),
        (("aws_s3_bucket", "my", "dotted.bucket"), None),
    ],
)
def test_driftignore_documented_examples(drift: tuple[str, str, str | None], line: int | None):
    ignore = parse_driftignore(DRIFTCTL_EXAMPLE)
    assert not ignore.problems
    assert ignore.ignored_by(_on(*drift)) == (f".driftignore:{line}" if line else None)


def test_driftignore_negation_ignores_all_but_buckets() -> None:
    ignore = parse_driftignore("*\n!aws_s3_bucket\n")
    assert ignore.ignored_by(_on("aws_instance", "i-1")) == ".driftignore:1"
    assert ignore.ignored_by(_on("aws_s3_bucket", "b", "acl")) is None
    again = parse_driftignore("*\n!aws_s3_bucket\naws_s3_bucket.logs\n")
    assert again.ignored_by(_on("aws_s3_bucket", "logs")) == ".driftignore:3"
    assert again.ignored_by(_on("aws_s3_bucket", "data")) is None


def test_driftignore_wildcards_and_bad_lines() -> None:
    ignore = parse_driftignore("aws_iam_*.ci-**\naws_s3_bucket.\n\n  # indented comment\n")
    assert ignore.ignored_by(_on("aws_iam_role", "ci-deployer")) == ".driftignore:1"
    assert ignore.ignored_by(_on("aws_iam_role", "prod")) is None
    assert ignore.problems == (".driftignore:2: empty name in 'aws_s3_bucket.'",)


def test_driftignore_marks_drifts_in_detection() -> None:
    det = _fresh()
    det.noise.update(ignore=parse_driftignore("aws_instance.i-0d3m0web00000001.instance_type\n"))
    [d] = _resized(det).drifts
    assert d.suppressed_by == ".driftignore:1"
