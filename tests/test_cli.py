"""`driftline detect` as a user runs it: real files in, JSON lines and exit codes out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rules import load_catalogue
from tests.support.realdata import CLOUDTRAIL, FALCO, TFSTATE, cloudtrail_records
from tests.support.replay_state import replay_state

DRIFT_FIELDS = {
    "id",
    "kind",
    "severity",
    "provider",
    "account_id",
    "region",
    "resource_type",
    "resource_id",
    "resource_address",
    "field",
    "old_value",
    "new_value",
    "event_id",
    "event_name",
    "event_time",
    "detected_at",
    "actor",
    "source_ip",
    "user_agent",
    "status",
}
INVICTUS = CLOUDTRAIL / "invictus_aws_dataset"
GOLDEN = Path(__file__).parent / "golden" / "invictus_drifts.jsonl"
pytestmark = pytest.mark.integration  # every test runs the CLI in a subprocess


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor.app.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def state_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("state") / "replayed.tfstate"
    path.write_text(
        json.dumps(replay_state(cloudtrail_records("invictus_aws_dataset"), load_catalogue()))
    )
    return path


def test_drifts_found_exit_1_one_json_object_per_line(state_file: Path) -> None:
    proc = run("detect", "--state", str(state_file), str(INVICTUS))
    assert proc.returncode == 1, proc.stderr
    drifts = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(drifts) == len(GOLDEN.read_text().splitlines())
    for d in drifts:
        assert set(d) >= DRIFT_FIELDS
        assert set(d["actor"]) >= {"type", "principal_id", "arn", "account_id", "user_name"}
    assert "55 files, 2900 records" in proc.stderr
    assert f"{len(drifts)} drifts (missing" in proc.stderr


def test_no_drift_exit_0(state_file: Path) -> None:
    proc = run("detect", "--state", str(state_file), str(CLOUDTRAIL / "otrf_security_datasets"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "0 drifts" in proc.stderr


def test_duplicates_across_inputs_are_reported_once(state_file: Path) -> None:
    once = run("detect", "-q", "--state", str(state_file), str(INVICTUS))
    twice = run("detect", "--state", str(state_file), str(INVICTUS), str(INVICTUS))

    def stable(out: str) -> list[dict]:
        return [
            {k: v for k, v in json.loads(line).items() if k != "detected_at"}
            for line in out.splitlines()
        ]

    assert stable(twice.stdout) == stable(once.stdout) != []
    assert "2900 duplicates" in twice.stderr


def test_apply_principal_is_not_drift(state_file: Path) -> None:
    proc = run(
        "detect",
        "-q",
        "--state",
        str(state_file),
        "--apply-principal",
        "arn:aws:iam::123837392027:user/bert-jan",
        str(INVICTUS),
    )
    # Every change in this dataset outside Terraform was made by bert-jan.
    assert proc.returncode == 0 and proc.stdout == ""


def test_ignore_file_leaves_covered_drifts_out(state_file: Path, tmp_path: Path) -> None:
    every = [
        json.loads(line)
        for line in run(
            "detect", "-q", "--state", str(state_file), str(INVICTUS)
        ).stdout.splitlines()
    ]
    first = every[0]
    ignore = tmp_path / ".driftignore"
    # driftctl's format: every resource of one type.
    ignore.write_text(f"# noise\n{first['resource_type']}.*\n")
    proc = run("detect", "--state", str(state_file), "--ignore-file", str(ignore), str(INVICTUS))
    kept = [json.loads(line) for line in proc.stdout.splitlines()]
    assert kept == [] or all(d["resource_type"] != first["resource_type"] for d in kept)
    assert len(kept) == sum(d["resource_type"] != first["resource_type"] for d in every)
    assert f"{len(every) - len(kept)} more left out by the ignore file" in proc.stderr
    missing = run(
        "detect", "--state", str(state_file), "--ignore-file", str(tmp_path / "nope"), str(INVICTUS)
    )
    assert missing.returncode == 2 and "cannot read the ignore file" in missing.stderr


def test_falco_files_and_rejections_are_summarised(state_file: Path) -> None:
    proc = run("detect", "--state", str(state_file), str(FALCO))
    assert proc.returncode in (0, 1)
    assert "runtime alerts" in proc.stderr and "rejected" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [
                "--state",
                str(TFSTATE / "inframap/generate_testdata_version_3_state.json"),
                str(INVICTUS),
            ],
            "state format version 3",
        ),
        (
            [
                "--state",
                str(TFSTATE / "tfdrift-falco/pkg_terraform_testdata_invalid.tfstate"),
                str(INVICTUS),
            ],
            "not valid JSON",
        ),
        (
            [
                "--state",
                str(TFSTATE / "tfdrift-falco/pkg_detector_testdata_terraform.tfstate"),
                "/nonexistent/events",
            ],
            "no such file or directory",
        ),
    ],
)
def test_errors_exit_2_with_a_message(args: list[str], message: str) -> None:
    proc = run("detect", *args)
    assert proc.returncode == 2
    assert message in proc.stderr and proc.stdout == ""
