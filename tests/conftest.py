"""Shared fixtures. ``INTERMIMIC_DATA`` points at the shared data; CI must have it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _data_root() -> Path | None:
    value = os.environ.get("INTERMIMIC_DATA")
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared data folder; fails (never skips) in CI when it is missing."""
    root = _data_root()
    if root is None:
        message = "INTERMIMIC_DATA is not set or not a folder (CI sets it to ../shared/data)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def motions_root(data_root: Path) -> Path:
    return data_root / "motions"


@pytest.fixture(scope="session")
def assets_root(data_root: Path) -> Path:
    return data_root / "assets"
