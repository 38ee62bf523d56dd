"""deploy/systemd/driftline.service: hardened, and a unit systemd itself accepts."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.app.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "systemd" / "driftline.service"


def _service() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    section = ""
    for line in UNIT.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line and not line.startswith("#"):
            name, value = line.split("=", 1)
            settings.setdefault(name, []).append(value)
    return settings


def test_the_unit_is_hardened_and_keeps_its_data_in_the_state_directory():
    s = _service()
    for name, value in {
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "StateDirectory": "driftline",
        "CapabilityBoundingSet": "",
    }.items():
        assert s[name] == [value], name
    assert "DRIFTLINE_DATA_DIR=%S/driftline" in s["Environment"]
    argv = shlex.split(s["ExecStart"][0])
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve" and args.config == "/etc/driftline/driftline.yaml"


@pytest.mark.integration
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    driftline = Path(sys.executable).parent / "driftline"
    unit = tmp_path / "driftline.service"
    unit.write_text(UNIT.read_text().replace("/opt/driftline/bin/driftline", str(driftline)))
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 on unknown keys too; a warning is a failure here.
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
