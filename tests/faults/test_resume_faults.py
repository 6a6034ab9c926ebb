"""Resume with a changed config: settings that fix what the optimizer, schedule, data or network
do are refused with every difference listed (nothing written); when and how often the run
evaluates, saves and logs, how long it runs and where its files are may change: applied, logged
and recorded in config.yaml (lib/engine/checkpoint.py ``resume_config_changes``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from faults_common import TINY_BASE, TINY_CONFIG, cli, error_line, snapshot

from lib.config import load_config
from lib.engine.checkpoint import ResumeConfigError, resume_config_changes
from lib.errors import run_cli
from lib.models.checkpoint_io import load_checkpoint
from lib.utils.logging import reset_logging
from tools.train_val import main as train_main


def test_fixed_settings_are_refused_with_every_difference(config):
    stored = load_config(config).to_dict()
    now = load_config(config, ["optimizer.lr=0.01", "dataset.batch_size=4", "trainer.max_epoch=5"]).to_dict()
    with pytest.raises(ResumeConfigError) as err:
        resume_config_changes(stored, now, "run/last.pth")
    assert str(err.value).startswith(
        "run/last.pth: --resume cannot change these settings of the run (checkpoint -> now): "
        "dataset.batch_size: 2 -> 4; optimizer.lr: 0.00125 -> 0.01. Put them back"
    )


def test_cadence_length_and_paths_may_change(config):
    stored = load_config(config).to_dict()
    changes = [
        "trainer.max_epoch=3",
        "trainer.eval_frequency=2",
        "tester.threshold=0.3",
        "experiment.output_dir=x",
    ]
    now = load_config(config, changes).to_dict()
    assert resume_config_changes(stored, now, "last.pth") == [
        "experiment.output_dir: 'outputs' -> 'x'",
        "trainer.max_epoch: 1 -> 3",
        "trainer.eval_frequency: 0 -> 2",
        "tester.threshold: 0.0 -> 0.3",
    ]
    assert resume_config_changes(None, now, "gupnet.pth") == []  # a file without a stored config


@pytest.fixture(scope="module")
def first_epoch(pristine, tmp_path_factory) -> tuple[Path, Path]:
    """(config, run folder) after one epoch of one step, trained once for this module."""
    root = tmp_path_factory.mktemp("resume")
    config = root / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(base=TINY_BASE, data=pristine))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_cli(train_main, ["--config", str(config), "--output-dir", str(root / "out")]) == 0
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
        reset_logging()
    return config, root / "out" / "tiny"


@pytest.fixture
def trained(first_epoch, tmp_path) -> Path:
    """A private copy of that run folder, ``tmp_path/out/tiny``."""
    return Path(shutil.copytree(first_epoch[1], tmp_path / "out" / "tiny"))


@pytest.fixture
def config(first_epoch) -> Path:
    """The config of that run (its data is read, never written)."""
    return first_epoch[0]


def test_resume_with_another_learning_rate_writes_nothing(config, trained, tmp_path, capsys):
    before = snapshot(trained)
    argv = ["--config", config, "optimizer.lr=0.1", "--output-dir", tmp_path / "out", "--resume"]
    code, err = cli(train_main, argv, capsys)
    assert code == 2
    assert error_line(err) == (
        f"error: {trained / 'checkpoints' / 'last.pth'}: --resume cannot change these settings of the run "
        "(checkpoint -> now): optimizer.lr: 0.00125 -> 0.1. Put them back, or start a new run (--overwrite, "
        "or another experiment.name); only when and how often it evaluates, saves and logs, max_epoch and "
        "paths may change"
    )
    after = snapshot(trained)
    assert {k: v for k, v in after.items() if k != "train.log"} == {
        k: v for k, v in before.items() if k != "train.log"
    }  # config.yaml still records the lr the optimizer used


def test_resume_with_more_epochs_applies_logs_and_records_them(config, trained, tmp_path, capsys):
    argv = ["--config", config, "trainer.max_epoch=2", "--output-dir", tmp_path / "out", "--resume"]
    code, err = cli(train_main, argv, capsys)
    assert code == 0, err
    assert load_checkpoint(trained / "checkpoints" / "last.pth")["epoch"] == 2
    recorded = yaml.safe_load((trained / "config.yaml").read_text())
    assert recorded["trainer"]["max_epoch"] == 2 and recorded["optimizer"]["lr"] == 0.00125
    assert (
        "--resume applies the changed setting trainer.max_epoch: 1 -> 2"
        in (trained / "train.log").read_text()
    )


def test_resume_from_a_diverged_checkpoint_names_the_nan(config, trained, tmp_path, capsys):
    last = trained / "checkpoints" / "last.pth"
    ckpt = torch.load(last, weights_only=True)
    name = next(iter(ckpt["model"]))
    ckpt["model"][name] = torch.full_like(ckpt["model"][name], float("nan"))
    torch.save(ckpt, last)
    argv = ["--config", config, "trainer.max_epoch=2", "--output-dir", tmp_path / "out", "--resume"]
    code, err = cli(train_main, argv, capsys)
    assert code == 2
    line = error_line(err)
    assert (
        line.startswith(f"error: {last}: 1 of its ")
        and f"hold NaN or infinite values (first: {name})" in line
    )
