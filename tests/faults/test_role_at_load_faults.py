"""Roles checked at every load: infer and export_onnx, like -e and --resume, refuse a depth-input
teacher (by its checkpoint's stored config, or by the config given) with one line naming the file
and the difference; nothing is written (the one loader, lib/models/loading.py)."""

from __future__ import annotations

import cv2
import numpy as np
from faults_common import cli, detector_checkpoint, error_line

from tools.export_onnx import main as onnx_main
from tools.infer import main as infer_main

ROLE = "model.input is 'depth' in the checkpoint, the run needs 'rgb'"


def frames(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((48, 128, 3), np.uint8))
    return folder


def test_infer_refuses_a_teacher_checkpoint_with_an_rgb_config(config, tmp_path, capsys):
    teacher = detector_checkpoint(tmp_path / "teacher.pth", config, ["model.input=depth"])
    argv = [
        "--config",
        config,
        "--checkpoint",
        teacher,
        "--input",
        frames(tmp_path),
        "--intrinsics",
        "100,100,64,24",
    ]
    code, err = cli(infer_main, [*argv, "--out", tmp_path / "out", "--device", "cpu"], capsys)
    assert code == 2
    line = error_line(err)
    assert line.startswith(f"error: {teacher}: not a checkpoint for ") and line.endswith(f": {ROLE}")
    assert not (tmp_path / "out").exists()


def test_infer_refuses_a_teacher_checkpoint_by_its_own_config(config, tmp_path, capsys):
    teacher = detector_checkpoint(tmp_path / "teacher.pth", config, ["model.input=depth"])
    argv = ["--checkpoint", teacher, "--input", frames(tmp_path), "--intrinsics", "100,100,64,24"]
    code, err = cli(infer_main, [*argv, "--out", tmp_path / "out", "--device", "cpu"], capsys)
    assert code == 2
    assert "model.input is 'depth' (a teacher); inference runs RGB networks" in error_line(err)


def test_export_onnx_refuses_a_teacher_checkpoint_with_an_rgb_config(config, tmp_path, capsys):
    teacher = detector_checkpoint(tmp_path / "teacher.pth", config, ["model.input=depth"])
    out = tmp_path / "teacher.onnx"
    code, err = cli(onnx_main, ["--config", config, "--checkpoint", teacher, "--out", out], capsys)
    assert code == 2
    line = error_line(err)
    assert line.startswith(f"error: {teacher}: not a checkpoint for ") and line.endswith(f": {ROLE}")
    assert not out.exists()


def test_export_onnx_refuses_a_checkpoint_of_other_classes(config, tmp_path, capsys):
    other = detector_checkpoint(tmp_path / "three.pth", config, ["dataset.writelist=[Car,Pedestrian]"])
    out = tmp_path / "m.onnx"
    code, err = cli(onnx_main, ["--config", config, "--checkpoint", other, "--out", out], capsys)
    assert code == 2
    assert (
        "dataset.writelist is ['Car', 'Pedestrian'] in the checkpoint, the run needs ['Car']"
        in error_line(err)
    )
    assert not out.exists()
