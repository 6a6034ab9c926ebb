"""Outputs on inputs: ``--force`` / ``--overwrite`` replace an earlier output, never an input of the
same command, by any name (``..``, a link), nor a folder that holds one or lies inside one
(lib/utils/outputs.py); each refusal names the flag and the input, and nothing is written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from faults_common import cli, error_line, snapshot

from lib.utils.outputs import output_conflict
from tools.evaluate import main as evaluate_main
from tools.export_onnx import main as onnx_main
from tools.export_student import main as export_main
from tools.infer import main as infer_main
from tools.make_depth_maps import main as depth_main
from tools.make_submission import main as submit_main
from tools.sanity_check import main as sanity_main
from tools.train_val import main as train_main
from tools.visualize import main as visualize_main

TAIL = (
    "writing there could replace what the command reads (no flag writes over an input): choose another path"
)


def refusal(out: Path | str, flag: str, how: str, label: str, source: Path) -> str:
    return f"error: {out}: {flag} {how} the input {label} ({source.resolve()}); {TAIL}"


def test_the_three_kinds_of_conflict(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    image = folder / "a.png"
    image.write_bytes(b"png")
    (tmp_path / "link.png").symlink_to(image)
    os.link(image, tmp_path / "hard.png")
    inputs = {"--input": image}
    assert output_conflict(tmp_path / "images" / ".." / "images" / "a.png", inputs) == (
        "is",
        "--input",
        image,
    )
    assert output_conflict(tmp_path / "link.png", inputs)[0] == "is"
    assert output_conflict(tmp_path / "hard.png", inputs)[0] == "is"
    assert output_conflict(folder / "out" / "x.txt", {"--input": folder})[0] == "inside"
    assert output_conflict(tmp_path, inputs)[0] == "holds"
    assert output_conflict(tmp_path / "other.png", inputs) is None
    assert output_conflict(tmp_path / "images2", {"--input": folder}) is None  # a prefix is not a parent


def test_infer_video_out_over_the_input_video_even_with_force(tmp_path, capsys):
    video = tmp_path / "drive.mp4"
    video.write_bytes(b"the user's video")
    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(b"weights")
    argv = ["--checkpoint", ckpt, "--input", video, "--intrinsics", "700,700,600,180", "--force"]
    code, err = cli(infer_main, [*argv, "--video-out", tmp_path / "." / "drive.mp4"], capsys)
    assert code == 2
    assert error_line(err) == refusal(tmp_path / "drive.mp4", "--video-out", "is", "--input", video)
    assert video.read_bytes() == b"the user's video"


def test_infer_out_inside_the_input_folder(tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "0001.png").write_bytes(b"png")
    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(b"weights")
    before = snapshot(tmp_path)
    argv = ["--checkpoint", ckpt, "--input", frames, "--intrinsics", "700,700,600,180", "--force"]
    code, err = cli(infer_main, [*argv, "--out", frames / "predictions"], capsys)
    assert code == 2
    assert error_line(err) == refusal(frames / "predictions", "--out", "lies inside", "--input", frames)
    code, err = cli(infer_main, [*argv, "--out", tmp_path], capsys)  # the folder that holds them
    assert code == 2 and "--out holds the input --input" in error_line(err)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("target", ["checkpoint", "config"])
def test_export_onnx_over_its_checkpoint_or_config_even_with_force(tmp_path, capsys, target):
    ckpt, config = tmp_path / "best.pth", tmp_path / "student.yaml"
    ckpt.write_bytes(b"weights")
    config.write_text("_base_: base.yaml\n")
    out = ckpt if target == "checkpoint" else config
    before = snapshot(tmp_path)
    argv = ["--checkpoint", ckpt, "--config", config, "--out", out, "--force"]
    code, err = cli(onnx_main, argv, capsys)
    assert code == 2
    assert error_line(err) == refusal(out, "--out", "is", f"--{target}", out)
    assert snapshot(tmp_path) == before


def test_export_student_over_its_checkpoint_by_another_name_with_overwrite(tmp_path, capsys):
    ckpt = tmp_path / "run" / "last.pth"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"weights")
    out = tmp_path / "run" / ".." / "run" / "last.pth"
    code, err = cli(export_main, ["--checkpoint", ckpt, "--out", out, "--overwrite"], capsys)
    assert code == 2
    assert error_line(err) == refusal(out, "--out", "is", "--checkpoint", ckpt)
    assert ckpt.read_bytes() == b"weights"


def results_folder(tmp_path: Path) -> tuple[Path, Path]:
    """Flat results of frames 0 and 1 (no detections) and their split."""
    results = tmp_path / "results"
    results.mkdir()
    for i in range(2):
        (results / f"{i:06d}.txt").write_text("")
    split = tmp_path / "split.txt"
    split.write_text("000000\n000001\n")
    return results, split


def test_submission_zip_never_lands_in_the_results_it_zips(tmp_path, capsys):
    results, split = results_folder(tmp_path)
    before = snapshot(tmp_path)
    for out, how, label, source in (
        (results / "submission.zip", "lies inside", "RESULTS_DIR", results),
        (results / "000001.txt", "lies inside", "RESULTS_DIR", results),
        (split, "is", "--split", split),
    ):
        code, err = cli(submit_main, [results, "--split", split, "--out", out, "--overwrite"], capsys)
        assert code == 2
        assert error_line(err) == refusal(out, "--out", how, label, source)
    assert snapshot(tmp_path) == before


def test_submission_default_zip_goes_beside_the_result_files(tmp_path, capsys):
    results, split = results_folder(tmp_path)
    code, err = cli(submit_main, [results, "--split", split], capsys)
    assert code == 0, err
    assert (tmp_path / "submission.zip").is_file() and not (results / "submission.zip").exists()


def test_evaluate_report_never_lands_in_the_results_it_scores(tmp_path, capsys):
    """--report-dir / --json may not be, lie inside or hold the result folder, with --overwrite
    and with an earlier report already there (tools/evaluate.py)."""
    results, split = results_folder(tmp_path)
    labels = tmp_path / "label_2"
    labels.mkdir()
    for i in range(2):
        (labels / f"{i:06d}.txt").write_text("")
    argv = ["--label-dir", labels, "--result-dir", results, "--split", split, "--overwrite"]
    for report_dir in (results, results / "report"):
        (report_dir / "report.md").parent.mkdir(exist_ok=True)
        (report_dir / "report.md").write_text("an earlier report")
    before = snapshot(tmp_path)
    for flag, out, how, label, source in (
        ("--report-dir", results, "is", "--result-dir", results),
        ("--report-dir", results / "report", "lies inside", "--result-dir", results),
        ("--report-dir", tmp_path, "holds", "--result-dir", results),
        ("--report-dir", labels, "is", "--label-dir", labels),
        ("--json", results / "ap.json", "lies inside", "--result-dir", results),
        ("--json", split, "is", "--split", split),
    ):
        code, err = cli(evaluate_main, [*argv, flag, out], capsys)
        assert code == 2
        assert error_line(err) == refusal(out, flag, how, label, source)
    assert snapshot(tmp_path) == before  # a report beside the results: tests/eval/test_evaluate_cli.py


def test_depth_maps_never_overwrite_the_images(data, capsys):
    images = data / "training" / "image_2"
    before = snapshot(images)
    for depth_dir, how, label, source in (
        ("image_2", "is", "training/image_2", images),
        (".", "holds", "training/image_2", images),
    ):
        code, err = cli(depth_main, ["--data-dir", data, "--depth-dir", depth_dir, "--overwrite"], capsys)
        assert code == 2
        assert error_line(err) == refusal(data / "training" / depth_dir, "--depth-dir", how, label, source)
    assert snapshot(images) == before


def test_visualize_out_dir_inside_the_dataset(data, capsys):
    out_dir = data / "training" / "image_2"
    before = snapshot(data)
    code, err = cli(visualize_main, ["--data-dir", data, "--split", "val", "--out-dir", out_dir], capsys)
    assert code == 2
    assert error_line(err) == refusal(out_dir, "--out-dir", "lies inside", "--data-dir", data)
    assert snapshot(data) == before


def test_run_folder_that_is_the_dataset_is_refused_even_with_overwrite(config, data, capsys):
    before = snapshot(data)
    argv = ["--config", config, "--output-dir", data.parent, f"experiment.name={data.name}", "--overwrite"]
    code, err = cli(train_main, argv, capsys)
    assert code == 2
    flag = "the run folder (experiment.output_dir/experiment.name)"
    assert error_line(err) == refusal(data, flag, "is", "dataset.root_dir", data)
    assert snapshot(data) == before and not list(data.parent.glob("*.old-*"))


def test_overwrite_may_not_move_away_the_teacher_the_run_distils_from(config, tmp_path, capsys):
    teacher = tmp_path / "out" / "tiny" / "checkpoints" / "last.pth"
    teacher.parent.mkdir(parents=True)
    teacher.write_bytes(b"teacher weights")
    argv = ["--config", config, "--output-dir", tmp_path / "out", "--overwrite"]
    code, err = cli(train_main, [*argv, f"distill.teacher_checkpoint={teacher}"], capsys)
    assert code == 2
    flag = "the run folder (experiment.output_dir/experiment.name)"
    assert error_line(err) == refusal(
        tmp_path / "out" / "tiny", flag, "holds", "distill.teacher_checkpoint", teacher
    )
    assert teacher.read_bytes() == b"teacher weights" and not list((tmp_path / "out").glob("*.old-*"))


def test_sanity_output_dir_inside_the_kitti_tree(data, tmp_path, capsys):
    frames = tmp_path / "frames.txt"
    frames.write_text("000000\n")
    before = snapshot(data)
    argv = ["--config", "configs/sanity/gupnet_student.yaml", "--kitti-root", data, "--frame-list", frames]
    code, err = cli(sanity_main, [*argv, "--output-dir", data / "sanity"], capsys)
    assert code == 2
    assert error_line(err) == refusal(
        (data / "sanity").resolve(), "--output-dir", "lies inside", "--kitti-root", data
    )
    assert snapshot(data) == before
