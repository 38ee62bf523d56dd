"""The catalogue stays consistent: real types, well-formed paths, coverage, real-record fit."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.detect import READ_PREFIXES
from rules import CatalogueError, load_catalogue
from rules.catalogue import CATALOGUE_DIR, PROVIDER_PREFIX, Catalogue, load_file
from rules.paths import extract
from streams.cloudtrail import decode_record
from tests.support.realdata import cloudtrail_records

VERIFIED_TYPES = CATALOGUE_DIR / "aws_resource_types.txt"
# provider of the catalogue -> its verified list (same format as the AWS one)
OTHER_VERIFIED_TYPES = {
    "gcp": CATALOGUE_DIR / "google_resource_types.txt",
    "azure": CATALOGUE_DIR / "azurerm_resource_types.txt",
    "kubernetes": CATALOGUE_DIR / "kubernetes_resource_types.txt",
}


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


def _verified(path: Path = VERIFIED_TYPES) -> set[str]:
    return {
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }


def test_coverage(catalogue: Catalogue) -> None:
    services = {r.event_source for r in catalogue.rules.values()}
    with_attrs = [r for r in catalogue.rules.values() if r.attributes]
    assert len(catalogue) >= 400
    assert len(services) >= 30
    assert len(with_attrs) >= 150


def test_every_resource_type_is_a_verified_provider_type(catalogue: Catalogue) -> None:
    verified = _verified()
    aws = {t for r in catalogue.rules.values() if r.provider == "aws" for t in r.resource_types}
    assert len(aws) >= 300
    assert not aws - verified
    assert not {t for t in catalogue.identifiers if t.startswith("aws_")} - verified


@pytest.mark.parametrize(("provider", "path"), sorted(OTHER_VERIFIED_TYPES.items()))
def test_other_providers_types_are_verified(
    catalogue: Catalogue, provider: str, path: Path
) -> None:
    verified = _verified(path)
    prefix = PROVIDER_PREFIX[provider]
    assert verified and all(t.startswith(prefix) for t in verified)
    used = {t for r in catalogue.rules.values() if r.provider == provider for t in r.resource_types}
    assert used, provider
    assert not used - verified
    assert not {t for t in catalogue.identifiers if t.startswith(prefix)} - verified


def test_every_catalogue_type_is_in_a_verified_list(catalogue: Catalogue) -> None:
    verified = set().union(_verified(), *(_verified(p) for p in OTHER_VERIFIED_TYPES.values()))
    assert not catalogue.resource_types() - verified
    assert not set(catalogue.identifiers) - verified


def test_no_read_only_calls(catalogue: Catalogue) -> None:
    assert not [
        r.event_name for r in catalogue.rules.values() if r.event_name.startswith(READ_PREFIXES)
    ]


def test_shared_names_are_told_apart_by_event_source(catalogue: Catalogue) -> None:
    for name in ("CreateCluster", "PutResourcePolicy", "TagResource"):
        rules = catalogue.by_name[name]
        assert len({r.event_source for r in rules}) == len(rules) > 1
    eks = catalogue.lookup("eks.amazonaws.com", "CreateCluster")
    ecs = catalogue.lookup("ecs.amazonaws.com", "CreateCluster")
    assert eks and ecs and eks.resource_types != ecs.resource_types
    assert catalogue.source_for("CreateCluster") is None
    assert catalogue.source_for("UpdateAssumeRolePolicy") == "iam.amazonaws.com"


def test_every_mapped_real_change_yields_an_identifier(catalogue: Catalogue) -> None:
    checked = 0
    for folder in (
        "invictus_aws_dataset",
        "stratus_detonation_logs",
        "awsdocs_examples",
        "falco_trace_files",
    ):
        for rec in cloudtrail_records(folder):
            event = decode_record(rec)
            rule = catalogue.lookup(event.event_source, event.event_name)
            if rule is None or event.error_code or event.read_only:
                continue
            root = event.root()
            assert any(extract(root, p) for p in rule.id_paths), (folder, event.event_name)
            checked += 1
    assert checked >= 400


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 2", "version: 1"),
        ("version: 1\nprovider: oracle\nevent_source: x\nevents: {A: {}}", "provider"),
        (
            "version: 1\nprovider: aws\nevent_source: x\nevents:\n  A: {change: move, resource: "
            "aws_vpc, id: requestParameters.x}",
            "change must be",
        ),
        (
            "version: 1\nprovider: aws\nevent_source: x\nevents:\n  A: {change: modify, resource: "
            "google_vpc, id: requestParameters.x}",
            "bad resource type",
        ),
        (
            "version: 1\nprovider: aws\nevent_source: x\nevents:\n  A: {change: modify, resource: "
            "aws_vpc, id: request.x}",
            "must start with",
        ),
        (
            "version: 1\nprovider: aws\nevent_source: x\nevents:\n  A: {change: modify, resource: "
            "aws_vpc, id: requestParameters.x, attributes: {cidr: {from: requestParameters.c, "
            "as: magic}}}",
            "unknown transform",
        ),
        (
            "version: 1\nprovider: aws\nevent_source: x\nevents:\n  A: {change: create, resource: "
            "aws_vpc, id: requestParameters.x, attributes: {cidr: requestParameters.c}}",
            "only apply to change: modify",
        ),
        (
            "version: 1\nprovider: aws\nevent_source: x\nevents:\n  A: {change: modify, resource: "
            "aws_vpc, id: requestParameters.x, colour: red}",
            "unknown keys",
        ),
        ("version: 1\nprovider: aws\nevent_source: x\nevents: [", "not valid YAML"),
        (
            "version: 1\nprovider: aws\nevent_source: x\nevents:\n  A: {skip: '  '}",
            "needs the reason",
        ),
        (
            "version: 1\nprovider: aws\nevent_source: x\nevents:\n  A: {skip: run state, "
            "resource: aws_vpc}",
            "take only skip, note and peer",
        ),
        (
            "version: 1\nprovider: aws\nevent_source: x\nevents:\n  A: {change: delete, "
            "resource: aws_vpc, id: requestParameters.x, peer: [1]}",
            "peer must be",
        ),
    ],
)
def test_malformed_entries_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CatalogueError, match=message) as err:
        load_file(path)
    assert str(path) in str(err.value)


def test_duplicate_entries_across_files_are_errors(tmp_path: Path) -> None:
    entry = (
        "version: 1\nprovider: aws\nevent_source: ec2.amazonaws.com\nevents:\n  A: "
        "{change: delete, resource: aws_vpc, id: requestParameters.vpcId}\n"
    )
    (tmp_path / "a.yaml").write_text(entry)
    (tmp_path / "b.yaml").write_text(entry)
    with pytest.raises(CatalogueError, match="also in"):
        load_catalogue(tmp_path)
