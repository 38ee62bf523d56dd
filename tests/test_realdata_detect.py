"""Detection over real CloudTrail logs, against a state rebuilt from Terraform's own calls."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.detect import Detector
from monitor.tfstate import StateIndex, parse_state
from monitor.types import Drift, DriftKind, SkipReason
from rules import load_catalogue, load_severity
from rules.catalogue import Catalogue
from streams.cloudtrail import decode_record
from tests.support.realdata import cloudtrail_records
from tests.support.replay_state import replay_state

GOLDEN = Path(__file__).parent / "golden" / "invictus_drifts.jsonl"


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


@pytest.fixture(scope="module")
def invictus_state(catalogue: Catalogue) -> dict[str, Any]:
    return replay_state(cloudtrail_records("invictus_aws_dataset"), catalogue)


@pytest.fixture(scope="module")
def invictus_drifts(catalogue: Catalogue, invictus_state: dict[str, Any]) -> list[Drift]:
    index = StateIndex([parse_state(invictus_state, "replayed.tfstate")], catalogue.identifiers)
    detector = Detector(catalogue, load_severity(), index)
    records = sorted(cloudtrail_records("invictus_aws_dataset"), key=lambda r: r["eventTime"])
    return [d for r in records for d in detector.detect(decode_record(r)).drifts]


def _summary(d: Drift) -> dict[str, Any]:
    return {
        "event": d.event_name,
        "event_id": d.event_id,
        "kind": d.kind.value,
        "severity": d.severity,
        "resource": d.resource_address or f"{d.resource_type}:{d.resource_id}",
        "field": d.field,
        "actor": d.actor.user_name,
    }


def test_invictus_drifts_match_golden(invictus_drifts: list[Drift], update_golden: bool) -> None:
    got = [_summary(d) for d in invictus_drifts]
    if update_golden:
        GOLDEN.write_text("".join(json.dumps(g, sort_keys=True) + "\n" for g in got))
    assert GOLDEN.exists(), f"{GOLDEN} is missing: run pytest --update-golden to write it"
    want = [json.loads(line) for line in GOLDEN.read_text().splitlines()]
    assert got == want


def test_invictus_key_findings(invictus_drifts: list[Drift]) -> None:
    by = {(d.event_name, d.field): d for d in invictus_drifts}
    trust = by[("UpdateAssumeRolePolicy", "assume_role_policy")]
    assert trust.severity == "critical" and trust.actor.user_name == "bert-jan"
    assert {"AWS": "arn:aws:iam::193672423079:root"} in [
        s["Principal"] for s in trust.new_value["Statement"]
    ]
    ssh = by[("AuthorizeSecurityGroupIngress", "ingress")]
    assert {
        "protocol": "tcp",
        "from_port": "22",
        "to_port": "22",
        "source": "cidr:0.0.0.0/0",
    } in ssh.new_value
    # Terraform itself had opened 443; the attacker's call adds 22 (in the legacy flat form).
    assert [r["from_port"] for r in ssh.old_value] == ["443"]
    policy = by[("PutBucketPolicy", "policy")]
    assert policy.new_value["Statement"][0]["Principal"] == {
        "AWS": "arn:aws:iam::193672423079:root"
    }
    kinds = {d.kind for d in invictus_drifts}
    assert kinds == {DriftKind.MODIFIED, DriftKind.UNMANAGED, DriftKind.MISSING}
    unmanaged = {d.resource_type for d in invictus_drifts if d.kind is DriftKind.UNMANAGED}
    assert {"aws_iam_user", "aws_iam_access_key", "aws_iam_user_policy_attachment"} <= unmanaged
    missing = {d.event_name for d in invictus_drifts if d.kind is DriftKind.MISSING}
    assert {"DeleteFlowLogs", "DeleteDBInstance"} <= missing
    # Terraform's own calls and agent telemetry are never drift.
    assert not any("Terraform/" in (d.user_agent or "") for d in invictus_drifts)
    assert not any(
        d.event_source == "ssm.amazonaws.com" and d.event_name.startswith("UpdateInstance")
        for d in invictus_drifts
    )


def test_restoring_the_declared_policy_is_not_drift(invictus_drifts: list[Drift]) -> None:
    # The dataset's second UpdateAssumeRolePolicy puts Terraform's policy back.
    updates = [
        r
        for r in cloudtrail_records("invictus_aws_dataset")
        if r["eventName"] == "UpdateAssumeRolePolicy" and not r.get("errorCode")
    ]
    drifted = {d.event_id for d in invictus_drifts if d.event_name == "UpdateAssumeRolePolicy"}
    assert len(updates) == 2 and len(drifted) == 1


# Per folder: how many records drifted, and how many were skipped for each reason.
OUTCOMES = {
    "stratus_detonation_logs": {
        # AttachUserPolicy and AttachRolePolicy to an undeclared user/role: new attachments.
        "drift": 12,
        SkipReason.READ_ONLY: 212,
        SkipReason.FAILED: 52,
        SkipReason.UNMAPPED: 20,
        SkipReason.NOT_IN_STATE: 13,
        SkipReason.NO_ID: 1,
    },
    "otrf_security_datasets": {SkipReason.READ_ONLY: 98, SkipReason.SERVICE: 5},
    "awsdocs_examples": {
        "drift": 12,
        SkipReason.READ_ONLY: 43,
        SkipReason.UNMAPPED: 39,
        SkipReason.NOT_IN_STATE: 24,
        SkipReason.FAILED: 3,
        SkipReason.SERVICE: 1,
    },
    "falco_trace_files": {SkipReason.NOT_IN_STATE: 1},
}


@pytest.mark.parametrize("folder", sorted(OUTCOMES))
def test_every_real_file_runs_through_detection(
    catalogue: Catalogue, invictus_state: dict[str, Any], folder: str
) -> None:
    index = StateIndex([parse_state(invictus_state, "replayed.tfstate")], catalogue.identifiers)
    detector = Detector(catalogue, load_severity(), index)
    outcomes: Counter[str] = Counter()
    for rec in cloudtrail_records(folder):
        result = detector.detect(decode_record(rec))
        for d in result.drifts:
            orjson.dumps(d.as_dict())
        # Exactly one outcome per record: drifts, or a named reason for none.
        assert bool(result.drifts) != (result.skipped is not None), rec.get("eventID")
        outcomes["drift" if result.drifts else SkipReason(result.skipped)] += 1
    assert dict(outcomes) == OUTCOMES[folder]
