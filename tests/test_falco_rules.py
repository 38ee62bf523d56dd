"""rules/falco/: the Falco rule emits every ct.* field Driftline reads, and what Falco would
send for a real CloudTrail record yields the same drifts as the record itself."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import yaml

from monitor.detect import Detector
from monitor.tfstate import StateIndex, parse_state
from monitor.types import ChangeEvent
from rules import load_catalogue, load_severity
from streams.cloudtrail import decode_record
from streams.falco import CT_FIELDS, decode_alert
from tests.support.realdata import cloudtrail_records
from tests.support.replay_state import replay_state

RULES = Path(__file__).resolve().parents[1] / "rules" / "falco" / "driftline_cloudtrail_rules.yaml"


def _rule() -> dict[str, Any]:
    docs = yaml.safe_load(RULES.read_text())
    [rule] = [d for d in docs if "rule" in d]
    return rule  # type: ignore[no-any-return]


def test_rule_outputs_every_field_the_decoder_reads() -> None:
    rule = _rule()
    assert rule["source"] == "aws_cloudtrail"
    emitted = set(re.findall(r"%(ct\.[a-z.]+)", rule["output"]))
    assert not CT_FIELDS - emitted


def _as_falco_alert(rec: dict[str, Any]) -> dict[str, Any]:
    """The alert Falco's cloudtrail plugin and our rule produce for `rec` (field semantics
    from the plugin's documentation: objects are JSON text, absent values are <NA>)."""
    uid = rec.get("userIdentity") or {}

    def js(value: Any) -> str:
        return "<NA>" if value is None else orjson.dumps(value).decode()

    user = uid.get("userName") or (
        (uid.get("sessionContext") or {}).get("sessionIssuer", {}).get("userName")
        if uid.get("type") == "AssumedRole"
        else uid.get("invokedBy")
    )
    fields = {
        "ct.id": rec.get("eventID", "<NA>"),
        "ct.time": rec["eventTime"],
        "ct.src": rec["eventSource"],
        "ct.name": rec["eventName"],
        "ct.region": rec.get("awsRegion", "<NA>"),
        "ct.user": user or "<NA>",
        "ct.user.arn": uid.get("arn", "<NA>"),
        "ct.user.accountid": uid.get("accountId", rec.get("recipientAccountId", "<NA>")),
        "ct.user.identitytype": uid.get("type", "<NA>"),
        "ct.user.principalid": uid.get("principalId", "<NA>"),
        "ct.recipientaccountid": rec.get("recipientAccountId", "<NA>"),
        "ct.srcip": rec.get("sourceIPAddress", "<NA>"),
        "ct.useragent": rec.get("userAgent", "<NA>"),
        "ct.readonly": str(rec.get("readOnly", False)).lower(),
        "ct.error": rec.get("errorCode", "<NA>"),
        "ct.request": js(rec.get("requestParameters")),
        "ct.response": js(rec.get("responseElements")),
        "ct.resources": js(rec.get("resources")),
        "ct.additionaleventdata": js(rec.get("additionalEventData")),
    }
    return {
        "output": "Cloud change",
        "priority": "Notice",
        "rule": _rule()["rule"],
        "source": "aws_cloudtrail",
        "time": rec["eventTime"],
        "hostname": "falco-1",
        "output_fields": fields,
        "tags": ["driftline"],
    }


def _key(event: ChangeEvent, detector: Detector) -> list[tuple[Any, ...]]:
    return [
        (
            d.kind,
            d.resource_address,
            d.resource_id,
            d.field,
            orjson.dumps(d.new_value),
            d.actor.user_name,
            d.event_id,
        )
        for d in detector.detect(event).drifts
    ]


def test_falco_alert_and_record_give_the_same_drifts() -> None:
    catalogue = load_catalogue()
    records = sorted(cloudtrail_records("invictus_aws_dataset"), key=lambda r: r["eventTime"])
    index = StateIndex(
        [parse_state(replay_state(records, catalogue), "r.tfstate")], catalogue.identifiers
    )
    detector = Detector(catalogue, load_severity(), index, clock=lambda: "t")
    compared = drifting = 0
    for rec in records:
        if rec.get("readOnly") or rec.get("errorCode"):
            continue
        direct = _key(decode_record(rec), detector)
        via_falco = decode_alert(_as_falco_alert(rec), catalogue.source_for)
        assert isinstance(via_falco, ChangeEvent)
        assert _key(via_falco, detector) == direct, rec["eventName"]
        compared += 1
        drifting += bool(direct)
    assert compared >= 480 and drifting >= 20


def test_an_actor_known_only_by_its_arn_gets_its_user_name() -> None:
    rec = {
        "eventID": "e-arn",
        "eventTime": "2026-01-01T00:00:00Z",
        "eventSource": "ec2.amazonaws.com",
        "eventName": "ModifyInstanceAttribute",
        "userIdentity": {"arn": "arn:aws:iam::123456789012:user/team/bob"},
    }
    alert = _as_falco_alert(rec)
    assert alert["output_fields"]["ct.user"] == "<NA>"
    event = decode_alert(alert, load_catalogue().source_for)
    assert isinstance(event, ChangeEvent)
    assert (event.actor.type, event.actor.user_name) == ("IAMUser", "bob")
