"""Detection rules, table by table, over a small catalogue and hand-built states."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from monitor.clock import fixed_clock
from monitor.detect import Detector
from monitor.redact import REDACTED
from monitor.tfstate import StateIndex, parse_state
from monitor.types import DriftKind, SkipReason
from rules.catalogue import load_catalogue
from rules.severity import load_severity
from streams.cloudtrail import decode_record
from tests.support.realdata import cloudtrail_records

CATALOGUE = {
    "iam.yaml": """
version: 1
provider: aws
event_source: iam.amazonaws.com
category: iam
identifiers:
  aws_iam_role: [name, unique_id]
events:
  UpdateAssumeRolePolicy:
    change: modify
    resource: aws_iam_role
    id: requestParameters.roleName
    attributes:
      assume_role_policy: {from: requestParameters.policyDocument, as: json}
  AttachRolePolicy:
    change: modify
    resource: aws_iam_role
    id: requestParameters.roleName
    attributes:
      managed_policy_arns: {from: requestParameters.policyArn, as: set_add}
  TagRole:
    change: modify
    resource: aws_iam_role
    id: requestParameters.roleName
  CreateRole:
    change: create
    resource: aws_iam_role
    id: [responseElements.role.roleName, requestParameters.roleName]
  DeleteRole:
    change: delete
    resource: aws_iam_role
    id: requestParameters.roleName
""",
    "ec2.yaml": """
version: 1
provider: aws
event_source: ec2.amazonaws.com
category: compute
events:
  ModifyInstanceCreditsNow:
    skip: a made-up operational call (the real ones are listed in rules/catalogue)
  ModifyInstanceAttribute:
    change: modify
    resource: aws_instance
    id: requestParameters.instanceId
    attributes:
      instance_type: requestParameters.instanceType.value
      disable_api_termination: {from: requestParameters.disableApiTermination.value, as: bool}
  TerminateInstances:
    change: delete
    resource: aws_instance
    id: requestParameters.instancesSet.items[*].instanceId
  AuthorizeSecurityGroupIngress:
    change: modify
    resource: aws_security_group
    category: network
    id: requestParameters.groupId
    attributes:
      ingress: {from: requestParameters.ipPermissions, as: ip_permissions_add}
""",
    "rds.yaml": """
version: 1
provider: aws
event_source: rds.amazonaws.com
category: data
identifiers:
  aws_db_instance: [identifier]
events:
  ModifyDBInstance:
    change: modify
    resource: aws_db_instance
    id: requestParameters.dBInstanceIdentifier
    attributes:
      password: requestParameters.masterUserPassword
      publicly_accessible: {from: requestParameters.publiclyAccessible, as: bool}
