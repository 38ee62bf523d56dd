"""A sample drift for store and lifecycle tests."""

from __future__ import annotations

from monitor.types import Actor, Drift, DriftKind

DRIFT = Drift(
    id="d-1",
    kind=DriftKind.MODIFIED,
    severity="medium",
    category="compute",
    provider="aws",
    account_id="1",
    region="us-east-1",
    resource_type="aws_instance",
    resource_id="i-1",
    resource_address="aws_instance.web",
    field="instance_type",
    old_value="t3.micro",
    new_value="t3.2xlarge",
    event_id="e-1",
    event_name="ModifyInstanceAttribute",
    event_source="ec2.amazonaws.com",
    event_time="2026-03-01T10:00:00Z",
    detected_at="2026-03-01T10:00:01Z",
    actor=Actor("IAMUser", "AIDA1", "arn:aws:iam::1:user/u", "1", "u"),
    source_ip=None,
    user_agent=None,
)
