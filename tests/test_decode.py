from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.actors import actor_from_identity
from monitor.types import ChangeEvent, DecodeError, FalcoAlert
from streams.cloudtrail import decode_record, iter_records
from streams.decode import decode_document
from streams.documents import InputError, Limits, decode_bytes, parse_documents
from streams.falco import decode_alert
from streams.files import event_files, read_documents
from streams.formats import FORMATS
from streams.timefmt import normalise_time
from tests.support.realdata import CLOUDTRAIL, REALDATA, cloudtrail_records, falco_alerts, unwrap

FOLDERS = {
    "invictus_aws_dataset": 2900,
    "stratus_detonation_logs": 310,
    "otrf_security_datasets": 103,
    "falco_trace_files": 1,
    "awsdocs_examples": 122,
}


@pytest.mark.parametrize(("folder", "count"), sorted(FOLDERS.items()))
def test_every_real_cloudtrail_record_decodes(folder: str, count: int) -> None:
    records = cloudtrail_records(folder)
    assert len(records) == count
    events = [decode_record(r) for r in records]
    assert all(e.event_time.endswith("Z") and e.event_time[10] == "T" for e in events)
    assert all(e.event_name and e.event_source for e in events)


def test_files_are_read_in_every_shape_the_data_uses() -> None:
    files = event_files([CLOUDTRAIL])
    kinds = Counter()
    for path in files:
        for raw in read_documents(path):
            assert raw.error is None, raw.position
            for item in decode_document(unwrap(raw.doc)):
                kinds[type(item).__name__] += 1
    assert kinds == {"ChangeEvent": sum(FOLDERS.values())}


def test_otrf_records_without_event_time_use_at_timestamp() -> None:
    rec = cloudtrail_records("otrf_security_datasets")[0]
    assert "eventTime" not in rec
    event = decode_record(rec)
    assert event.event_time == normalise_time(rec["@timestamp"])


def test_record_without_event_id_gets_a_stable_content_id() -> None:
    rec = cloudtrail_records("falco_trace_files")[0]
    assert "eventID" not in rec
    first, again = decode_record(rec), decode_record(dict(rec))
    assert first.event_id.startswith("ct-") and first.event_id == again.event_id
    changed = decode_record({**rec, "eventName": "StopInstances"})
    assert changed.event_id != first.event_id


def test_bracketed_user_agent_is_unwrapped() -> None:
    recs = [
        r
        for r in cloudtrail_records("invictus_aws_dataset")
        if str(r.get("userAgent", "")).startswith("[")
    ]
    assert recs
    event = decode_record(recs[0])
    assert not event.user_agent.startswith("[") and not event.user_agent.endswith("]")


def test_eventbridge_envelope_and_records_wrapper() -> None:
    rec = cloudtrail_records("stratus_detonation_logs")[0]
    envelope = {
        "version": "0",
        "id": "e1",
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.ec2",
        "detail": rec,
    }
    assert list(iter_records(envelope)) == [rec]
    assert list(iter_records({"Records": [rec, rec]})) == [rec, rec]
    assert list(iter_records([rec])) == [rec]
    [inner] = list(iter_records(envelope))
    assert decode_record(inner).event_id == rec["eventID"]


def test_gzip_and_ndjson_with_a_bad_line_between_good_ones(tmp_path: Path) -> None:
    recs = cloudtrail_records("stratus_detonation_logs")[:2]
    body = orjson.dumps(recs[0]) + b"\n{broken json\n" + orjson.dumps(recs[1]) + b"\n"
    path = tmp_path / "trail.ndjson.gz"
    path.write_bytes(gzip.compress(body))
    raws = list(read_documents(path))
    assert [r.error is None for r in raws] == [True, False, True]
    assert raws[1].position.endswith(":2") and raws[1].error.reason == "bad JSON"
    good = [e for r in raws if r.doc for e in decode_document(r.doc)]
    assert [e.event_id for e in good] == [recs[0]["eventID"], recs[1]["eventID"]]


