"""Shared pieces of the fault suite: a tiny synthetic KITTI set, a tiny config, and the checks
every fault test makes (exit status, the one-line message, nothing lost or changed).

The CLIs run in this process through :func:`lib.errors.run_cli` (as ``sys.exit(run_cli(main))``
does), which keeps the suite fast; no test trains more than one iteration.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from faults_common import TINY_BASE, TINY_CONFIG

from lib.datasets.synthetic import write_dataset


@pytest.fixture(scope="session")
def pristine(tmp_path_factory) -> Path:
    """The synthetic set with depth maps, written once; tests copy it before changing it."""
    from tools.make_depth_maps import main as depth_main

    root = tmp_path_factory.mktemp("faults") / "kitti"
    write_dataset(root, frames=10, seed=1, image_size=(128, 48), val_fraction=0.2)
    assert depth_main(["--data-dir", str(root), "--split", "trainval"]) == 0
    return root


@pytest.fixture
def data(pristine: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the synthetic set."""
    return Path(shutil.copytree(pristine, tmp_path / "kitti"))


@pytest.fixture
def config(data: Path, tmp_path: Path) -> Path:
    """The tiny config on the private copy of the data (run folders under tmp_path/out)."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONFIG.format(base=TINY_BASE, data=data))
    return path


@pytest.fixture(autouse=True)
def restore_globals(cli_globals) -> None:
    """Fault tests run CLI mains in-process: one torch thread, process-wide settings undone after
    (tests/conftest.py ``cli_globals``)."""
