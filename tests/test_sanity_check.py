"""tools/sanity_check.py: the recall it judges by, and its pass / fail / error exits at a toy size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lib.kitti_io import LabelTable, Object3d, parse_label_text

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tools"))

import sanity_check  # noqa: E402

TOY = ["trainer.max_epoch=1", "trainer.max_iters_per_epoch=1", "dataset.resolution=[128,64]"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def car(z: float, *, score: float | None = None, x: float = 0.0) -> Object3d:
    """A Moderate-sized car along the optical axis (length 4 m along z), box 2D 100 px high."""
    return Object3d(
        cls_type="Car",
        truncation=0.0,
        occlusion=0,
        alpha=0.0,
        box2d=np.array([100.0, 100.0, 200.0, 200.0]),
        h=1.5,
        w=1.6,
        l=4.0,
        pos=np.array([x, 1.65, z]),
        ry=np.pi / 2,
        score=score,
    )


def table(objects: list[Object3d], *, scored: bool) -> LabelTable:
    text = "".join(o.to_line(score_decimals=6) + "\n" for o in objects)
    return parse_label_text(text, "<test>", with_score=scored)


def test_recall_counts_cars_recovered_at_3d_iou_07():
    from lib.eval.error_analysis import analyse_errors

    # Frame 0: an exact copy (3D IoU 1). Frame 1: 1 m too far along the car's 4 m length, so the
    # 3D IoU is 3 / 5 = 0.6 < 0.7 (same 2D box: matched, not recovered). Frame 2: 0.4 m too
    # far, IoU 3.6 / 4.4 = 0.82. Recall = 2 / 3.
    gt = [table([car(z)], scored=False) for z in (20.0, 30.0, 25.0)]
    det = [
        table([car(20.0, score=0.9)], scored=True),
        table([car(31.0, score=0.9)], scored=True),
        table([car(25.4, score=0.1)], scored=True),
    ]
    report = analyse_errors(gt, det, classes=["Car"], difficulty="moderate")
    recall, num_gt = sanity_check.moderate_car_recall(report)
    assert num_gt == 3
    assert recall == pytest.approx(2 / 3)


def test_recall_without_moderate_cars_is_a_user_error():
    from lib.eval.error_analysis import analyse_errors

    report = analyse_errors([table([], scored=False)], [table([], scored=True)], classes=["Car"])
    with pytest.raises(sanity_check.SanityError, match="no moderate Car"):
        sanity_check.moderate_car_recall(report)


def sanity(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "tools/sanity_check.py", "--config", "configs/sanity/did_teacher.yaml", *args]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=600)


def test_cli_fails_below_the_bar_and_passes_at_it(tmp_path):
    out = ["--frames", "2", "--output-dir", str(tmp_path)]
    strict = sanity(*out, "--min-recall", "1.0", *TOY)  # one step from scratch recovers nothing
    assert strict.returncode == 1, strict.stdout[-2000:] + strict.stderr[-2000:]
    summary = json.loads((tmp_path / "did_teacher" / "sanity.json").read_text())
    assert summary["passed"] is False and summary["recall_3d@0.7"] < 1.0
    assert summary["moderate_cars"] == summary["error_analysis"]["classes"]["Car"]["all"]["num_gt"] > 0
    assert "FAIL:" in strict.stdout and "Error analysis" in strict.stdout
    again = sanity(*out, "--min-recall", "0.0", *TOY)  # the earlier run is not replaced unasked
    assert again.returncode == 2 and "--overwrite" in again.stderr
    lenient = sanity(*out, "--overwrite", "--min-recall", "0.0", *TOY)  # reuses the synthetic frames
    assert lenient.returncode == 0, lenient.stdout[-2000:] + lenient.stderr[-2000:]
    assert json.loads((tmp_path / "did_teacher" / "sanity.json").read_text())["passed"] is True
    assert len(list(tmp_path.glob("data-*"))) == 1


def test_cli_names_a_folder_that_is_not_a_kitti_tree(tmp_path):
    frame_list = tmp_path / "frames.txt"
    frame_list.write_text("000000\n")
    result = sanity("--kitti-root", str(tmp_path / "nowhere"), "--frame-list", str(frame_list))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "nowhere: no training/label_2" in result.stderr


def test_synthetic_frames_are_published_whole_and_the_second_copy_is_dropped(tmp_path, monkeypatch):
    """Checks started at once by separate commands share the set: each writes its own copy and
    renames it into place when complete; when another's set appeared meanwhile, that one is kept."""
    depth_runs = []
    monkeypatch.setattr(sanity_check, "run_command", lambda cmd: depth_runs.append(cmd))  # no depth maps
    root = sanity_check.synthetic_frames(tmp_path, frames=2, seed=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [root.name]  # no partial folder left
    assert (root / "ImageSets" / "sanity.txt").read_text() == "000000\n000001\n"
    assert len(list((root / "training" / "image_2").iterdir())) == 2
    assert sanity_check.synthetic_frames(tmp_path, frames=2, seed=0) == root and len(depth_runs) == 1

    def other_check_finishes_first(cmd: list[str]) -> None:
        other = tmp_path / "b" / root.name / "ImageSets"
        other.mkdir(parents=True)
        (other / "sanity.txt").write_text("the other check's\n")

    monkeypatch.setattr(sanity_check, "run_command", other_check_finishes_first)
    assert sanity_check.synthetic_frames(tmp_path / "b", frames=2, seed=0) == tmp_path / "b" / root.name
    assert (tmp_path / "b" / root.name / "ImageSets" / "sanity.txt").read_text() == "the other check's\n"
    assert [p.name for p in (tmp_path / "b").iterdir()] == [root.name]


def test_jobs_run_checks_side_by_side_and_fail_if_one_fails(tmp_path, monkeypatch, kitti_sample):
    """--jobs 2 with two configs and a fake train_val: the two trainings must overlap (each waits
    at a barrier for the other), each gets one of two cores and its own log, which ends with its
    error table and verdict. The teacher's fake results are the ground truth itself (recall 1),
    the student's are empty (recall 0): PASS and FAIL, and the exit status is 1. The frames are
    the three real KITTI ones."""
    import threading

    barrier = threading.Barrier(2, timeout=20)
    calls = []

    def fake_train_val(cmd: list[str], *, log: Path | None = None, threads: int | None = None) -> float:
        if "-e" not in cmd:
            barrier.wait()  # BrokenBarrierError unless the other check trains meanwhile
            calls.append((Path(cmd[cmd.index("--config") + 1]).stem, log, threads))
            return 1.5
        overrides = dict(a.split("=", 1) for a in cmd if "=" in a)
        root, name = Path(overrides["dataset.root_dir"]), overrides["experiment.name"]
        data = tmp_path / name / "results" / sanity_check.SPLIT / "data"
        data.mkdir(parents=True)
        for label in sorted((root / "training" / "label_2").iterdir()):
            lines = label.read_text().splitlines() if name == "did_teacher" else []
            (data / label.name).write_text("".join(f"{line} 0.9\n" for line in lines))
        return 0.5

    monkeypatch.setattr(sanity_check, "run_command", fake_train_val)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    (kitti_sample / "ImageSets" / f"{sanity_check.SPLIT}.txt").write_text("000000\n000001\n000002\n")
    monkeypatch.setattr(sanity_check, "synthetic_frames", lambda out_dir, frames, seed: kitti_sample)
    configs = ["--config", "configs/sanity/did_teacher.yaml", "--config", "configs/sanity/did_student.yaml"]
    assert sanity_check.main([*configs, "--jobs", "2", "--output-dir", str(tmp_path)]) == 1
    assert sorted(calls) == [(n, tmp_path / f"{n}.log", 1) for n in ("did_student", "did_teacher")]
    teacher = json.loads((tmp_path / "did_teacher" / "sanity.json").read_text())
    student = json.loads((tmp_path / "did_student" / "sanity.json").read_text())
    assert (teacher["recall_3d@0.7"], teacher["passed"]) == (1.0, True)
    assert (student["recall_3d@0.7"], student["passed"]) == (0.0, False)
    assert teacher["cpu_s"] == 2.0 and teacher["moderate_cars"] == student["moderate_cars"] > 0
    assert (tmp_path / "did_teacher.log").read_text().splitlines()[-1].startswith("PASS: did_teacher: 100.0%")
    assert (tmp_path / "did_student.log").read_text().splitlines()[-1].startswith("FAIL: did_student: 0.0%")


def test_two_configs_of_one_name_are_refused(tmp_path):
    result = sanity("--config", "configs/sanity/did_teacher.yaml", "--output-dir", str(tmp_path / "x"))
    assert result.returncode == 2 and "two configs named 'did_teacher'" in result.stderr
