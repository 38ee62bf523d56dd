"""Terraform states built for tests: N buckets with a secret-bearing attribute."""

from __future__ import annotations

import uuid
from typing import Any

import orjson


def state_doc(
    resources: int = 3, serial: int = 1, lineage: str | None = None, prefix: str = "b"
) -> dict[str, Any]:
    """A version-4 state of `resources` S3 buckets named `{prefix}-{n}`."""
    return {
        "version": 4,
        "terraform_version": "1.7.5",
        "serial": serial,
        "lineage": lineage or str(uuid.uuid4()),
        "outputs": {},
        "resources": [
            {
                "mode": "managed",
                "type": "aws_s3_bucket",
                "name": f"{prefix}{n}",
                "provider": 'provider["registry.terraform.io/hashicorp/aws"]',
                "instances": [
                    {
                        "schema_version": 0,
                        "attributes": {
                            "id": f"{prefix}-{n}",
                            "bucket": f"{prefix}-{n}",
                            "arn": f"arn:aws:s3:::{prefix}-{n}",
                            "db_password": "hunter2-do-not-leak",
                        },
                        "sensitive_attributes": [],
                    }
                ],
            }
            for n in range(resources)
        ],
    }


def state_bytes(**kw: Any) -> bytes:
    return orjson.dumps(state_doc(**kw))
