"""Config values out of range and keys missing from a config: one line ``error: <where>: <key> must
be <range>, got <value>`` naming the override or file that set the value (lib/config.py
``RANGES``), exit status 2, before the run folder is made; a file without ``_base_`` that lacks a
key of configs/base.yaml names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from faults_common import cli, error_line, snapshot

from lib.config import BASE_CONFIG, RANGES, ConfigError, Range, load_config
from tools.train_val import main as train_main


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tester.threshold=5", "tester.threshold must be in [0, 1], got 5.0"),
        ("tester.threshold=.nan", "tester.threshold must be in [0, 1], got nan"),
        ("dataset.batch_size=0", "dataset.batch_size must be >= 1, got 0"),
        ("dataset.num_workers=-1", "dataset.num_workers must be >= 0, got -1"),
        ("optimizer.lr=-1", "optimizer.lr must be > 0, got -1.0"),
        ("optimizer.momentum=1", "optimizer.momentum must be in [0, 1), got 1.0"),
        ("trainer.accumulate_steps=0", "trainer.accumulate_steps must be >= 1, got 0"),
        ("distill.dualkl.head_mass=0", "distill.dualkl.head_mass must be in (0, 1], got 0.0"),
        ("lr_scheduler.decay_list=[90,-1]", "lr_scheduler.decay_list must be >= 0, got [90, -1]"),
        ("dataset.resolution=[0,64]", "dataset.resolution must be >= 1, got [0, 64]"),
        ("rpd.num_bins=1", "rpd.num_bins must be >= 2, got 1"),
    ],
)
def test_an_override_out_of_range_is_named(config, tmp_path, capsys, override, message):
    code, err = cli(train_main, ["--config", config, "--output-dir", tmp_path / "out", override], capsys)
    assert code == 2
    assert error_line(err) == f"error: override '{override}': {message}"
    assert not (tmp_path / "out").exists()


def test_a_file_value_out_of_range_names_the_file(config, tmp_path, capsys):
    child = tmp_path / "child.yaml"
    child.write_text(f"_base_: {config}\ntester:\n  threshold: 5\n")
    code, err = cli(train_main, ["--config", child, "--output-dir", tmp_path / "out"], capsys)
    assert code == 2
    assert error_line(err) == f"error: {child}: tester.threshold must be in [0, 1], got 5.0"
    assert not (tmp_path / "out").exists()


def test_evaluation_with_a_threshold_out_of_range_is_refused(config, tmp_path, capsys):
    """``-e --resume CKPT tester.threshold=5`` dropped every detection and exited 0."""
    ckpt = tmp_path / "run" / "checkpoints" / "last.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save(
        {"model_state": {}, "task": "detector", "epoch": 1, "config": load_config(config).to_dict()}, ckpt
    )
    before = snapshot(tmp_path / "run")
    code, err = cli(train_main, ["-e", "--resume", ckpt, "tester.threshold=5"], capsys)
    assert code == 2
    assert (
        error_line(err) == "error: override 'tester.threshold=5': tester.threshold must be in [0, 1], got 5.0"
    )
    assert snapshot(tmp_path / "run") == before


def test_a_stored_config_out_of_range_names_the_checkpoint(config, tmp_path, capsys):
    stored = load_config(config).to_dict()
    stored["dataset"]["batch_size"] = 0  # a checkpoint written by another version of the code
    ckpt = tmp_path / "run" / "checkpoints" / "last.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save({"model_state": {}, "task": "detector", "epoch": 1, "config": stored}, ckpt)
    code, err = cli(train_main, ["-e", "--resume", ckpt], capsys)
    assert code == 2
    assert error_line(err) == (f"error: {ckpt} (its stored config): dataset.batch_size must be >= 1, got 0")


@pytest.mark.parametrize(
    ("override", "accepted"),
    [
        ("tester.threshold=0", True),
        ("tester.threshold=1", True),
        ("tester.threshold=1.001", False),
        ("optimizer.momentum=0.999", True),
        ("distill.dualkl.head_mass=1", True),
        ("dataset.batch_size=1", True),
        ("dataset.num_workers=0", True),
        ("trainer.max_epoch=0", False),
        ("loss.htl_horizon=null", True),
    ],
)
def test_range_bounds(override, accepted):
    if accepted:
        load_config(BASE_CONFIG, [override])
    else:
        with pytest.raises(ConfigError, match="must be"):
            load_config(BASE_CONFIG, [override])


def test_every_range_is_a_numeric_key_of_base_yaml_whose_default_it_holds():
    base = yaml.safe_load(BASE_CONFIG.read_text())
    for key, allowed in RANGES.items():
        value = base
        for part in key.split("."):
            value = value[part]  # a KeyError names a key that base.yaml does not have
        values = value if isinstance(value, list) else [value]
        assert all(v is None or isinstance(v, (int, float)) and allowed.holds(v) for v in values), key
    assert str(Range(0, 1, low_open=True)) == "in (0, 1]" and str(Range(1)) == ">= 1"


def _base_without(tmp_path: Path, section: str, key: str) -> Path:
    data = yaml.safe_load(BASE_CONFIG.read_text())
    del data[section][key]
    path = tmp_path / "whole.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_config_without_base_and_without_a_key_names_both(tmp_path, capsys):
    path = _base_without(tmp_path, "model", "type")
    before = snapshot(tmp_path)
    code, err = cli(train_main, ["--config", path, "--output-dir", tmp_path / "out"], capsys)
    assert code == 2
    assert error_line(err) == (
        f"error: {path}: missing config key 'model.type' (a file without '_base_' must set every key; "
        f"start it with '_base_: {BASE_CONFIG}' to take the defaults of configs/base.yaml)"
    )
    assert snapshot(tmp_path) == before


def test_a_whole_config_without_base_loads_as_base_yaml_does(tmp_path):
    path = tmp_path / "whole.yaml"
    path.write_text(BASE_CONFIG.read_text())  # a run folder's config.yaml sets every key too
    assert (
        load_config(path, ["model.type=gupnet"]).to_dict()
        == load_config(BASE_CONFIG, ["model.type=gupnet"]).to_dict()
    )
    path.write_text(BASE_CONFIG.read_text() + "extra: 1\n")
    with pytest.raises(ConfigError, match=r"whole\.yaml: unknown config key 'extra'"):
        load_config(path)
