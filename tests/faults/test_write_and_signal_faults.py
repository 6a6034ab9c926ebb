"""Write faults (full disk, a folder that is a file), interrupts, and the error path itself:
a failed write says so in one line and leaves the previous file intact; Ctrl-C exits 130;
internal errors keep their traceback; fp16 autocast on the CPU warns."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from pathlib import Path

import pytest
import torch
from faults_common import assert_kept, cli, error_line, snapshot

from lib.engine import checkpoint
from lib.engine.checkpoint import CheckpointWriteError, atomic_save
from lib.engine.trainer import NonFiniteLossError, Trainer, resolve_amp_dtype
from lib.errors import run_cli
from lib.models.checkpoint_io import load_checkpoint
from tools import make_depth_maps
from tools.check_dataset import main as check_main
from tools.export_student import main as export_main
from tools.train_val import main as train_main

TORCH_DISK_FULL = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"


def full_disk_save(obj, f) -> None:
    """torch.save on a full disk: part of the data written, then torch's zip writer fails."""
    f.write(b"PK\x03\x04 partial")
    raise RuntimeError(TORCH_DISK_FULL)


def previous(tmp_path: Path) -> Path:
    path = tmp_path / "last.pth"
    atomic_save({"epoch": 1, "w": torch.ones(3)}, path)
    return path


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = previous(tmp_path)
    before = snapshot(tmp_path)
    monkeypatch.setattr(checkpoint.torch, "save", full_disk_save)
    with pytest.raises(CheckpointWriteError) as err:
        atomic_save({"epoch": 2, "w": torch.zeros(3)}, path)
    assert str(err.value) == (
        f"{path}: not written (the write failed; is the disk full?); the previous file is unchanged"
    )
    assert snapshot(tmp_path) == before  # no temporary file left either
    assert load_checkpoint(path)["epoch"] == 1


def test_enospc_from_fsync_names_the_reason(tmp_path, monkeypatch):
    path = previous(tmp_path)
    before = snapshot(tmp_path)

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.os, "fsync", no_space)
    with pytest.raises(CheckpointWriteError, match="not written \\(No space left on device\\); the previous"):
        atomic_save({"epoch": 2}, path)
    assert snapshot(tmp_path) == before


@pytest.fixture
def tiny_fs(tmp_path):
    """A real 1 MiB tmpfs (needs root and mount); skipped where it cannot be mounted."""
    mnt = tmp_path / "tiny_fs"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_real_full_disk_keeps_the_previous_checkpoint(tiny_fs):
    path = tiny_fs / "last.pth"
    atomic_save({"epoch": 1, "w": torch.ones(1000)}, path)
    before = snapshot(tiny_fs)
    with pytest.raises(CheckpointWriteError, match="not written .*; the previous file is unchanged"):
        atomic_save({"epoch": 2, "w": torch.zeros(1_000_000)}, path)  # 4 MB on a 1 MiB disk
    assert snapshot(tiny_fs) == before
    assert load_checkpoint(path)["epoch"] == 1


def test_export_onto_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    ckpt = tmp_path / "run.pth"
    torch.save({"model_state": {"a": torch.ones(2)}, "epoch": 3}, ckpt)
    out = previous(tmp_path)
    before = snapshot(tmp_path)
    monkeypatch.setattr(checkpoint.torch, "save", full_disk_save)
    code, err = cli(export_main, ["--checkpoint", ckpt, "--out", out, "--overwrite"], capsys)
    assert code == 2
    assert (
        error_line(err)
        == f"error: {out}: not written (the write failed; is the disk full?); the previous file is unchanged"
    )
    assert snapshot(tmp_path) == before


def test_checkpoint_into_a_folder_that_is_a_file(tmp_path):
    (tmp_path / "checkpoints").write_text("a file")
    with pytest.raises(CheckpointWriteError, match=r"checkpoints/last.pth: cannot write here \("):
        atomic_save({"epoch": 1}, tmp_path / "checkpoints" / "last.pth")


def test_training_whose_checkpoint_cannot_be_written(config, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(checkpoint.torch, "save", full_disk_save)
    code, err = cli(train_main, ["--config", config, "--output-dir", tmp_path / "out"], capsys)
    assert code == 2
    last = tmp_path / "out" / "tiny" / "checkpoints" / "last.pth"
    assert (
        error_line(err)
        == f"error: {last}: not written (the write failed; is the disk full?); the previous file is unchanged"
    )
    assert not last.exists()


def test_unwritable_depth_map_is_one_line_and_keeps_the_others(data, monkeypatch, capsys):
    maps = data / "training" / "depth_dense"
    before = snapshot(maps)
    monkeypatch.setattr("cv2.imwrite", lambda *args: False)  # what OpenCV returns on a failed write
    code, err = cli(make_depth_maps.main, ["--data-dir", data, "--overwrite"], capsys)
    assert code == 2
    assert error_line(err).startswith("error: could not write depth map ")
    assert_kept(before, maps)
    assert not list(maps.glob("*.partial.png"))


def test_ctrl_c_exits_130_without_a_traceback(data, monkeypatch, capsys):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("lib.datasets.dataset_check.check_dataset", interrupt)
    code, err = cli(check_main, ["--data-dir", data], capsys)
    assert code == 130 and err == "interrupted\n"


def test_ctrl_c_while_making_depth_maps_keeps_the_finished_maps(data, monkeypatch, capsys):
    maps = data / "training" / "depth_dense"
    for p in list(maps.iterdir())[:4]:
        p.unlink()
    before = snapshot(maps)
    real = make_depth_maps.build_depth_map
    calls = []

    def interrupted_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(make_depth_maps, "build_depth_map", interrupted_on_the_third)
    code, err = cli(make_depth_maps.main, ["--data-dir", data], capsys)
    assert code == 130 and err.endswith("interrupted\n")
    assert_kept(before, maps)
    assert len(list(maps.glob("*.png"))) == 6 + 2 and not list(maps.glob("*.partial.png"))


def test_internal_errors_keep_their_traceback(config, tmp_path, monkeypatch):
    def bug(self):
        raise ValueError("internal shape check: (2, 3) vs (2, 4)")

    monkeypatch.setattr(Trainer, "fit", bug)
    with pytest.raises(ValueError, match="internal shape check"):
        run_cli(train_main, ["--config", str(config), "--output-dir", str(tmp_path / "out")])


def test_diverged_training_is_one_line(config, tmp_path, monkeypatch, capsys):
    def diverge(self):
        raise NonFiniteLossError("loss 'depth' is nan at epoch 1, batch 0 (frames [3, 5])")

    monkeypatch.setattr(Trainer, "fit", diverge)
    code, err = cli(train_main, ["--config", config, "--output-dir", tmp_path / "out"], capsys)
    assert code == 2
    assert error_line(err) == "error: loss 'depth' is nan at epoch 1, batch 0 (frames [3, 5])"


def test_debug_variable_shows_the_traceback_of_user_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("MONOMMKD_DEBUG", "1")
    with pytest.raises(Exception, match="dataset folder not found"):
        run_cli(check_main, ["--data-dir", str(tmp_path / "none")])


def test_fp16_autocast_on_the_cpu_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="lib.engine.trainer"):
        assert resolve_amp_dtype("fp16", torch.device("cpu")) == torch.float16
        assert resolve_amp_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert [r.getMessage() for r in caplog.records] == [
        "trainer.amp=fp16 on the CPU: float16 autocast is emulated there and ~20x slower than "
        "float32; use trainer.amp=bf16 (or none) on the CPU"
    ]
