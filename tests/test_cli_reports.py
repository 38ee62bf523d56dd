"""`driftline detect` in process: exit codes, stdin, --fail-on and the report formats."""

from __future__ import annotations

import io
import json
from pathlib import Path
from xml.etree import ElementTree as ET

import orjson
import pytest

from monitor.app.cli import main
from monitor.app.demo_replay import demo_records

ROOT = Path(__file__).resolve().parents[1]
STATE = str(ROOT / "monitor/app/demo/demo.tfstate")
STREAM = ROOT / "monitor/app/demo/stream.jsonl"
DEMO_DRIFTS = 9  # the demo stream against the demo state (README)


def detect(capsysbinary: pytest.CaptureFixture[bytes], *args: str) -> tuple[int, bytes, str]:
    code = main(["detect", "--state", STATE, *args])
    out, err = capsysbinary.readouterr()
    return code, out, err.decode()


def test_records_read_but_none_decoded_is_exit_2(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text("this is not JSON\n")
    shapes = tmp_path / "shapes.jsonl"
    shapes.write_bytes(b"\n".join(orjson.dumps({"foo": n}) for n in range(3)))
    for path in (junk, shapes):
        code, out, err = detect(capsysbinary, str(path))
        assert code == 2 and out == b""
        assert "none of the" in err and "could be decoded" in err
    empty = tmp_path / "empty.json"
    empty.write_text("")
    assert detect(capsysbinary, str(empty))[0] == 0  # nothing read: nothing wrong


def test_dash_reads_stdin(capsysbinary: pytest.CaptureFixture[bytes], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from_file = detect(capsysbinary, "-q", str(STREAM))
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(STREAM.read_bytes())))
    from_stdin = detect(capsysbinary, "-q", "-")
    assert from_stdin[0] == from_file[0] == 1
    ids = [json.loads(line)["id"] for line in from_stdin[1].splitlines()]
    assert len(ids) == DEMO_DRIFTS
    assert ids == [json.loads(line)["id"] for line in from_file[1].splitlines()]


def test_fail_on_sets_the_bar_for_exit_1(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    medium_only = tmp_path / "resize.jsonl"
    resize = next(r for r in demo_records() if r["eventName"] == "ModifyInstanceAttribute")
    medium_only.write_bytes(orjson.dumps(resize))
    code, out, _ = detect(capsysbinary, "--fail-on", "high", str(medium_only))
    assert code == 0 and json.loads(out)["severity"] == "medium"  # reported, not failing
    assert detect(capsysbinary, "--fail-on", "medium", str(medium_only))[0] == 1
    assert detect(capsysbinary, "--fail-on", "critical", str(STREAM))[0] == 1


def test_sarif_has_what_the_2_1_0_schema_requires(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    code, out, _ = detect(capsysbinary, "-q", "--format", "sarif", str(STREAM))
    log = json.loads(out)
    assert code == 1 and log["version"] == "2.1.0" and len(log["runs"]) == 1
    run = log["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "driftline"
    rule_ids = {r["id"] for r in driver["rules"]}
    assert len(run["results"]) == DEMO_DRIFTS
    for result in run["results"]:
        assert result["message"]["text"] and result["ruleId"] in rule_ids
        assert result["level"] in ("error", "warning", "note")
        location = result["locations"][0]["physicalLocation"]
        assert location["artifactLocation"]["uri"].endswith("stream.jsonl")
        assert location["region"]["startLine"] >= 1


def test_junit_fails_the_cases_at_or_above_fail_on(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    code, out, _ = detect(
        capsysbinary, "-q", "--format", "junit", "--fail-on", "critical", str(STREAM)
    )
    root = ET.fromstring(out)
    cases = root.findall("./testsuite/testcase")
    failed = [c for c in cases if c.find("failure") is not None]
    assert code == 1 and len(cases) == DEMO_DRIFTS
    assert {c.find("failure").get("type") for c in failed} == {"critical"}  # type: ignore[union-attr]
    assert root.get("failures") == str(len(failed)) and 0 < len(failed) < DEMO_DRIFTS


def test_table_has_a_row_per_drift(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    code, out, _ = detect(capsysbinary, "-q", "--format", "table", str(STREAM))
    lines = out.decode().splitlines()
    assert code == 1 and lines[0].split()[:3] == ["SEVERITY", "KIND", "RESOURCE"]
    assert len(lines) == 1 + DEMO_DRIFTS and lines[1].startswith("critical")