def test_bad_records_are_rejected_with_reasons_while_neighbours_decode() -> None:
    good = cloudtrail_records("stratus_detonation_logs")[0]
    doc = {
        "Records": [
            good,
            {"eventName": "X"},
            42,
            {**good, "eventID": "z", "eventTime": "soon"},
            {"foo": 1},
        ]
    }
    items = list(decode_document(doc))
    assert isinstance(items[0], ChangeEvent)
    reasons = [i.reason for i in items[1:] if isinstance(i, DecodeError)]
    assert reasons == [
        "not a CloudTrail record",
        "unknown record shape",
        "bad timestamp",
        "unknown record shape",
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2023-07-10T12:16:15Z", "2023-07-10T12:16:15Z"),
        ("2020-09-14 01:19:40", "2020-09-14T01:19:40Z"),
        ("2020-09-14T01:19:40.123456789Z", "2020-09-14T01:19:40.123Z"),
        ("2016-08-04T16:17:57.881781397+0000", "2016-08-04T16:17:57.881Z"),
        ("2023-07-10T14:16:15+02:00", "2023-07-10T12:16:15Z"),
        (1470327477881781397, "2016-08-04T16:17:57.881Z"),
        (1688991086923, "2023-07-10T12:11:26.923Z"),
        (1688991086, "2023-07-10T12:11:26Z"),
    ],
)
def test_timestamps(value: Any, expected: str) -> None:
    assert normalise_time(value) == expected


@pytest.mark.parametrize("value", ["", "soon", None, True, "2021-04-13T20:58:00.746Z+2"])
def test_bad_timestamps(value: Any) -> None:
    with pytest.raises(DecodeError):
        normalise_time(value)


def _identity(folder: str, kind: str) -> dict[str, Any]:
    for rec in cloudtrail_records(folder):
        uid = rec.get("userIdentity") or {}
        if uid.get("type") == kind:
            return uid
    raise AssertionError(f"no {kind} identity in {folder}")


def test_actor_attribution_from_real_identities() -> None:
    user = actor_from_identity(_identity("invictus_aws_dataset", "IAMUser"))
    assert user.type == "IAMUser" and user.user_name and user.arn.startswith("arn:aws:iam::")
    role = actor_from_identity(_identity("invictus_aws_dataset", "AssumedRole"))
    assert role.type in ("AssumedRole", "IdentityCenterUser")
    assert role.role and ":role/" in role.role and role.user_name
    assert role.arn.endswith("/" + role.user_name)
    service = actor_from_identity(_identity("invictus_aws_dataset", "AWSService"))
    assert service.type == "AWSService" and service.user_name.endswith(".amazonaws.com")
    assert (
        actor_from_identity(
            {
                "type": "Root",
                "principalId": "123",
                "arn": "arn:aws:iam::123:root",
                "accountId": "123",
            }
        ).user_name
        == "root"
    )
    sso = actor_from_identity(
        {
            "type": "AssumedRole",
            "principalId": "AROAX:jane@corp.example",
            "arn": "arn:aws:sts::1:assumed-role/AWSReservedSSO_Admin_abc/jane@corp.example",
            "accountId": "1",
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "arn": "arn:aws:iam::1:role/aws-reserved/sso.amazonaws.com/"
                    "AWSReservedSSO_Admin_abc",
                    "userName": "AWSReservedSSO_Admin_abc",
                }
            },
        }
    )
    assert sso.type == "IdentityCenterUser" and sso.user_name == "jane@corp.example"
    fed = actor_from_identity({"type": "SAMLUser", "principalId": "x:bob", "userName": "bob"})
    assert fed.type == "SAMLUser" and fed.user_name == "bob"


def test_every_real_falco_alert_decodes_or_is_rejected_with_a_reason() -> None:
    outcomes: Counter[str] = Counter()
    rejected: list[str] = []
    source_for = {
        "ModifyInstanceAttribute": "ec2.amazonaws.com",
        "AuthorizeSecurityGroupIngress": "ec2.amazonaws.com",
    }.get
    for position, alert in falco_alerts():
        try:
            item = decode_alert(alert, source_for)
        except DecodeError as exc:
            rejected.append(f"{position}: {exc.reason}")
            continue
        outcomes[type(item).__name__] += 1
        if isinstance(item, FalcoAlert):
            assert item.severity in ("critical", "high", "medium", "low")
    assert outcomes["FalcoAlert"] >= 40
    assert outcomes["ChangeEvent"] >= 4
    # Two hand-written lines have unreadable or absent times; they are named, not crashed on.
    assert len(rejected) == 2 and all("timestamp" in r for r in rejected)


def test_real_falco_cloudtrail_alert_becomes_a_change() -> None:
    alerts = [a for _, a in falco_alerts() if a.get("hostname") == "cca3f82eb5b6"]
    assert len(alerts) == 1
    change = decode_alert(alerts[0], {"AuthorizeSecurityGroupIngress": "ec2.amazonaws.com"}.get)
    assert isinstance(change, ChangeEvent)
    assert change.event_name == "AuthorizeSecurityGroupIngress"
    assert change.event_source == "ec2.amazonaws.com"
    # This capture's rule did not output ct.request: the change has no identifier to match
    # on, which is why rules/falco/ emits every ct.* field Driftline reads.
    assert change.request is None
    assert change.actor.user_name == "ADMIN_OKTA_TEST" and change.account_id == "230446364776"
    assert change.source_ip == "221.113.81.87" and change.region == "ap-northeast-1"
    assert change.event_time == "2026-07-22T14:24:41Z"


