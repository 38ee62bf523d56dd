"""`driftline serve` and `driftline keys` as a user runs them: real processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from tests.support.records import DEMO_STATE

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")
PRINTED_KEY = re.compile(rb"^\s+(dl_[A-Za-z0-9_-]{43})\s*$", re.M)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor.app.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def create_key(data_dir: Path, role: str, name: str = "tests") -> str:
    """`driftline keys create`: the key is the whole of stdout."""
    done = cli("keys", "create", "--data-dir", str(data_dir), "--name", name, "--role", role)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@contextlib.asynccontextmanager
async def serve(
    data_dir: Path, *extra: str
) -> AsyncIterator[tuple[subprocess.Popen[bytes], str, str | None]]:
    """`driftline serve` on a free port (port 0, read back from its log); yields the process,
    its base URL and the admin key it printed on first start (None when it printed none)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "monitor.app.cli",
            "serve",
            "--state",
            str(ROOT / DEMO_STATE),
            "--data-dir",
            str(data_dir),
            "--port",
            "0",
            "--log-level",
            "info",
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    loop = asyncio.get_running_loop()
    seen = b""
    try:
        while not (m := LISTENING.search(seen)):
            line = await asyncio.wait_for(loop.run_in_executor(None, proc.stderr.readline), 30)
            if not line:
                raise AssertionError("server exited early: " + seen.decode(errors="replace"))
            seen += line
        key = PRINTED_KEY.search(seen)
        yield proc, f"http://127.0.0.1:{int(m.group(1))}", key.group(1).decode() if key else None
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stderr.close()
