"""Roles checked at every load: infer, export_onnx and export_student, like -e and --resume, refuse
a depth-input teacher (by its checkpoint's stored config, the config given or an override) with one
line naming the file, the command and the difference; nothing is written (the one loader,
lib/models/loading.py). The role check comes before the weights are read, so most checkpoints here
hold a stored config and one small tensor only; weights of another network are summed up in one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from faults_common import cli, cli_out, error_line, snapshot

from lib.config import load_config
from lib.models.loading import open_checkpoint
from tools.export_onnx import main as onnx_main
from tools.export_student import main as export_main
from tools.infer import main as infer_main

ROLE = "model.input is 'depth' in the checkpoint, the run needs 'rgb'"
INFER = "not a checkpoint for inference (tools/infer.py)"
ONNX = "not a checkpoint for ONNX export (tools/export_onnx.py)"
EXPORT = "not a checkpoint for student export (tools/export_student.py)"


def stored_config_checkpoint(
    path: Path, config: Path, overrides: Sequence[str] = (), *, task: str = "detector", state=None
) -> Path:
    """A training-like checkpoint that stores the config of ``config`` + ``overrides`` and ``state``
    (default: one small tensor): enough for everything that happens before the weights load."""
    cfg = load_config(config, list(overrides))
    state = {"mean_size": torch.ones(1, 3)} if state is None else state
    torch.save({"model_state": state, "task": task, "epoch": 3, "config": cfg.to_dict()}, path)
    return path


def infer_argv(tmp_path: Path, checkpoint: Path, *extra: object) -> list:
    camera = ["--intrinsics", "100,100,64,24", "--device", "cpu", "--no-render", "--no-progress"]
    return [
        "--checkpoint",
        checkpoint,
        "--input",
        frames(tmp_path),
        *camera,
        "--out",
        tmp_path / "out",
        *extra,
    ]


def frames(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((48, 128, 3), np.uint8))
    return folder


def test_infer_refuses_a_teacher_checkpoint_with_an_rgb_config(config, tmp_path, capsys):
    teacher = stored_config_checkpoint(tmp_path / "teacher.pth", config, ["model.input=depth"])
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
    assert line == f"error: {teacher}: {INFER}: {ROLE}"  # the command, not -e
    assert not (tmp_path / "out").exists()


def test_infer_refuses_a_teacher_checkpoint_by_its_own_config(config, tmp_path, capsys):
    teacher = stored_config_checkpoint(tmp_path / "teacher.pth", config, ["model.input=depth"])
    argv = ["--checkpoint", teacher, "--input", frames(tmp_path), "--intrinsics", "100,100,64,24"]
    code, err = cli(infer_main, [*argv, "--out", tmp_path / "out", "--device", "cpu"], capsys)
    assert code == 2
    assert error_line(err) == f"error: {teacher}: {INFER}: {ROLE}"
    assert not (tmp_path / "out").exists()


def test_export_onnx_refuses_a_teacher_checkpoint_with_an_rgb_config(config, tmp_path, capsys):
    teacher = stored_config_checkpoint(tmp_path / "teacher.pth", config, ["model.input=depth"])
    out = tmp_path / "teacher.onnx"
    code, err = cli(onnx_main, ["--config", config, "--checkpoint", teacher, "--out", out], capsys)
    assert code == 2
    line = error_line(err)
    assert line == f"error: {teacher}: {ONNX}: {ROLE}"
    assert not out.exists()


def test_export_onnx_refuses_a_checkpoint_of_other_classes(config, tmp_path, capsys):
    other = stored_config_checkpoint(tmp_path / "three.pth", config, ["dataset.writelist=[Car,Pedestrian]"])
    out = tmp_path / "m.onnx"
    code, err = cli(onnx_main, ["--config", config, "--checkpoint", other, "--out", out], capsys)
    assert code == 2
    assert (
        "dataset.writelist is ['Car', 'Pedestrian'] in the checkpoint, the run needs ['Car']"
        in error_line(err)
    )
    assert not out.exists()


def test_infer_with_another_model_types_config_names_inference(config, tmp_path, capsys):
    did = stored_config_checkpoint(tmp_path / "did.pth", config, ["model.type=did"])
    code, err = cli(infer_main, infer_argv(tmp_path, did, "--config", config), capsys)
    assert code == 2
    assert (
        error_line(err)
        == f"error: {did}: {INFER}: model.type is 'did' in the checkpoint, the run needs 'gupnet'"
    )
    assert not (tmp_path / "out").exists()


def test_a_depth_override_is_blamed_not_the_rgb_checkpoint(config, tmp_path, capsys):
    student = stored_config_checkpoint(tmp_path / "student.pth", config)
    code, err = cli(infer_main, infer_argv(tmp_path, student, "model.input=depth"), capsys)
    assert code == 2
    assert error_line(err) == (
        f"error: the override model.input=depth conflicts with {student} (model.input 'rgb'): "
        "inference (tools/infer.py) runs RGB networks only"
    )
    out = tmp_path / "s.onnx"
    code, err = cli(onnx_main, ["--checkpoint", student, "--out", out, "model.input=depth"], capsys)
    assert code == 2 and "ONNX export (tools/export_onnx.py) runs RGB networks only" in error_line(err)
    assert not (tmp_path / "out").exists() and not out.exists()


def test_a_depth_override_on_a_distillation_runs_student_is_refused(config, tmp_path, capsys):
    """An exported student of a distillation run (task distiller) evaluates as RGB whatever its
    config's model.input says; a model.input=depth override is still refused, naming it."""
    student = stored_config_checkpoint(tmp_path / "mm_student.pth", config, task="distiller")
    code, err = cli(infer_main, infer_argv(tmp_path, student, "model.input=depth"), capsys)
    assert code == 2
    assert error_line(err).startswith("error: the override model.input=depth conflicts with")
    assert not (tmp_path / "out").exists()


