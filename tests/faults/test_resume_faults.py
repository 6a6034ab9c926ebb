"""Resume with a changed config: settings that fix what the optimizer, schedule, data or network
do are refused with every difference listed (nothing written); when and how often the run
evaluates, saves and logs, how long it runs and where its files are may change: applied, logged
and recorded in config.yaml (lib/engine/checkpoint.py ``resume_config_changes``)."""

from __future__ import annotations

import os
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
def first_epoch(pristine, module_tmp) -> tuple[Path, Path]:
    """(config, run folder) after one epoch of one step, trained once for this module."""
    root = module_tmp
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


def linked_copy(run: Path, dst: Path) -> Path:
    """A copy of the run folder ``run`` whose checkpoints are hard links (no disk for ~180 MB
    files; checkpoints are only ever replaced whole, so the original's stay as they are)."""

    def copy(src: str, out: str) -> None:
        os.link(src, out) if src.endswith(".pth") else shutil.copy2(src, out)

    return Path(shutil.copytree(run, dst, copy_function=copy))


def test_resume_of_a_copied_run_writes_into_the_copy(first_epoch, tmp_path, capsys):
    original = first_epoch[1]
    copy = linked_copy(original, tmp_path / "copies" / "mine")
    before = snapshot(original)
    code, err = cli(train_main, ["--resume", copy / "checkpoints" / "last.pth"], capsys)
    assert code == 0, err
    assert snapshot(original) == before  # not one byte of the run the checkpoint's config names
    assert f"the run folder is {copy}, which holds {copy / 'checkpoints' / 'last.pth'}" in err
    recorded = yaml.safe_load((copy / "config.yaml").read_text())["experiment"]
    assert (recorded["output_dir"], recorded["name"]) == (str(tmp_path / "copies"), "mine")
    assert "resumed from" in (copy / "train.log").read_text()


def test_evaluation_of_a_copied_run_writes_into_the_copy(first_epoch, tmp_path, capsys):
    original = first_epoch[1]
    copy = linked_copy(original, tmp_path / "copy" / "tiny")
    before = snapshot(original)
    code, err = cli(train_main, ["-e", "--resume", copy / "checkpoints" / "last.pth"], capsys)
    assert code == 0, err
    assert snapshot(original) == before
    assert (copy / "test_config.yaml").is_file() and list((copy / "results" / "val").rglob("*.txt"))


def test_resume_into_another_runs_folder_is_refused(first_epoch, tmp_path, capsys):
    """--resume A's checkpoint with --output-dir / experiment.name naming run B, which holds
    checkpoints of its own: B's files would be replaced."""
    mine = linked_copy(first_epoch[1], tmp_path / "runs" / "student")
    other = linked_copy(first_epoch[1], tmp_path / "runs" / "teacher")
    before = snapshot(tmp_path / "runs")
    ckpt = mine / "checkpoints" / "last.pth"
    argv = ["--resume", ckpt, "--output-dir", tmp_path / "runs", "experiment.name=teacher"]
    code, err = cli(train_main, argv, capsys)
    assert code == 2
    line = error_line(err)
    assert line.startswith(f"error: {other}: holds the checkpoints of another run (") and "last.pth" in line
    assert f"resuming {ckpt} there would replace them" in line
    assert snapshot(tmp_path / "runs") == before


def test_a_checkpoint_outside_a_run_folder_needs_output_dir(first_epoch, tmp_path, capsys):
    loose = tmp_path / "downloads" / "model.pth"
    loose.parent.mkdir()
    os.link(first_epoch[1] / "checkpoints" / "last.pth", loose)
    before, stored_run = snapshot(tmp_path), snapshot(first_epoch[1])
    for flags in (["--resume", loose], ["-e", "--resume", loose]):
        code, err = cli(train_main, flags, capsys)
        assert code == 2
        assert error_line(err) == (
            f"error: {loose}: lies in no run folder (<run>/checkpoints/), so the run's files have no home: "
            "pass --output-dir (the run folder is <output-dir>/<experiment.name>)"
        )
    assert snapshot(tmp_path) == before and snapshot(first_epoch[1]) == stored_run


def test_resume_lists_every_fixed_difference_in_one_message(config, first_epoch, tmp_path, capsys):
    copy = linked_copy(first_epoch[1], tmp_path / "out" / "tiny")
    before = snapshot(copy)
    changes = ["optimizer.lr=0.05", "dataset.batch_size=4", "model.head_conv=64", "experiment.seed=1"]
    argv = ["--config", config, "--output-dir", tmp_path / "out", *changes, "--resume"]
    code, err = cli(train_main, argv, capsys)
    assert code == 2
    assert error_line(err) == (
        f"error: {copy / 'checkpoints' / 'last.pth'}: not a checkpoint for --resume: model.head_conv is 16 "
        "in the checkpoint, the run needs 64; nor can --resume change these settings of the run "
        "(checkpoint -> now): experiment.seed: 3 -> 1; dataset.batch_size: 2 -> 4; optimizer.lr: 0.00125 -> "
        "0.05. Put them back, or start a new run (--overwrite, or another experiment.name); only when and "
        "how often it evaluates, saves and logs, max_epoch and paths may change"
    )
    assert {k: v for k, v in snapshot(copy).items() if k != "train.log"} == {
        k: v for k, v in before.items() if k != "train.log"
    }


def test_a_hand_edited_config_yaml_is_named_when_the_checkpoint_config_runs(first_epoch, tmp_path, capsys):
    copy = linked_copy(first_epoch[1], tmp_path / "out" / "tiny")
    written = copy / "config.yaml"
    edited = yaml.safe_load(written.read_text())
    edited["optimizer"]["lr"], edited["tester"]["topk"] = 0.05, 7
    written.write_text(yaml.safe_dump(edited, sort_keys=False))
    code, err = cli(train_main, ["--resume", copy / "checkpoints" / "last.pth", "tester.topk=7"], capsys)
    assert code == 0, err
    assert (
        f"WARNING tools.train_val: {written} differs from the config stored in "
        f"{copy / 'checkpoints' / 'last.pth'} (optimizer.lr: 0.00125 in the checkpoint, 0.05 in the file): "
        "the checkpoint's config is used, with the command line's overrides, and config.yaml is rewritten "
        "to record it; pass changes as overrides, or the config with --config"
    ) in err  # tester.topk, given as an override too, is used: not named
    recorded = yaml.safe_load(written.read_text())
    assert (recorded["optimizer"]["lr"], recorded["tester"]["topk"]) == (0.00125, 7)


def test_an_override_after_resume_is_not_taken_for_the_checkpoint(config, tmp_path, capsys):
    argv = [
        "--config",
        config,
        "--output-dir",
        tmp_path / "out",
        "--resume",
        "dataset.root_dir=/x",
        "trainer.max_epoch=2",
    ]
    code, err = cli(train_main, argv, capsys)
    assert code == 2
    assert error_line(err) == (
        "error: --resume took the override 'dataset.root_dir=/x' for its checkpoint: put the overrides "
        "before --resume, or give --resume the checkpoint "
        "(--resume alone continues <run>/checkpoints/last.pth)"
    )
    assert not (tmp_path / "out").exists()
