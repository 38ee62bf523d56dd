from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from monitor.redact import REDACTED
from monitor.statesrc import StateSources, parse_source
from monitor.tfstate import (
    StateError,
    StateIndex,
    load_state_file,
    parse_state,
    provider_name,
)
from tests.support.realdata import TFSTATE

MUST_REJECT = {
    "inframap/generate_testdata_version_3_state.json": "state format version 3",
    "tfdrift-falco/pkg_terraform_testdata_invalid.tfstate": "not valid JSON",
    "driftctl/pkg_iac_terraform_state_testdata_v4_invalid.tfstate": "not valid JSON",
    "driftctl/pkg_iac_terraform_state_testdata_v4_invalid_version.tfstate": (
        "terraform_version 'invalid'"
    ),
    "driftctl/pkg_iac_terraform_state_testdata_v4_unsupported_version.tfstate": "0.10.26",
}


def _all_state_files() -> list[Path]:
    return sorted(p for p in TFSTATE.rglob("*") if p.is_file())


def test_every_real_state_loads_or_is_rejected_clearly() -> None:
    files = _all_state_files()
    assert len(files) >= 160
    loaded = 0
    for path in files:
        rel = str(path.relative_to(TFSTATE))
        if rel in MUST_REJECT:
            with pytest.raises(StateError) as err:
                load_state_file(path)
            message = str(err.value)
            assert str(path) in message and MUST_REJECT[rel] in message
        else:
            state = load_state_file(path)
            assert state.version == 4
            loaded += 1
    assert loaded == len(files) - len(MUST_REJECT)


def test_modules_count_and_for_each_keys_make_addresses() -> None:
    state = load_state_file(TFSTATE / "tfstate-lookup/tfstate_test_terraform.tfstate")
    addresses = {i.address for i in state.managed}
    assert 'module.logs.aws_cloudwatch_log_group.main["app"]' in addresses
    assert "aws_iam_role_policy_attachment.ec2[1]" in addresses
    assert "module.webapp.module.ecs_task_roles.aws_iam_role.task_execution_role" in addresses
    assert 'aws_iam_user.users["foo.bar"]' in addresses
    # Data sources are kept apart from managed resources.
    assert all(i.mode == "managed" for i in state.managed)
    assert {i.type for i in state.data} >= {"aws_caller_identity", "terraform_remote_state"}
    assert not any(a.startswith("data.") for a in addresses)
    assert any(i.address == "data.aws_caller_identity.current" for i in state.data)


def test_index_finds_by_id_arn_and_type_specific_names() -> None:
    state = load_state_file(TFSTATE / "tfdrift-falco/pkg_detector_testdata_terraform.tfstate")
    index = StateIndex(
        [state], {"aws_iam_role": ("name", "unique_id"), "aws_s3_bucket": ("bucket",)}
    )
    role = index.find("aws_iam_role", "tfdrift-falco-test-app-role")
    assert role is not None and role.address == "aws_iam_role.app"
    assert index.find("aws_iam_role", role.attributes["arn"]) is role
    assert index.find("aws_iam_role", role.attributes["unique_id"]) is role
    assert index.find("aws_security_group", "sg-00b0bd48f1f5bca5b") is not None
    assert index.find("aws_s3_bucket", "tfdrift-falco-test-data-943198b9") is not None
    assert index.find("aws_s3_bucket", "no-such-bucket") is None
    # A lookup is by type: the same value under another type is not a hit.
    assert index.find("aws_iam_user", "tfdrift-falco-test-app-role") is None


def test_china_partition_arns_are_indexed() -> None:
    state = load_state_file(TFSTATE / "aws-samples-china-region-eks/eks_terraform.tfstate.backup")
    index = StateIndex([state], {"aws_iam_role": ("name",)})
    roles = [i for i in state.managed if i.type == "aws_iam_role"]
    assert roles and roles[0].attributes["arn"].startswith("arn:aws-cn:iam::")
    arn = roles[0].attributes["arn"]
    assert index.find("aws_iam_role", arn) is roles[0]
    assert index.find("aws_iam_role", roles[0].attributes["name"]) is roles[0]


