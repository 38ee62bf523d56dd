"""`python -m rules` measures the catalogue against the peer's names: mapped, skipped, missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from rules.catalogue import load_catalogue
from rules.coverage import PEER_DIR, compare, main, peer_key, read_peer

CATALOGUE = """
version: 1
provider: aws
event_source: lambda.amazonaws.com
events:
  UpdateFunctionConfiguration20150331v2:
    change: modify
    resource: aws_lambda_function
    id: requestParameters.functionName
    attributes:
      timeout: requestParameters.timeout
  CreateAlias20150331:
    change: create
    resource: aws_lambda_alias
    id: requestParameters.name
  Invoke:
    skip: an invocation changes no configuration
  DeleteFunction20150331:
    change: delete
    resource: aws_lambda_function
    id: requestParameters.functionName
    peer: RemoveFunction
"""

PEER = {
    "tfdrift-falco-aws.tsv": "# header\n"
    "UpdateFunctionConfiguration\taws_lambda_function\tyes\tyes\n"
    "Invoke\taws_lambda_function\tno\tno\n"
    "RemoveFunction\taws_lambda_function\tno\tno\n"
    "PublishLayerVersion\taws_lambda_layer_version\tno\tno\n",
    "tfdrift-falco-aws-source-conflicts.tsv": "# header\n"
    "CreateAlias\tlambda.amazonaws.com\taws_lambda_alias\n"
    "CreateAlias\tkms.amazonaws.com\taws_kms_alias\n",
    "tfdrift-falco-gcp.tsv": "# header\n",
    "tfdrift-falco-azure.tsv": "# header\n",
}


@pytest.mark.parametrize(
    ("provider", "name", "key"),
    [
        ("aws", "UpdateFunctionConfiguration20150331v2", "UpdateFunctionConfiguration"),
        ("aws", "CreateAlias20150331", "CreateAlias"),
        ("aws", "PutBucketPolicy", "PutBucketPolicy"),
        ("gcp", "v1.compute.instances.insert", "compute.instances.insert"),
        ("gcp", "beta.compute.firewalls.patch", "compute.firewalls.patch"),
        (
            "gcp",
            "google.cloud.redis.v1.CloudRedis.CreateInstance",
            "google.cloud.redis.cloudredis.createinstance",
        ),
        ("azure", "Microsoft.Network/dnsZones/A/write", "microsoft.network/dnszones/a/write"),
        (
            "azure",
            "microsoft.storage/storageaccounts/write:created",
            "microsoft.storage/storageaccounts/write",
        ),
    ],
)
def test_names_are_compared_in_their_spelling_independent_form(
    provider: str, name: str, key: str
) -> None:
    assert peer_key(provider, name) == key


def test_each_peer_name_is_mapped_skipped_or_missing(tmp_path: Path) -> None:
    (tmp_path / "cat" / "aws").mkdir(parents=True)
    (tmp_path / "cat" / "aws" / "lambda.yaml").write_text(CATALOGUE)
    for name, text in PEER.items():
        (tmp_path / name).write_text(text)
    cov = compare(load_catalogue(tmp_path / "cat"), read_peer(tmp_path))["aws"]
    assert sorted(r.name for r in cov.mapped) == [
        "CreateAlias",
        "RemoveFunction",
        "UpdateFunctionConfiguration",
    ]
    assert [r.name for r in cov.skipped] == ["Invoke"]
    # CreateAlias of KMS is not CreateAlias of Lambda: the service tells them apart.
    assert sorted((r.name, r.event_source) for r in cov.missing) == [
        ("CreateAlias", "kms.amazonaws.com"),
        ("PublishLayerVersion", None),
    ]
    assert (cov.peer_extracts, cov.with_attributes) == (1, 1)
    assert cov.names == 5 and cov.total == 6


@pytest.mark.skipif(not PEER_DIR.is_dir(), reason="needs ../shared/peer-coverage")
def test_the_report_runs_over_the_real_catalogue_and_peer_files(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    for provider in ("aws", "gcp", "azure"):
        assert f"  {provider}" in out