""",
}

ROLE_POLICY = (
    '{"Version":"2012-10-17","Statement":[{"Sid":"","Effect":"Allow",'
    '"Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}'
)


def _resource(rtype: str, name: str, attrs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "mode": "managed",
        "type": rtype,
        "name": name,
        "provider": 'provider["registry.terraform.io/hashicorp/aws"]',
        "instances": [{"schema_version": 0, "attributes": attrs, **extra}],
    }


STATE = {
    "version": 4,
    "terraform_version": "1.6.0",
    "serial": 7,
    "lineage": "l",
    "resources": [
        _resource(
            "aws_iam_role",
            "backdoor",
            {
                "id": "stratus-red-team-backdoor-r-role",
                "name": "stratus-red-team-backdoor-r-role",
                "arn": "arn:aws:iam::123837392027:role/stratus-red-team-backdoor-r-role",
                "unique_id": "AROAEXAMPLE",
                "assume_role_policy": ROLE_POLICY,
                "managed_policy_arns": ["arn:aws:iam::aws:policy/ReadOnlyAccess"],
            },
        ),
        _resource(
            "aws_instance",
            "web",
            {"id": "i-0aaa", "instance_type": "t3.micro", "disable_api_termination": False},
        ),
        _resource("aws_instance", "api", {"id": "i-0bbb", "instance_type": "t3.micro"}),
        _resource(
            "aws_security_group",
            "open",
            {
                "id": "sg-04cfb7a4712d75b00",
                "name": "open",
                "ingress": [
                    {
                        "protocol": "tcp",
                        "from_port": 443,
                        "to_port": 443,
                        "cidr_blocks": ["10.0.0.0/8"],
                        "ipv6_cidr_blocks": [],
                        "security_groups": [],
                        "prefix_list_ids": [],
                        "self": False,
                    }
                ],
            },
        ),
        _resource(
            "aws_db_instance",
            "db",
            {
                "id": "db-ABC",
                "identifier": "prod-db",
                "password": "s3cret",
                "publicly_accessible": False,
            },
            sensitive_attributes=[[{"type": "get_attr", "value": "password"}]],
        ),
    ],
}


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Detector:
    root = tmp_path_factory.mktemp("catalogue") / "aws"
    root.mkdir()
    for name, text in CATALOGUE.items():
        (root / name).write_text(text)
    catalogue = load_catalogue(root.parent)
    index = StateIndex([parse_state(STATE, "test.tfstate")], catalogue.identifiers)
    return Detector(
        catalogue,
        load_severity(),
        index,
        ["arn:aws:iam::1:role/terraform-ci"],
        fixed_clock("2024-05-01T00:00:00.000Z"),
    )


def _record(name: str, source: str, request: Any, response: Any = None, **over: Any) -> dict:
    rec: dict[str, Any] = {
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": "AIDA1",
            "userName": "mallory",
            "arn": "arn:aws:iam::123837392027:user/mallory",
            "accountId": "123837392027",
        },
        "eventTime": "2024-05-01T10:00:00Z",
        "eventSource": source,
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "203.0.113.9",
        "userAgent": "aws-cli/2.15",
        "requestParameters": request,
        "responseElements": response,
        "eventID": f"evt-{name}",
        "readOnly": False,
        "recipientAccountId": "123837392027",
    }
    rec.update(over)
    return rec


def _stratus(name: str) -> dict[str, Any]:
    records = sorted(cloudtrail_records("invictus_aws_dataset"), key=lambda r: r["eventTime"])
    for rec in records:
        if (
            rec["eventName"] == name
            and "stratus" in str(rec.get("userAgent"))
            and "Terraform" not in str(rec.get("userAgent"))
        ):
            return rec
    raise AssertionError(name)


def test_real_trust_policy_backdoor_is_an_attribute_drift(detector: Detector) -> None:
    # The first UpdateAssumeRolePolicy in the real dataset adds an external account.
    rec = _stratus("UpdateAssumeRolePolicy")
    result = detector.detect(decode_record(rec))
    [drift] = result.drifts
    assert drift.kind is DriftKind.MODIFIED and drift.field == "assume_role_policy"
    assert drift.resource_address == "aws_iam_role.backdoor"
    assert drift.severity == "critical"
    principals = [s["Principal"] for s in drift.new_value["Statement"]]
    assert {"AWS": "arn:aws:iam::193672423079:root"} in principals
    assert drift.old_value["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    assert drift.actor.user_name == "bert-jan" and drift.actor.type == "IAMUser"
    assert drift.event_id == rec["eventID"]


def test_same_policy_in_another_spelling_is_not_drift(detector: Detector) -> None:
    encoded = (
        "%7B%22Statement%22%3A%5B%7B%22Action%22%3A%22sts%3AAssumeRole%22%2C%22Effect%22"
        "%3A%22Allow%22%2C%22Principal%22%3A%7B%22Service%22%3A%22ec2.amazonaws.com%22%7D"
        "%2C%22Sid%22%3A%22%22%7D%5D%2C%22Version%22%3A%222012-10-17%22%7D"
    )
    rec = _record(
        "UpdateAssumeRolePolicy",
        "iam.amazonaws.com",
        {"roleName": "stratus-red-team-backdoor-r-role", "policyDocument": encoded},
    )
    result = detector.detect(decode_record(rec))
    assert result.drifts == () and result.skipped == SkipReason.NO_CHANGE


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        ({"instanceId": "i-0aaa", "instanceType": {"value": "t3.2xlarge"}}, ["instance_type"]),
        (
            {"instanceId": "i-0aaa", "disableApiTermination": {"value": True}},
            ["disable_api_termination"],
        ),
        ({"instanceId": "i-0aaa", "instanceType": {"value": "t3.micro"}}, []),
        ({"instanceId": "i-0aaa", "userData": {"value": "<sensitiveDataRemoved>"}}, [None]),
    ],
)
def test_modify_instance_attribute(detector: Detector, request_: dict, fields: list) -> None:
    result = detector.detect(
        decode_record(_record("ModifyInstanceAttribute", "ec2.amazonaws.com", request_))
    )
    assert [d.field for d in result.drifts] == fields
    for d in result.drifts:
        assert d.kind is DriftKind.MODIFIED and d.resource_address == "aws_instance.web"
    if fields == ["instance_type"]:
        assert (result.drifts[0].old_value, result.drifts[0].new_value) == (
            "t3.micro",
            "t3.2xlarge",
        )


def test_open_ssh_to_the_world_is_an_ingress_drift(detector: Detector) -> None:
    rec = _record(
        "AuthorizeSecurityGroupIngress",
        "ec2.amazonaws.com",
        {
            "groupId": "sg-04cfb7a4712d75b00",
            "ipPermissions": {
                "items": [
                    {
                        "ipProtocol": "tcp",
                        "fromPort": 22,
                        "toPort": 22,
                        "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]},
                    }
                ]
            },
        },
    )
    [drift] = detector.detect(decode_record(rec)).drifts
    assert drift.field == "ingress" and drift.severity == "critical"
    assert {
        "protocol": "tcp",
        "from_port": "22",
        "to_port": "22",
        "source": "cidr:0.0.0.0/0",
    } in drift.new_value
    assert len(drift.new_value) == len(drift.old_value) + 1


def test_set_add_reports_the_new_member(detector: Detector) -> None:
    rec = _record(
        "AttachRolePolicy",
        "iam.amazonaws.com",
        {
            "roleName": "stratus-red-team-backdoor-r-role",
            "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess",
        },
    )
    [drift] = detector.detect(decode_record(rec)).drifts
    assert drift.field == "managed_policy_arns" and drift.severity == "critical"
    assert "arn:aws:iam::aws:policy/AdministratorAccess" in drift.new_value
    # Attaching what is already declared is not drift.
    again = _record(
        "AttachRolePolicy",
        "iam.amazonaws.com",
        {
            "roleName": "stratus-red-team-backdoor-r-role",
            "policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess",
        },
    )
    assert detector.detect(decode_record(again)).drifts == ()


def test_coarse_drift_when_the_value_cannot_be_extracted(detector: Detector) -> None:
    rec = _record("TagRole", "iam.amazonaws.com", {"roleName": "AROAEXAMPLE"})
    [drift] = detector.detect(decode_record(rec)).drifts
    assert drift.field is None and drift.kind is DriftKind.MODIFIED
    assert drift.resource_address == "aws_iam_role.backdoor"  # found by unique_id


def test_unmanaged_and_missing(detector: Detector) -> None:
    create = _record(
        "CreateRole",
        "iam.amazonaws.com",
        {"roleName": "shadow-admin"},
        {"role": {"roleName": "shadow-admin", "arn": "arn:aws:iam::1:role/shadow"}},
    )
    [drift] = detector.detect(decode_record(create)).drifts
    assert (drift.kind, drift.resource_type, drift.resource_id, drift.resource_address) == (
        DriftKind.UNMANAGED,
        "aws_iam_role",
        "shadow-admin",
        None,
    )
    known = _record(
        "CreateRole", "iam.amazonaws.com", {"roleName": "stratus-red-team-backdoor-r-role"}
    )
    assert detector.detect(decode_record(known)).skipped == SkipReason.IN_STATE
    delete = _record(
        "DeleteRole", "iam.amazonaws.com", {"roleName": "stratus-red-team-backdoor-r-role"}
    )
    [missing] = detector.detect(decode_record(delete)).drifts
    assert missing.kind is DriftKind.MISSING and missing.severity == "high"
    gone = _record("DeleteRole", "iam.amazonaws.com", {"roleName": "never-managed"})
    assert detector.detect(decode_record(gone)).skipped == SkipReason.NOT_IN_STATE


def test_fan_out_gives_one_drift_per_resource_sorted(detector: Detector) -> None:
    rec = _record(
        "TerminateInstances",
        "ec2.amazonaws.com",
        {
            "instancesSet": {
                "items": [
                    {"instanceId": "i-0bbb"},
                    {"instanceId": "i-0aaa"},
                    {"instanceId": "i-0zzz"},
                ]
            }
        },
    )
    drifts = detector.detect(decode_record(rec)).drifts
    assert [d.resource_address for d in drifts] == ["aws_instance.api", "aws_instance.web"]
    assert len({d.id for d in drifts}) == 2


TF_ROLE = {
    "type": "AssumedRole",
    "principalId": "AROA:ci",
    "accountId": "1",
    "arn": "arn:aws:sts::1:assumed-role/terraform-ci/ci-run-7",
    "sessionContext": {
        "sessionIssuer": {
            "type": "Role",
            "userName": "terraform-ci",
            "arn": "arn:aws:iam::1:role/terraform-ci",
        }
    },
}
SERVICE_ROLE = {
    "type": "AssumedRole",
    "principalId": "AROA:x",
    "accountId": "1",
    "arn": "arn:aws:sts::1:assumed-role/AWSServiceRoleForRDS/x",
    "invokedBy": "rds.amazonaws.com",
    "sessionContext": {
        "sessionIssuer": {
            "type": "Role",
            "arn": "arn:aws:iam::1:role/aws-service-role/rds.amazonaws.com/AWSServiceRoleForRDS",
        }
    },
}


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"errorCode": "AccessDenied"}, SkipReason.FAILED),
        ({"readOnly": True}, SkipReason.READ_ONLY),
        (
            {"userAgent": "[APN/1.0 HashiCorp/1.0 Terraform/1.5.2 (+https://www.terraform.io)]"},
            SkipReason.TERRAFORM,
        ),
        ({"userIdentity": TF_ROLE}, SkipReason.TERRAFORM),
        (
            {"userIdentity": {"type": "AWSService", "invokedBy": "ec2.amazonaws.com"}},
            SkipReason.SERVICE,
        ),
        ({"userIdentity": SERVICE_ROLE}, SkipReason.SERVICE),
    ],
)
def test_not_drift(detector: Detector, over: dict, reason: str) -> None:
    rec = _record(
        "ModifyInstanceAttribute",
        "ec2.amazonaws.com",
        {"instanceId": "i-0aaa", "instanceType": {"value": "t3.2xlarge"}},
        **over,
    )
    result = detector.detect(decode_record(rec))
    assert result.drifts == () and result.skipped == reason


def test_unknown_read_call_and_unknown_mutating_call(detector: Detector) -> None:
    read = _record("DescribeInstances", "ec2.amazonaws.com", {}, readOnly=None)
    assert detector.detect(decode_record(read)).skipped == SkipReason.READ_ONLY
    unknown = _record("ModifyInstancePlacement", "ec2.amazonaws.com", {"instanceId": "i-0aaa"})
    [drift] = detector.detect(decode_record(unknown)).drifts
    assert drift.field is None and drift.resource_address == "aws_instance.web"
    unrelated = _record("ModifyInstancePlacement", "ec2.amazonaws.com", {"instanceId": "i-9"})
    assert detector.detect(decode_record(unrelated)).skipped == SkipReason.UNMAPPED


def test_a_call_listed_as_not_drift_gives_none_even_on_a_managed_resource(
    detector: Detector,
) -> None:
    # Unlisted, the same record would be an unmapped mutating call naming a managed instance.
    rec = _record("ModifyInstanceCreditsNow", "ec2.amazonaws.com", {"instanceId": "i-0aaa"})
    assert detector.detect(decode_record(rec)).skipped == SkipReason.NOT_DRIFT
    rec["eventName"] = "ModifyInstanceCreditsLater"
    assert detector.detect(decode_record(rec)).drifts


def test_sensitive_values_never_leave(detector: Detector) -> None:
    rec = _record(
        "ModifyDBInstance",
        "rds.amazonaws.com",
        {
            "dBInstanceIdentifier": "prod-db",
            "masterUserPassword": "n3w-secret",
            "publiclyAccessible": True,
        },
    )
    drifts = {d.field: d for d in detector.detect(decode_record(rec)).drifts}
    assert drifts["password"].old_value == REDACTED and drifts["password"].new_value == REDACTED
    assert drifts["publicly_accessible"].new_value is True
    assert drifts["publicly_accessible"].severity == "critical"
    assert "n3w-secret" not in str([d.as_dict() for d in drifts.values()])


def test_detection_is_deterministic_and_idempotent(detector: Detector) -> None:
    rec = _stratus("UpdateAssumeRolePolicy")
    first = detector.detect(decode_record(copy.deepcopy(rec)))
    second = detector.detect(decode_record(copy.deepcopy(rec)))
    assert first == second and first.drifts[0].id.startswith("drift-")
    assert first.drifts[0].detected_at == "2024-05-01T00:00:00.000Z"


def test_user_severity_override(tmp_path: Path, detector: Detector) -> None:
    override = tmp_path / "sev.yaml"
    override.write_text(
        "version: 1\nattributes:\n  - match: instance_type\n    severity: low\n"
        "events:\n  iam.amazonaws.com:TagRole: high\n"
    )
    custom = Detector(detector.catalogue, load_severity(override), detector.index)
    rec = _record(
        "ModifyInstanceAttribute",
        "ec2.amazonaws.com",
        {"instanceId": "i-0aaa", "instanceType": {"value": "m5.large"}},
    )
    assert custom.detect(decode_record(rec)).drifts[0].severity == "low"
    tag = _record("TagRole", "iam.amazonaws.com", {"roleName": "AROAEXAMPLE"})
    assert custom.detect(decode_record(tag)).drifts[0].severity == "high"
