"""Shared pytest fixtures: the read-only shared/ folder beside the repo, and the sample frames."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = (REPO_ROOT / ".." / "shared").resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The project's shared/ folder (read-only); tests needing it skip when it is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DIR}")
    return SHARED_DIR


@pytest.fixture(scope="session")
def kitti_sample_dir(shared_dir: Path) -> Path:
    """The three real KITTI frames (shared/data/kitti_sample), read-only; skipped when absent."""
    root = shared_dir / "data" / "kitti_sample"
    if not root.is_dir():
        pytest.skip(f"KITTI sample frames not found at {root}")
    return root


@pytest.fixture
def kitti_sample(kitti_sample_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the three real KITTI frames, for tests that write beside them."""
    dst = tmp_path / "kitti_sample"
    shutil.copytree(kitti_sample_dir, dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst
