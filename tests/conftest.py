"""Pytest fixtures for every test: the real KITTI sample frames kept in tests/data/."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lib.utils.logging import reset_logging

TEST_DATA = Path(__file__).resolve().parent / "data"


def pytest_configure(config: pytest.Config) -> None:
    """One OpenMP thread, here and in the CLIs the suite starts, unless the caller chose a count:
    the suite's tensors are tiny, and on a busy 2-core machine spinning OpenMP threads make a
    forward pass tens of times slower."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


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


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A folder shared by one test module's fixtures, removed when the module ends: run folders
    hold checkpoints of ~180 MB each, and CI has little disk. (Function-scoped ``tmp_path``
    folders of passing tests go at once: ``tmp_path_retention_policy`` in pyproject.toml.)"""
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def cli_globals() -> Iterator[None]:
    """After a test that runs CLI mains in-process, undo what they set process-wide (thread count,
    deterministic mode, log handlers bound to this test's captured stderr)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(False)
    reset_logging()
