"""The pure lifecycle policy: status moves, flood-control merges, baseline suppression."""

from __future__ import annotations

from dataclasses import replace

import pytest

from monitor import lifecycle
from monitor.lifecycle import LifecycleError
from monitor.types import Drift, DriftKind, Status
from tests.support.drifts import DRIFT

MOVES = [
    # (from, to, error code or None)
    ("detected", "investigating", None),
    ("detected", "resolved", None),
    ("investigating", "resolved", None),
    ("detected", "detected", "CONFLICT"),
    ("investigating", "investigating", "CONFLICT"),
    ("investigating", "detected", "CONFLICT"),
    ("resolved", "resolved", "CONFLICT"),
    ("resolved", "investigating", "CONFLICT"),
    ("resolved", "detected", "CONFLICT"),
    ("detected", "closed", "VALIDATION_ERROR"),
    ("resolved", "", "VALIDATION_ERROR"),
]


@pytest.mark.parametrize(("current", "to", "code"), MOVES)
def test_status_moves(current: str, to: str, code: str | None) -> None:
    if code is None:
        lifecycle.check_move("d-1", current, to)
        return
    with pytest.raises(LifecycleError) as err:
        lifecycle.check_move("d-1", current, to)
    assert err.value.code == code


@pytest.mark.parametrize(
    ("current", "to", "message"),
    [
        (
            "investigating",
            "detected",
            "cannot move drift d-1 from investigating to detected; allowed: resolved",
        ),
        (
            "resolved",
            "investigating",
            "cannot move drift d-1 from resolved to investigating; "
            "allowed: none (resolved is final)",
        ),
        ("detected", "x", "status must be one of detected, investigating, resolved"),
    ],
)
def test_refusals_say_why(current: str, to: str, message: str) -> None:
    with pytest.raises(LifecycleError) as err:
        lifecycle.check_move("d-1", current, to)
    assert err.value.message == message == str(err.value)


def test_not_found_names_the_drift() -> None:
    err = lifecycle.not_found("drift-x")
    assert (err.code, err.message) == ("NOT_FOUND", "Drift with ID 'drift-x' not found")


def test_every_status_has_its_moves() -> None:
    assert set(lifecycle.TRANSITIONS) == set(Status)
    assert lifecycle.STATUSES == ("detected", "investigating", "resolved")


@pytest.mark.parametrize(
    ("category", "kind"),
    [
        ("iam", "security"),
        ("network", "security"),
        ("encryption", "security"),
        ("logging", "compliance"),
        ("monitoring", "compliance"),
        ("compute", "configuration"),
        (None, "configuration"),
    ],
)
def test_drift_type(category: str | None, kind: str) -> None:
    assert lifecycle.drift_type(category) == kind


@pytest.mark.parametrize(
    ("baseline", "suppressed"),
    [
        (None, False),
        ((b'"t3.2xlarge"', b'"t3.micro"'), True),  # accepted exactly this change
        ((b'"t3.2xlarge"', b'"t3.nano"'), False),  # state moved on since it was accepted
        ((b'"t3.large"', b'"t3.micro"'), False),  # a different new value
    ],
)
def test_suppressed_by_an_accepted_baseline(
    baseline: tuple[bytes, bytes] | None, suppressed: bool
) -> None:
    assert lifecycle.suppressed(DRIFT, baseline) is suppressed


def test_canonical_bytes_ignore_key_order() -> None:
    assert lifecycle.canon({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == lifecycle.canon(
        {"a": [1, {"c": 3, "d": 2}], "b": 1}
    )


@pytest.mark.parametrize(
    ("other", "same"),
    [
        (replace(DRIFT, id="d-2", event_id="e-2", event_time="2026-03-02T00:00:00Z"), True),
        (replace(DRIFT, new_value="t3.large"), False),
        (replace(DRIFT, field="ebs_optimized"), False),
        (replace(DRIFT, resource_id="i-2"), False),
        (replace(DRIFT, kind=DriftKind.MISSING), False),
    ],
)
def test_dedup_key_groups_repeats_of_one_change(other: Drift, same: bool) -> None:
    assert (lifecycle.dedup_key(other) == lifecycle.dedup_key(DRIFT)) is same


def test_keys_name_the_target() -> None:
    assert lifecycle.baseline_key(DRIFT) == "aws|aws_instance|i-1|instance_type"
    coarse = replace(DRIFT, field=None)
    assert lifecycle.baseline_key(coarse) == "aws|aws_instance|i-1|event:ModifyInstanceAttribute"


@pytest.mark.parametrize(
    ("occurrences", "last_seen", "expected_last"),
    [
        (1, "2026-02-01T00:00:00Z", "2026-03-01T10:00:00Z"),  # the repeat is newer
        (4, "2026-04-01T00:00:00Z", "2026-04-01T00:00:00Z"),  # a late repeat keeps the newest
        (2, None, "2026-03-01T10:00:00Z"),
    ],
)
def test_merge_counts_the_repeat(
    occurrences: int, last_seen: str | None, expected_last: str
) -> None:
    own = [lifecycle.actor_entry(DRIFT)]
    m = lifecycle.merge(DRIFT, "parent", occurrences, last_seen, own, 1)
    assert m == lifecycle.Merge("parent", occurrences + 1, expected_last, "e-1", tuple(own), 1)


def _by(user: str, ip: str = "10.0.0.1") -> Drift:
    arn = f"arn:aws:iam::1:user/{user}"
    actor = replace(DRIFT.actor, arn=arn, user_name=user, principal_id=f"AIDA{user}")
    return replace(DRIFT, id=f"d-{user}", actor=actor, source_ip=ip)


def test_a_repeat_by_another_actor_is_named_and_counted() -> None:
    own = [lifecycle.actor_entry(DRIFT)]
    m = lifecycle.merge(_by("bob", "198.51.100.7"), "parent", 1, None, own, 1)
    assert m.actor_count == 2
    assert m.new_actor is not None and m.new_actor["user_name"] == "bob"
    assert m.new_actor["source_ip"] == "198.51.100.7"
    assert [a["user_name"] for a in m.actors] == ["u", "bob"]
    # bob again: known, nothing new.
    again = lifecycle.merge(_by("bob"), "parent", 2, None, list(m.actors), m.actor_count)
    assert again.new_actor is None and again.actor_count == 2 and again.actors == m.actors


def test_the_actor_list_is_bounded_but_the_count_is_not() -> None:
    actors = [lifecycle.actor_entry(_by(f"user{i}")) for i in range(lifecycle.MAX_ACTORS)]
    count = lifecycle.MAX_ACTORS
    m = lifecycle.merge(_by("late"), "parent", 5, None, actors, count)
    assert m.new_actor is not None and m.actor_count == count + 1
    assert len(m.actors) == lifecycle.MAX_ACTORS and "late" not in str(m.actors)
    # Seen before (an occurrence beyond the list): not new, not counted twice.
    seen = lifecycle.merge(_by("late"), "parent", 6, None, list(m.actors), m.actor_count, True)
    assert seen.new_actor is None and seen.actor_count == count + 1
