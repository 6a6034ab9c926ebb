"""Pytest fixtures for every test: the real KITTI sample frames kept in tests/data/."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lib.utils.logging import reset_logging

TEST_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def test_data_dir() -> Path:
    """tests/data: the sample frames and the devkit golden cases, part of the repository."""
    return TEST_DATA


@pytest.fixture(scope="session")
def kitti_sample_dir(test_data_dir: Path) -> Path:
    """Three real KITTI training frames (tests/data/kitti_sample), not to be written to."""
    return test_data_dir / "kitti_sample"


@pytest.fixture
def kitti_sample(kitti_sample_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the three real KITTI frames, for tests that write beside them."""
    dst = tmp_path / "kitti_sample"
    shutil.copytree(kitti_sample_dir, dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


@pytest.fixture
def cli_globals() -> Iterator[None]:
    """One torch thread while a test runs CLI mains in-process; afterwards undo what they set
    process-wide (deterministic mode, log handlers bound to this test's captured stderr)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(False)
    reset_logging()