def test_a_teacher_config_given_for_an_rgb_file_without_config_is_named(config, tmp_path, capsys):
    plain = tmp_path / "plain.pth"
    torch.save({"model_state": {"mean_size": torch.ones(1, 3)}}, plain)  # e.g. a reference download
    teacher_config = tmp_path / "teacher.yaml"
    teacher_config.write_text(f"_base_: {config}\nmodel:\n  input: depth\n")
    code, err = cli(infer_main, infer_argv(tmp_path, plain, "--config", teacher_config), capsys)
    assert code == 2
    assert error_line(err) == (
        f"error: {teacher_config}: model.input is 'depth' (a teacher's input): "
        "inference (tools/infer.py) runs RGB networks only"
    )


def test_export_student_refuses_a_teacher_and_writes_nothing(config, tmp_path, capsys):
    teacher = stored_config_checkpoint(tmp_path / "teacher.pth", config, ["model.input=depth"])
    before = snapshot(tmp_path)
    code, err = cli(export_main, ["--checkpoint", teacher, "--out", tmp_path / "s.pth"], capsys)
    assert code == 2
    assert error_line(err) == f"error: {teacher}: {EXPORT}: {ROLE}"
    assert snapshot(tmp_path) == before  # no s.pth, nothing changed


def test_export_student_keeps_the_config_so_its_role_is_checked_later(config, tmp_path, capsys):
    """A distillation run's student is exported with the run's config and task: infer needs no
    --config and still refuses it where an RGB network of other classes is needed."""
    state = {"mean_size": torch.ones(1, 3), "depth_branch.0.weight": torch.ones(2)}
    kd = stored_config_checkpoint(
        tmp_path / "kd.pth", config, ["model.input=depth"], task="distiller", state=state
    )
    out = tmp_path / "student.pth"
    code, stdout, err = cli_out(export_main, ["--checkpoint", kd, "--out", out], capsys)
    assert code == 0, err
    assert stdout == f"wrote {out}: 1 tensors of the student detector\n"
    exported, source = open_checkpoint(out).data, open_checkpoint(kd).data
    assert exported["config"] == source["config"] and exported["task"] == "distiller"
    assert exported["epoch"] == 3 and list(exported["model_state"]) == ["mean_size"]
    other = ["--config", config, "dataset.writelist=[Car,Pedestrian]"]
    code, err = cli(infer_main, infer_argv(tmp_path, out, *other), capsys)
    assert code == 2
    assert error_line(err) == (
        f"error: {out}: {INFER}: dataset.writelist is ['Car'] in the checkpoint, "
        "the run needs ['Car', 'Pedestrian']"
    )


def test_weights_of_another_network_are_summed_up_in_one_line(config, tmp_path, capsys):
    """A backbone's ImageNet state_dict given as the detector: one line, the counts and three
    examples each way, no note about BatchNorm counters."""
    foreign = tmp_path / "resnet18.pth"
    state = {f"layer{i}.conv.weight": torch.ones(1) for i in range(4)} | {
        "bn1.num_batches_tracked": torch.tensor(1)
    }
    torch.save(state, foreign)
    code, err = cli(infer_main, infer_argv(tmp_path, foreign, "--config", config), capsys)
    assert code == 2
    line = error_line(err)
    assert len(err.strip().splitlines()) == 1 and "BatchNorm" not in err
    missing = "mean_size, backbone.conv1.weight, backbone.bn1.weight, ..."
    unknown = "layer0.conv.weight, layer1.conv.weight, layer2.conv.weight, ..."
    assert line.startswith(f"error: {foreign} is not a checkpoint of this detector: all ")
    assert line.endswith(
        f"weights are missing (e.g. {missing}); the file holds 5 weights it has not (e.g. {unknown})"
    )
    assert not (tmp_path / "out").exists()
