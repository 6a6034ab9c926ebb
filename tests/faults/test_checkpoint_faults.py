"""Checkpoint faults: a checkpoint of another role (teacher / student, model, classes, task) is
refused by ``-e``, ``--resume`` and ``distill.*_checkpoint`` with a message naming the file and
each difference; unreadable files are one line; no checkpoint file is changed."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from faults_common import assert_kept, cli, error_line, snapshot

from lib.config import load_config
from lib.depth_bins import RpdSettings
from lib.models.build import ModelSettings, build_detector
from lib.models.checkpoint_role import CheckpointRoleError, check_checkpoint_role
from tools.train_val import main as train_main


def save_checkpoint(path: Path, config: Path, overrides: list[str], *, task: str = "detector", weights=False):
    """A training-checkpoint-like file whose stored config is ``config`` + ``overrides``."""
    cfg = load_config(config, overrides)
    state = {}
    if weights:
        model = replace(ModelSettings.from_config(cfg), pretrained=False)
        state = build_detector(model, RpdSettings.from_config(cfg)).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state": state, "task": task, "epoch": 1, "config": cfg.to_dict()}, path)
    return path


def run(config: Path, tmp_path: Path, capsys, *extra) -> tuple[int, str]:
    before = snapshot(tmp_path / "ckpt")
    code, err = cli(train_main, ["--config", config, "--output-dir", tmp_path / "out", *extra], capsys)
    assert_kept(before, tmp_path / "ckpt")
    return code, err


def test_eval_refuses_a_teacher_checkpoint(config, tmp_path, capsys):
    teacher = save_checkpoint(tmp_path / "ckpt" / "teacher.pth", config, ["model.input=depth"])
    code, err = run(config, tmp_path, capsys, "-e", f"tester.checkpoint={teacher}")
    assert code == 2
    assert error_line(err) == (
        f"error: {teacher}: not a checkpoint for evaluation (-e): "
        "model.input is 'depth' in the checkpoint, the run needs 'rgb'"
    )


def test_eval_refuses_a_checkpoint_of_other_classes(config, tmp_path, capsys):
    other = save_checkpoint(tmp_path / "ckpt" / "three.pth", config, ["dataset.writelist=[Car,Pedestrian]"])
    code, err = run(config, tmp_path, capsys, "-e", "--resume", other)
    assert code == 2
    assert "dataset.writelist is ['Car', 'Pedestrian'] in the checkpoint, the run needs ['Car']" in err


def test_eval_refuses_another_model_type(config, tmp_path, capsys):
    did = save_checkpoint(tmp_path / "ckpt" / "did.pth", config, ["model.type=did"])
    code, err = run(config, tmp_path, capsys, "-e", f"tester.checkpoint={did}")
    assert code == 2
    assert "model.type is 'did' in the checkpoint, the run needs 'gupnet'" in error_line(err)


def test_resume_refuses_another_runs_teacher(config, tmp_path, capsys):
    teacher = save_checkpoint(tmp_path / "ckpt" / "last.pth", config, ["model.input=depth"])
    code, err = run(config, tmp_path, capsys, "--resume", teacher)
    assert code == 2
    assert f"error: {teacher}: not a checkpoint for --resume: model.input is 'depth'" in error_line(err)
    assert not list((tmp_path / "out").rglob("*.pth"))


def test_resume_refuses_a_distillation_checkpoint_in_a_detector_run(config, tmp_path, capsys):
    distilled = save_checkpoint(tmp_path / "ckpt" / "kd.pth", config, [], task="distiller")
    code, err = run(config, tmp_path, capsys, "--resume", distilled)
    assert code == 2
    assert "task is 'distiller' in the checkpoint, the run needs 'detector'" in error_line(err)


def test_resume_names_the_network_setting_that_differs(config, tmp_path, capsys):
    wider = save_checkpoint(tmp_path / "ckpt" / "wide.pth", config, ["model.head_conv=32"])
    code, err = run(config, tmp_path, capsys, "--resume", wider)
    assert code == 2
    assert error_line(err) == (
        f"error: {wider}: not a checkpoint for --resume: "
        "model.head_conv is 32 in the checkpoint, the run needs 16"
    )


def test_teacher_slot_refuses_a_student(config, tmp_path, capsys):
    student = save_checkpoint(tmp_path / "ckpt" / "student.pth", config, [])
    code, err = run(config, tmp_path, capsys, f"distill.teacher_checkpoint={student}")
    assert code == 2
    assert error_line(err) == (
        f"error: {student}: not a checkpoint for distill.teacher_checkpoint: "
        "model.input is 'rgb' in the checkpoint, the run needs 'depth'"
    )


def test_student_slot_refuses_a_teacher(config, tmp_path, capsys):
    teacher = save_checkpoint(tmp_path / "ckpt" / "teacher.pth", config, ["model.input=depth"], weights=True)
    swapped = save_checkpoint(tmp_path / "ckpt" / "teacher2.pth", config, ["model.input=depth"])
    argv = [f"distill.teacher_checkpoint={teacher}", f"distill.student_checkpoint={swapped}"]
    code, err = run(config, tmp_path, capsys, *argv)
    assert code == 2
    assert f"error: {swapped}: not a checkpoint for distill.student_checkpoint: model.input is 'depth'" in err


def test_a_distillation_runs_student_evaluates_in_the_student_config(config, tmp_path):
    cfg = load_config(config)
    kd = {"task": "distiller", "config": load_config(config, ["distill.teacher_checkpoint=t.pth"]).to_dict()}
    check_checkpoint_role(kd, cfg, "kd.pth", "eval", run_task="detector")  # its model_state is the student
    with pytest.raises(
        CheckpointRoleError, match="kd.pth: not a checkpoint for --resume: task is 'distiller'"
    ):
        check_checkpoint_role(kd, cfg, "kd.pth", "resume", run_task="detector")


def test_checkpoints_without_a_config_are_not_judged(config):
    check_checkpoint_role({"model_state": {}}, load_config(config), "gupnet.pth", "teacher")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a checkpoint", "not a PyTorch checkpoint (neither a zip archive nor a pickle"),
        (
            "pickle",
            "cannot be read as a weights-only checkpoint (it holds Python objects, not only tensors: "
            "Unsupported global: GLOBAL argparse.Namespace)",
        ),
        ("list", "expected a dict, got list"),
    ],
)
def test_unreadable_checkpoint_is_one_line(config, tmp_path, capsys, content, message):
    path = tmp_path / "ckpt" / "bad.pth"
    path.parent.mkdir()
    if content == "pickle":
        torch.save({"model_state": argparse.Namespace(a=1)}, path)  # needs unsafe unpickling
    elif content == "list":
        torch.save([torch.zeros(1)], path)
    else:
        path.write_bytes(content)
    code, err = run(config, tmp_path, capsys, "-e", f"tester.checkpoint={path}")
    assert code == 2
    assert error_line(err).startswith(f"error: {path}: {message}")
    assert err.strip().splitlines()[-1] == error_line(err)  # the error is the last line: nothing follows
    assert "weights_only" not in err  # no advice to load unsafely, which no flag allows


def test_missing_checkpoint_for_resume_in_an_empty_run_folder(config, tmp_path, capsys):
    (tmp_path / "ckpt").mkdir()
    code, err = run(config, tmp_path, capsys, "--resume")
    assert code == 2
    assert (
        error_line(err)
        == f"error: checkpoint not found: {tmp_path / 'out' / 'tiny' / 'checkpoints' / 'last.pth'}"
    )
