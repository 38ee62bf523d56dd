"""Catalogue cases: real-shaped records per service, run through the real decoder, the whole
catalogue and a small declared state, with the drifts (or the skip) each must give.

One YAML file per service under tests/data/catalogue_cases/<provider>/; each notes where its
record shapes come from. Format:

    sources: [https://docs.aws.amazon.com/..., ...]   # where the record shapes come from
    state:                                            # what Terraform declares for these cases
      - {type: aws_db_instance, name: main, attributes: {id: db-ABC, identifier: prod}}
    cases:
      - name: ModifyDBInstance changes the instance class
        record: {...}                                 # one CloudTrail record / log entry
        expect:                                       # each a subset of a drift's fields
          - {kind: modified, resource_address: aws_db_instance.main, field: instance_class}
      - name: RebootDBInstance is operational
        record: {...}
        skipped: operational call (listed as not drift)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.clock import fixed_clock
from monitor.detect import Detector
from monitor.tfstate import StateIndex, parse_state
from monitor.types import ChangeEvent, DecodeError
from rules.catalogue import Catalogue, load_catalogue, read_yaml
from rules.severity import load_severity
from streams.formats import decoder_for

CASES = Path(__file__).parent / "data" / "catalogue_cases"
FORMAT = {
    "aws": "cloudtrail",
    "gcp": "gcp_audit",
    "azure": "azure_activity",
    "kubernetes": "k8s_audit",
}
PROVIDER = {
    "aws": "hashicorp/aws",
    "gcp": "hashicorp/google",
    "azure": "hashicorp/azurerm",
    "kubernetes": "hashicorp/kubernetes",
}


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


def _state(provider: str, declared: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "version": 4,
        "terraform_version": "1.9.0",
        "serial": 1,
        "lineage": "catalogue-cases",
        "resources": [
            {
                "mode": "managed",
                "type": r["type"],
                "name": r["name"],
                "provider": f'provider["registry.terraform.io/{PROVIDER[provider]}"]',
                "instances": [{"schema_version": 0, "attributes": r["attributes"]}],
            }
            for r in declared
        ],
    }


def _cases() -> Iterator[Any]:
    for path in sorted(CASES.glob("*/*.yaml")):
        doc = read_yaml(path.read_text())
        for i, case in enumerate(doc["cases"]):
            name = f"{path.parent.name}/{path.stem}: {case.get('name', i)}"
            yield pytest.param(path.parent.name, doc, case, id=name)


def _matches(expected: dict[str, Any], drift: dict[str, Any]) -> bool:
    return all(drift.get(k) == v for k, v in expected.items())


@pytest.mark.parametrize(("provider", "doc", "case"), list(_cases()))
def test_catalogue_case(
    catalogue: Catalogue, provider: str, doc: dict[str, Any], case: dict[str, Any]
) -> None:
    assert doc.get("sources"), "a case file names where its record shapes come from"
    state = parse_state(_state(provider, doc.get("state") or []), "cases.tfstate")
    detector = Detector(
        catalogue,
        load_severity(),
        StateIndex([state], catalogue.identifiers),
        (),
        fixed_clock("2026-01-01T00:00:00.000Z"),
    )
    decoded = list(decoder_for(FORMAT[provider])(case["record"]))
    events = [d for d in decoded if isinstance(d, ChangeEvent)]
    assert events, (
        f"the record does not decode: {[str(d) for d in decoded if isinstance(d, DecodeError)]}"
    )
    results = [detector.detect(e) for e in events]
    drifts = [d.as_dict() for r in results for d in r.drifts]
    if "skipped" in case:
        assert drifts == [] and [r.skipped for r in results] == [case["skipped"]]
        return
    expected = case["expect"]
    assert len(drifts) == len(expected), drifts
    for want in expected:
        assert any(_matches(want, d) for d in drifts), (want, drifts)
