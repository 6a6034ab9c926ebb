"""Config faults: every one ends in one line ``error: <file or key>: <reason>``, exit status 2,
before any checkpoint is written; YAML floats such as ``1e-3`` are numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
from faults_common import assert_kept, cli, cli_out, error_line, snapshot

from lib.config import load_config
from tools.check_dataset import main as check_main
from tools.train_val import main as train_main

BASE = Path(__file__).resolve().parents[2] / "configs" / "base.yaml"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.max_epochs=3"], "unknown config key 'trainer.max_epochs'"),
        (["trainer.max_epoch=ten"], "'trainer.max_epoch': expected int, got str"),
        (["noequals"], "expected key.sub=value"),
        (["trainer.amp=fp8"], "trainer.amp: unknown mode 'fp8'"),
        (["trainer.max_epoch=0"], "trainer.max_epoch must be >= 1, got 0"),
        (["model.type=yolo"], "model.type: unknown detector 'yolo'"),
        (["optimizer.type=rmsprop"], "optimizer.type: unknown optimizer 'rmsprop'"),
        (["dataset.resolution=[130,64]"], "must be a multiple of downsample=4"),
        (["dataset.batch_size=9"], "dataset.batch_size 9 is larger than the 8 frames of split 'train'"),
        (["distill.dualkl.weight=1.0"], "distill.teacher_checkpoint is not set"),
        (["dataset.writelist=[Car,Truck]"], "writelist classes ['Truck'] are not among"),
    ],
)
def test_bad_setting_is_one_line_and_writes_no_checkpoint(config, tmp_path, capsys, overrides, message):
    code, err = cli(train_main, ["--config", config, "--output-dir", tmp_path / "out", *overrides], capsys)
    assert code == 2
    assert message in error_line(err)
    assert not list((tmp_path / "out").rglob("*.pth"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty config file"),
        ("_base_: [a.yaml, b.yaml]\n", "'_base_' must name one parent file, got ['a.yaml', 'b.yaml']"),
        ("- a\n- b\n", "a config must be a mapping at the top level"),
        ("experiment: {name: x\n", "invalid YAML"),
        ("_base_: missing.yaml\n", "config file not found"),
        ("_base_: self.yaml\n", "circular _base_ chain"),
    ],
)
def test_bad_config_file_names_the_file(tmp_path, capsys, text, message):
    path = tmp_path / "self.yaml"
    path.write_text(text)
    before = snapshot(tmp_path)
    code, err = cli(train_main, ["--config", path, "--output-dir", tmp_path / "out"], capsys)
    assert code == 2
    line = error_line(err)
    assert message in line and str(tmp_path) in line
    assert_kept(before, tmp_path)


def test_missing_config_file(tmp_path, capsys):
    code, err = cli(train_main, ["--config", tmp_path / "nope.yaml"], capsys)
    assert code == 2
    assert error_line(err) == f"error: config file not found: {tmp_path / 'nope.yaml'}"


def test_yaml_exponent_floats_are_numbers(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text(f"_base_: {BASE}\noptimizer:\n  lr: 1e-3\n  weight_decay: 5E-4\n")
    cfg = load_config(path, ["lr_scheduler.warmup_start_lr=1e-6"])
    assert cfg.optimizer.lr == 0.001 and isinstance(cfg.optimizer.lr, float)
    assert cfg.optimizer.weight_decay == 0.0005
    assert cfg.lr_scheduler.warmup_start_lr == 1e-6


def test_exponent_override_accepted_by_a_cli(config, capsys):
    code, out, err = cli_out(check_main, ["--config", config, "optimizer.lr=1e-3"], capsys)
    assert code == 0, err
    assert "10 frames checked: 0 error(s), 0 warning(s)" in out
