"""CloudTrail records for tests, built on the demo stream's hand-written templates."""

from __future__ import annotations

import copy
from typing import Any

from monitor.app.demo_replay import demo_records

DEMO_STATE = "monitor/app/demo/demo.tfstate"


def template(event_name: str) -> dict[str, Any]:
    for rec in demo_records():
        if rec.get("eventName") == event_name:
            return copy.deepcopy(rec)
    raise KeyError(event_name)


def resize(event_id: str, instance_type: str, when: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    """The demo web instance resized to `instance_type` by alice."""
    rec = template("ModifyInstanceAttribute")
    rec["eventID"] = event_id
    rec["eventTime"] = when
    rec["requestParameters"]["instanceType"]["value"] = instance_type
    return rec