def test_several_states_and_directories() -> None:
    sources = StateSources([parse_source(str(TFSTATE / "wendiblac-project-bedrock"))])
    states = sources.load()
    assert sorted(Path(s.path).name for s in states) == [
        "eks_terraform.tfstate",
        "vpc_terraform.tfstate",
    ]
    index = StateIndex(states)
    assert len(index) == sum(len(s.managed) for s in states)
    with pytest.raises(StateError, match="no such file"):
        StateSources([parse_source(str(TFSTATE / "does-not-exist"))]).load()


def _doc(**instance: Any) -> dict[str, Any]:
    return {
        "version": 4,
        "terraform_version": "1.9.0",
        "serial": 3,
        "lineage": "x",
        "resources": [
            {
                "mode": "managed",
                "type": "aws_db_instance",
                "name": "db",
                "provider": 'provider["registry.terraform.io/hashicorp/aws"]',
                "instances": [{"schema_version": 0, **instance}],
            }
        ],
    }


@pytest.mark.parametrize(
    "sensitive",
    [
        [[{"type": "get_attr", "value": "endpoint"}]],  # Terraform 0.15 - 1.x
        [{"type": "get_attr", "value": "endpoint"}],  # a single flat path
    ],
)
def test_sensitive_and_secret_attributes_are_redacted(sensitive: Any) -> None:
    state = parse_state(
        _doc(
            attributes={
                "id": "db-1",
                "endpoint": "db.internal:5432",
                "password": "hunter2",
                "master_user_secret": [{"secret_arn": "arn:x", "kms_key_id": "k"}],
                "engine": "postgres",
                "iam_database_authentication_enabled": False,
            },
            sensitive_attributes=sensitive,
        ),
        "mem.tfstate",
    )
    public = state.managed[0].public_attributes()
    assert public["endpoint"] == REDACTED
    assert public["password"] == REDACTED
    assert public["engine"] == "postgres"
    assert public["master_user_secret"] == REDACTED
    text = json.dumps(state.managed[0].as_dict())
    assert "hunter2" not in text and "db.internal" not in text


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "expected a JSON object"),
        ({"version": 5, "terraform_version": "1.0.0"}, "unknown state format version 5"),
        (
            {"version": 4, "terraform_version": "1.0.0", "resources": {}},
            "'resources' must be a list",
        ),
        (
            {"version": 4, "terraform_version": "1.0.0", "resources": [{"mode": "managed"}]},
            "needs mode",
        ),
    ],
)
def test_wrong_shapes_are_rejected(doc: Any, message: str) -> None:
    with pytest.raises(StateError, match=message):
        parse_state(doc, "x.tfstate")


def test_empty_and_truncated_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.tfstate"
    empty.write_text("")
    with pytest.raises(StateError, match="empty"):
        load_state_file(empty)
    good = (TFSTATE / "tfdrift-falco/pkg_detector_testdata_terraform.tfstate").read_text()
    cut = tmp_path / "cut.tfstate"
    cut.write_text(good[: len(good) // 2])
    with pytest.raises(StateError, match=r"cut\.tfstate: not valid JSON"):
        load_state_file(cut)


@pytest.mark.parametrize(
    ("provider", "name"),
    [
        ('provider["registry.terraform.io/hashicorp/aws"]', "aws"),
        ("provider.aws", "aws"),
        ('provider["registry.terraform.io/hashicorp/google"]', "gcp"),
        ('provider["registry.terraform.io/hashicorp/azurerm"]', "azure"),
        ('module.x.provider["registry.terraform.io/hashicorp/kubernetes"]', "kubernetes"),
        ("provider.aws.west", "aws"),
    ],
)
def test_provider_names(provider: str, name: str) -> None:
    assert provider_name(provider) == name
