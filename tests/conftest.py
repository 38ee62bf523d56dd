from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.realdata import REALDATA


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden", action="store_true", help="rewrite tests/golden/ from current output"
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


def pytest_sessionstart(session: pytest.Session) -> None:
    if not REALDATA.is_dir():
        raise pytest.UsageError(
            f"real data not found at {REALDATA}: the tests read ../shared/realdata "
            "(or set DRIFTLINE_REALDATA)"
        )


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return Path(__file__).parent / "golden"
