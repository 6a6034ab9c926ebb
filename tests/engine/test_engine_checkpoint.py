"""Atomic checkpoint writes, layouts the tester reads, and a full trainer-state round trip."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from engine_toy import make_trainer

from lib.engine import checkpoint as ckpt_io
from lib.engine.checkpoint import atomic_save, remove_temp_files
from lib.models.checkpoint_io import CheckpointError, detector_state_from_checkpoint, load_checkpoint
from lib.utils.seed import capture_rng_state, restore_rng_state


def test_atomic_save_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "ck" / "last.pth"
    atomic_save({"a": torch.ones(2)}, path)
    atomic_save({"a": torch.zeros(2)}, path)
    assert torch.equal(load_checkpoint(path)["a"], torch.zeros(2))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pth"]
    old_mask = os.umask(0o022)  # the usual umask: a checkpoint is rw-r--r--, not mkstemp's rw-------
    try:
        atomic_save({"a": torch.ones(2)}, path)
    finally:
        os.umask(old_mask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_failing_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    atomic_save({"epoch": 1}, path)
    real_save = torch.save

    def dies_half_way(obj, f, *args, **kwargs):  # the writer is killed after some bytes
        f.write(b"PK\x03\x04 truncated")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(ckpt_io.torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"epoch": 2}, path)
    monkeypatch.setattr(ckpt_io.torch, "save", real_save)
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]


def test_temp_file_of_a_killed_writer_is_cleaned(tmp_path):
    atomic_save({"epoch": 3}, tmp_path / "last.pth")
    stale = tmp_path / ".last.pth.abc123.tmp"  # what a SIGKILLed writer leaves behind
    stale.write_bytes(b"partial")
    assert remove_temp_files(tmp_path) == [stale]
    assert load_checkpoint(tmp_path / "last.pth")["epoch"] == 3


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.pth"):
        load_checkpoint(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match="bad.pth: not a PyTorch checkpoint"):
        load_checkpoint(bad)


def test_detector_state_from_each_layout():
    w = torch.arange(3.0)
    assert detector_state_from_checkpoint({"model_state": {"heads.w": w}}) == {"heads.w": w}
    assert detector_state_from_checkpoint({"model_state": {"module.heads.w": w}}) == {"heads.w": w}
    skd = {"centernet_rgb.heads.w": w, "centernet_depth.heads.w": -w, "adapt_layer8.0.weight": w}
    assert detector_state_from_checkpoint({"model_state": skd}) == {"heads.w": w}
    ours = {"task": "distiller", "model_state": {"heads.w": w}, "model": {"student.heads.w": w}}
    assert detector_state_from_checkpoint(ours) == {"heads.w": w}
    with pytest.raises(CheckpointError, match="unknown checkpoint layout .*keys: state_dict"):
        detector_state_from_checkpoint({"state_dict": {}})


def test_rng_state_round_trip():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_trainer_checkpoint_round_trip_restores_everything(tmp_path):
    trainer = make_trainer(tmp_path, epochs=2)
    trainer.fit()
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pth")
    assert ckpt["epoch"] == 2 and ckpt["iteration"] == 8 and ckpt["config"] == {"experiment": {"name": "toy"}}
    assert ckpt["task"] == "detector" and torch.equal(
        ckpt["model_state"]["0.weight"], ckpt["model"]["net.0.weight"]
    )
    assert (tmp_path / "checkpoints" / "checkpoint_epoch_1.pth").is_file()
    expected_rng = torch.rand(4)  # the stream right after the save

    other = make_trainer(tmp_path / "other", epochs=2, seed=5)
    other.resume(tmp_path / "checkpoints" / "last.pth")
    assert torch.equal(torch.rand(4), expected_rng)
    assert (other.epoch, other.iteration) == (2, 8)
    assert other.htl.state_dict() == trainer.htl.state_dict() and len(other.htl.history) == 3
    assert other.scheduler.last_epoch == 2
    assert other.optimizer.param_groups[0]["lr"] == pytest.approx(trainer.optimizer.param_groups[0]["lr"])
    for a, b in zip(other.task.parameters(), trainer.task.parameters(), strict=True):
        assert torch.equal(a, b)
    state_a, state_b = other.optimizer.state_dict()["state"], trainer.optimizer.state_dict()["state"]
    assert all(torch.equal(state_a[k]["exp_avg"], state_b[k]["exp_avg"]) for k in state_b)