def test_cloudtrail_alert_with_ambiguous_name_and_no_source_is_rejected() -> None:
    alert = {
        "rule": "r",
        "source": "aws_cloudtrail",
        "time": "2024-01-01T00:00:00Z",
        "output": "",
        "output_fields": {"ct.name": "CreateAlias"},
    }
    with pytest.raises(DecodeError, match="several services"):
        decode_alert(alert)


def test_parse_documents_single_line_garbage() -> None:
    [raw] = list(parse_documents(b"{nope", "x"))
    assert raw.error is not None and raw.error.reason == "bad JSON"


def test_realdata_location_is_shared() -> None:
    assert REALDATA.name == "realdata" and (REALDATA / "SOURCES.md").exists()


# -- decode_bytes: the one bytes-to-items path ---------------------------------------------


def _reasons(items: list[Any]) -> list[str]:
    return [i.reason if isinstance(i, DecodeError) else type(i).__name__ for i in items]


def test_decode_bytes_stops_a_gzip_bomb_at_the_limit() -> None:
    # 64 MiB of zeros in about 64 KiB: only the first MiB may ever be decompressed.
    bomb = gzip.compress(bytes(64 * 1024 * 1024), compresslevel=9)
    for unit in ("record", "file", "body"):
        [err] = decode_bytes(bomb, "auto", Limits(max_bytes=1 << 20, unit=unit))
        assert isinstance(err, InputError) and err.reason == f"{unit} too large"
        assert err.line is None


def test_decode_bytes_limits_plain_input_too() -> None:
    data = orjson.dumps({"Records": []}) + b" " * 100
    assert _reasons(decode_bytes(data, "auto", Limits(max_bytes=50, unit="file"))) == [
        "file too large"
    ]
    assert decode_bytes(data, "auto", Limits(max_bytes=500)) == []


def test_decode_bytes_names_a_cut_off_gzip_by_whether_the_input_may_still_grow() -> None:
    cut = gzip.compress(orjson.dumps({"Records": []}))[:-6]
    assert _reasons(decode_bytes(cut, "auto", Limits(growing=True))) == ["truncated gzip"]
    assert _reasons(decode_bytes(cut, "auto", Limits())) == ["bad gzip"]


def test_decode_bytes_without_gzip_reads_the_bytes_as_json() -> None:
    body = gzip.compress(orjson.dumps(cloudtrail_records("invictus_aws_dataset")[0]))
    assert _reasons(decode_bytes(body, "auto", Limits(gzip=False)))[0] == "bad JSON"
    assert _reasons(decode_bytes(body, "auto", Limits())) == ["ChangeEvent"]


def test_decode_bytes_empty_input_is_an_error_only_where_it_is_poison() -> None:
    for data in (None, b"", b"  \n "):
        assert _reasons(decode_bytes(data, "auto", Limits(empty_is_error=True))) == ["empty record"]
        assert decode_bytes(data, "auto", Limits(unit="file")) == []


def test_decode_bytes_positions_errors_when_named() -> None:
    rec = cloudtrail_records("invictus_aws_dataset")[0]
    data = orjson.dumps(rec) + b"\n{nope\n" + orjson.dumps(rec)
    items = decode_bytes(data, "cloudtrail", Limits(), name="f.jsonl")
    assert _reasons(items) == ["ChangeEvent", "bad JSON", "ChangeEvent"]
    err = items[1]
    assert isinstance(err, InputError) and err.line == 2 and err.detail.startswith("f.jsonl:2: ")
    anonymous = decode_bytes(data, "cloudtrail", Limits())[1]
    assert isinstance(anonymous, InputError) and not anonymous.detail.startswith("record")
    [whole] = decode_bytes(b"{nope", "auto", Limits())
    assert isinstance(whole, InputError) and whole.line is None


def test_decode_bytes_reports_a_decoder_bug_as_a_rejection() -> None:
    def broken(doc: Any) -> list[Any]:
        raise KeyError("oops")

    [err] = decode_bytes(b"{}", broken, Limits())
    assert isinstance(err, DecodeError) and err.reason == "decoder failed"
    assert "KeyError" in err.detail


@pytest.mark.parametrize("fmt", FORMATS)
def test_decode_bytes_knows_every_format(fmt: str) -> None:
    items = decode_bytes(b'{"unrelated": true}', fmt, Limits())
    assert items and all(isinstance(i, DecodeError) for i in items)
    with pytest.raises(ValueError, match="unknown format"):
        decode_bytes(b"{}", "xml", Limits())
