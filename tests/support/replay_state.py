"""A Terraform state rebuilt from Terraform's own calls in a CloudTrail log.

The invictus dataset records Terraform creating resources (userAgent `Terraform/`), other
principals changing them, then Terraform destroying them. Replaying Terraform's creates and
modifies through the catalogue gives the state as it was just before the destroy: the real
"declared" side for the real changes in the same log.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable
from typing import Any

from monitor.detect import Detector
from monitor.tfstate import StateIndex, parse_state
from monitor.types import ChangeEvent
from rules import load_catalogue, load_severity
from rules.catalogue import Catalogue, Change, EventRule
from rules.paths import WILDCARD, extract, parse_path
from rules.transforms import TRANSFORMS, TransformError
from streams.cloudtrail import decode_record
from tests.support.realdata import cloudtrail_records

# Attributes worth recording at create time, per type: attribute -> record path.
CAPTURE: dict[str, dict[str, str]] = {
    "aws_iam_role": {
        "arn": "responseElements.role.arn",
        "unique_id": "responseElements.role.roleId",
        "assume_role_policy": "requestParameters.assumeRolePolicyDocument",
    },
    "aws_iam_user": {
        "arn": "responseElements.user.arn",
        "unique_id": "responseElements.user.userId",
    },
    "aws_s3_bucket": {"bucket": "requestParameters.bucketName"},
    "aws_security_group": {
        "name": "requestParameters.groupName",
        "vpc_id": "requestParameters.vpcId",
        "description": "requestParameters.groupDescription",
    },
    "aws_instance": {"instance_type": "requestParameters.instanceType"},
    "aws_lambda_function": {
        "function_name": "requestParameters.functionName",
        "role": "requestParameters.role",
        "runtime": "requestParameters.runtime",
        "handler": "requestParameters.handler",
        "arn": "responseElements.functionArn",
        "source_code_hash": "responseElements.codeSha256",
    },
    "aws_cloudtrail": {
        "name": "requestParameters.name",
        "s3_bucket_name": "requestParameters.s3BucketName",
        "arn": "responseElements.trailARN",
    },
    "aws_db_instance": {
        "identifier": "requestParameters.dBInstanceIdentifier",
        "publicly_accessible": "requestParameters.publiclyAccessible",
        "deletion_protection": "requestParameters.deletionProtection",
        "backup_retention_period": "requestParameters.backupRetentionPeriod",
        "instance_class": "requestParameters.dBInstanceClass",
    },
    "aws_vpc": {"cidr_block": "requestParameters.cidrBlock"},
    "aws_subnet": {
        "cidr_block": "requestParameters.cidrBlock",
        "vpc_id": "requestParameters.vpcId",
    },
}
# Empty collections Terraform always records for these types.
DEFAULTS: dict[str, dict[str, Any]] = {
    "aws_iam_role": {"managed_policy_arns": [], "tags": {}},
    "aws_iam_user": {"tags": {}},
    "aws_security_group": {"ingress": [], "egress": [], "tags": {}},
    "aws_s3_bucket": {"policy": "", "tags": {}},
    "aws_lambda_function": {"layers": []},
}
_SLUG = re.compile(r"[^a-z0-9_]+")


def is_terraform(event: ChangeEvent) -> bool:
    return bool(event.user_agent and "Terraform/" in event.user_agent)


def _values(event: ChangeEvent, path: str) -> list[Any]:
    return extract(event.root(), parse_path(path))


def _created(event: ChangeEvent, rtype: str, rid: str, catalogue: Catalogue) -> dict[str, Any]:
    """The attributes of a resource as its create call shows them."""
    attrs: dict[str, Any] = {"id": rid, **DEFAULTS.get(rtype, {})}
    keys = catalogue.identifiers.get(rtype, ("name",))
    if keys:
        attrs.setdefault(keys[0], rid)
    for attr, path in CAPTURE.get(rtype, {}).items():
        found = _values(event, path)
        if found:
            attrs[attr] = found[0]
    return attrs


def _apply(root: dict[str, Any], rule: EventRule, target: dict[str, Any]) -> None:
    """A modify call's attributes written over the resource's."""
    for attr in rule.attributes:
        if attr.path is None:
            raw: Any = attr.const
        else:
            vals = extract(root, attr.path)
            if not vals:
                continue
            raw = vals if WILDCARD in attr.path else vals[0]
        with contextlib.suppress(TransformError):
            target[attr.field.split(".")[0]] = TRANSFORMS[attr.transform][0](
                raw, target.get(attr.field)
            )


def replay_state(records: Iterable[dict[str, Any]], catalogue: Catalogue) -> dict[str, Any]:
    """A version 4 state document from Terraform's successful creates and modifies."""
    events = sorted((decode_record(r) for r in records), key=lambda e: e.event_time)
    instances: dict[tuple[str, str], dict[str, Any]] = {}
    for event in events:
        if not is_terraform(event) or event.error_code:
            continue
        rule = catalogue.lookup(event.event_source, event.event_name)
        if rule is None:
            continue
        root = event.root()
        ids = next((v for p in rule.id_paths if (v := extract(root, p))), [])
        for rid in (str(i) for i in ids if isinstance(i, (str, int))):
            if rule.change is Change.CREATE:
                rtype = rule.resource_types[0]
                instances[(rtype, rid)] = _created(event, rtype, rid, catalogue)
            elif rule.change is Change.MODIFY:
                target = next(
                    (instances[(t, rid)] for t in rule.resource_types if (t, rid) in instances),
                    None,
                )
                if target is not None:
                    _apply(root, rule, target)
    resources = []
    names: set[str] = set()
    for (rtype, rid), attrs in sorted(instances.items()):
        name = _SLUG.sub("_", rid.lower()).strip("_")[:60] or "r"
        while (rtype, name) in names:
            name += "_"
        names.add((rtype, name))  # type: ignore[arg-type]
        resources.append(
            {
                "mode": "managed",
                "type": rtype,
                "name": name,
                "provider": 'provider["registry.terraform.io/hashicorp/aws"]',
                "instances": [
                    {"schema_version": 0, "attributes": attrs, "sensitive_attributes": []}
                ],
            }
        )
    return {
        "version": 4,
        "terraform_version": "1.5.2",
        "serial": 1,
        "lineage": "replayed-from-cloudtrail",
        "outputs": {},
        "resources": resources,
    }


