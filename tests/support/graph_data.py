"""The stratus attack replay the graph tests share: its state, re-pointed Falco alerts, and
the batches the pipeline would hand the graph."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from monitor.detect import Detector
from monitor.tfstate import StateIndex, parse_state
from monitor.types import ChangeEvent, Drift, FalcoAlert
from rules import load_severity
from rules.catalogue import Catalogue, Change
from rules.paths import extract
from streams.cloudtrail import decode_record
from streams.falco import decode_alert
from tests.support.realdata import cloudtrail_records, falco_alerts
from tests.support.replay_state import replay_state

CLOCK = "2024-12-01T00:00:00Z"
INSTANCE = "i-DDd6c7B0e18F0E35f"  # stopped, modified and restarted by one stratus session
SG_CALL_IP = "253.243.215.253"  # source of the stratus AuthorizeSecurityGroupIngress


def stratus_state(catalogue: Catalogue) -> dict[str, Any]:
    """The declared side for the stratus detonations.

    The logs hold no Terraform calls (replay_state finds nothing): Stratus's Terraform
    warm-up, which created each technique's targets, is not in them. So the state declares
    every resource a modify or delete call of the logs names, as that warm-up did.
    """
    records = cloudtrail_records("stratus_detonation_logs")
    doc = replay_state(records, catalogue)
    seen = {(r["type"], r["instances"][0]["attributes"]["id"]) for r in doc["resources"]}
    for rec in sorted(records, key=lambda r: r["eventTime"]):
        ev = decode_record(rec)
        rule = catalogue.lookup(ev.event_source, ev.event_name)
        if ev.error_code or ev.read_only or rule is None or rule.change is Change.CREATE:
            continue
        ids = next((v for p in rule.id_paths if (v := extract(ev.root(), p))), [])
        for rid in (i for i in ids if isinstance(i, str)):
            rtype = rule.resource_types[0]
            if (rtype, rid) in seen:
                continue
            seen.add((rtype, rid))
            attrs = {"id": rid}
            keys = catalogue.identifiers.get(rtype, ("name",))
            if keys:
                attrs[keys[0]] = rid
            doc["resources"].append(
                {
                    "mode": "managed",
                    "type": rtype,
                    "name": f"warmup_{len(seen)}",
                    "provider": 'provider["registry.terraform.io/hashicorp/aws"]',
                    "instances": [{"schema_version": 0, "attributes": attrs}],
                }
            )
    return doc


def real_alert(rule: str) -> dict[str, Any]:
    found = next(a for _, a in falco_alerts() if isinstance(a, dict) and a.get("rule") == rule)
    return copy.deepcopy(found)


def stratus_alerts() -> list[dict[str, Any]]:
    """Real Falco alerts, re-timed and re-pointed so that they meet the stratus replay.

    Adjusted on purpose (the datasets come from unrelated runs): times moved into the
    detonation window, the host renamed to the stratus instance, a remote IP set to the
    attacker's source IP, the k8s user set to the stratus IAM user. Everything else is as
    captured.
    """
    host = real_alert("Read sensitive file untrusted")
    host["hostname"] = f"{INSTANCE}.ec2.internal"  # EC2 resource-based host name
    host["time"] = "2024-08-01T12:06:00Z"
    shell = real_alert("Terminal shell in container")
    shell["output_fields"]["fd.rip"] = SG_CALL_IP
    shell["time"] = "2024-08-01T12:28:00Z"
    k8s_user = real_alert("Disallowed K8s User")
    k8s_user["output_fields"]["ka.user.name"] = "christophe"
    k8s_user["time"] = "2024-08-01T13:35:00Z"
    late = real_alert("open_from_cat")
    late["hostname"] = f"{INSTANCE}.ec2.internal"
    late["time"] = "2024-08-01T14:30:00Z"  # 85 minutes after the instance calls
    loose = real_alert("Write below binary dir")
    loose["time"] = "2024-08-01T12:10:00Z"  # shares nothing with any call
    return [host, shell, k8s_user, late, loose]


def stratus_index(catalogue: Catalogue) -> StateIndex:
    return StateIndex(
        [parse_state(stratus_state(catalogue), "stratus.tfstate")], catalogue.identifiers
    )


Batch = tuple[list[ChangeEvent], list[Drift], list[FalcoAlert]]


def stratus_batches(catalogue: Catalogue, index: StateIndex) -> Iterator[Batch]:
    """One record (or alert) per batch, in time order, as the pipeline would pass them."""
    detector = Detector(catalogue, load_severity(), index, clock=lambda: CLOCK)
    items: list[tuple[str, ChangeEvent | FalcoAlert]] = [
        (ev.event_time, ev)
        for ev in map(decode_record, cloudtrail_records("stratus_detonation_logs"))
    ]
    for doc in stratus_alerts():
        alert = decode_alert(doc)
        if not isinstance(alert, FalcoAlert):
            raise TypeError(f"not a Falco alert: {alert!r}")
        items.append((alert.time, alert))
    items.sort(key=lambda t: t[0])
    for _, item in items:
        if isinstance(item, FalcoAlert):
            yield [], [], [item]
            continue
        drifts = list(detector.detect(item).drifts)
        if not item.read_only:  # the pipeline drops read-only calls before observers
            yield [item], drifts, []
