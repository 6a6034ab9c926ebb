"""Shared pieces of the fault suite: a tiny synthetic KITTI set, a tiny config, and the checks
every fault test makes (exit status, the one-line message, nothing lost or changed).

The CLIs run in this process through :func:`lib.errors.run_cli` (as ``sys.exit(run_cli(main))``
does), which keeps the suite fast; no test trains more than one iteration.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lib.datasets.synthetic import write_dataset

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_BASE = REPO_ROOT / "tests" / "configs" / "tiny.yaml"  # tiny network and data of the CLI tests
# 8 train + 2 val frames of 128x48 pixels; the network sees 128x64 (resnet18, 16-channel heads).
TINY_CONFIG = """\
_base_: {base}
experiment:
  seed: 3
dataset:
  root_dir: {data}
trainer:
  max_epoch: 1
  max_iters_per_epoch: 1
  save_frequency: 1
  log_interval: 1
  htl_init_pass: false
"""


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