def filler_resources(count: int, start: int = 0) -> list[dict[str, Any]]:
    """Plausible extra managed resources (to reach a production-sized state)."""
    kinds = [
        ("aws_instance", lambda n: {"id": f"i-{n:017x}", "instance_type": "t3.micro"}),
        (
            "aws_security_group",
            lambda n: {"id": f"sg-{n:017x}", "name": f"sg-{n}", "ingress": [], "egress": []},
        ),
        (
            "aws_iam_role",
            lambda n: {
                "id": f"role-{n}",
                "name": f"role-{n}",
                "arn": f"arn:aws:iam::111122223333:role/role-{n}",
                "assume_role_policy": "{}",
            },
        ),
        (
            "aws_s3_bucket",
            lambda n: {
                "id": f"bucket-{n}",
                "bucket": f"bucket-{n}",
                "arn": f"arn:aws:s3:::bucket-{n}",
            },
        ),
        ("aws_subnet", lambda n: {"id": f"subnet-{n:017x}", "vpc_id": f"vpc-{n // 8:017x}"}),
        ("aws_lambda_function", lambda n: {"id": f"fn-{n}", "function_name": f"fn-{n}"}),
    ]
    out = []
    for n in range(start, start + count):
        rtype, make = kinds[n % len(kinds)]
        out.append(
            {
                "mode": "managed",
                "type": rtype,
                "name": f"filler_{n}",
                "provider": 'provider["registry.terraform.io/hashicorp/aws"]',
                "instances": [{"schema_version": 0, "attributes": make(n)}],
            }
        )
    return out


def bench_detector(
    resources: int,
    filler: Callable[[int], list[dict[str, Any]]] = filler_resources,
    clock: str = "2026-01-01T00:00:00Z",
) -> tuple[Detector, int]:
    """A detector over the state replayed from the invictus logs, filled up to `resources`
    managed instances (the benchmarks' common set-up); also how many were replayed."""
    catalogue = load_catalogue()
    doc = replay_state(cloudtrail_records("invictus_aws_dataset"), catalogue)
    replayed = len(doc["resources"])
    doc["resources"].extend(filler(max(0, resources - replayed)))
    index = StateIndex([parse_state(doc, "bench.tfstate")], catalogue.identifiers)
    return Detector(catalogue, load_severity(), index, clock=lambda: clock), replayed
