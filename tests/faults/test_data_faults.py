"""Data faults: what the files mean (sizes, duplicate or empty splits, depth maps that do not
fit, empty or implausible scans, boxes outside the image) is checked the same way in training,
evaluation, depth-map generation and tools/check_dataset.py; errors name ``file:line``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from faults_common import assert_kept, cli, cli_out, error_line, snapshot

from lib.kitti_io import write_depth_map
from tools.check_dataset import main as check_main
from tools.evaluate import main as evaluate_main
from tools.make_depth_maps import main as depth_main
from tools.train_val import main as train_main


def set_label_column(path: Path, column: int, value: str, line: int = 0) -> None:
    """Replace one column (0-based, class name = 0) of one label line."""
    lines = path.read_text().splitlines()
    parts = lines[line].split()
    parts[column] = value
    lines[line] = " ".join(parts)
    path.write_text("\n".join(lines) + "\n")


def label(data: Path, frame: int) -> Path:
    return data / "training" / "label_2" / f"{frame:06d}.txt"


def evaluate_argv(data: Path, results: Path, split: str = "val") -> list:
    return [
        "--label-dir",
        data / "training" / "label_2",
        "--result-dir",
        results,
        "--split",
        data / "ImageSets" / f"{split}.txt",
    ]


def make_results(data: Path, tmp_path: Path, frames=(8, 9)) -> Path:
    """Result files = the labels with a score column (a perfect detector)."""
    results = tmp_path / "results"
    results.mkdir()
    for frame in frames:
        lines = label(data, frame).read_text().splitlines()
        (results / f"{frame:06d}.txt").write_text("".join(f"{line} 0.9\n" for line in lines))
    return results


# ------------------------------------------------------------------ splits
def test_duplicate_split_id_stops_training(config, data, tmp_path, capsys):
    (data / "ImageSets" / "train.txt").write_text("000000\n000001\n000000\n")
    before = snapshot(data)
    code, err = cli(train_main, ["--config", config, "--output-dir", tmp_path / "out"], capsys)
    assert code == 2
    assert "train.txt:3: frame 000000 is listed twice (first on line 1)" in error_line(err)
    assert_kept(before, data)
    assert not list((tmp_path / "out").rglob("*.pth"))


def test_duplicate_split_id_stops_evaluation(data, tmp_path, capsys):
    (data / "ImageSets" / "val.txt").write_text("000008\n000009\n000008\n")
    code, err = cli(evaluate_main, evaluate_argv(data, make_results(data, tmp_path)), capsys)
    assert code == 2
    assert "val.txt:3: frame 000008 is listed twice" in error_line(err)


def test_duplicate_split_id_stops_depth_maps(data, capsys):
    (data / "ImageSets" / "trainval.txt").write_text("000001\n000001\n")
    before = snapshot(data)
    code, err = cli(depth_main, ["--data-dir", data, "--overwrite"], capsys)
    assert code == 2
    assert "trainval.txt:2: frame 000001 is listed twice" in error_line(err)
    assert_kept(before, data)


def test_empty_split_stops_training(config, data, tmp_path, capsys):
    (data / "ImageSets" / "train.txt").write_text("\n")
    code, err = cli(train_main, ["--config", config, "--output-dir", tmp_path / "out"], capsys)
    assert code == 2
    assert error_line(err) == f"error: {data / 'ImageSets' / 'train.txt'}: empty split file (no frame ids)"


def test_empty_split_stops_evaluation(data, tmp_path, capsys):
    (data / "ImageSets" / "val.txt").write_text("")
    code, err = cli(evaluate_main, evaluate_argv(data, make_results(data, tmp_path)), capsys)
    assert code == 2
    assert "val.txt: empty split file" in error_line(err)


# ------------------------------------------------------------------ labels
def test_negative_width_stops_training_before_the_first_step(config, data, tmp_path, capsys):
    set_label_column(label(data, 3), 9, "-1.60")  # w
    code, err = cli(train_main, ["--config", config, "--output-dir", tmp_path / "out"], capsys)
    assert code == 2
    assert f"{label(data, 3)}:1: " in err and "non-positive 3D size" in err
    assert "the dataset check found problems" in error_line(err)
    assert not list((tmp_path / "out").rglob("*.pth"))


def test_negative_width_stops_evaluation(data, tmp_path, capsys):
    results = make_results(data, tmp_path)
    set_label_column(label(data, 9), 9, "-1.60")
    code, err = cli(evaluate_main, evaluate_argv(data, results), capsys)
    assert code == 2
    assert error_line(err).startswith(f"error: {label(data, 9)}:1: ")
    assert "non-positive 3D size h w l" in error_line(err)


def test_detections_with_negative_sizes_are_still_scored(data, tmp_path, capsys):
    results = make_results(data, tmp_path)
    set_label_column(results / "000008.txt", 9, "-1.60")  # a young model's output: scored, not refused
    code, out, err = cli_out(evaluate_main, evaluate_argv(data, results), capsys)
    assert code == 0, err
    assert "Car" in out


def test_inverted_2d_box_is_reported(data, capsys):
    set_label_column(label(data, 2), 6, "0.0")  # x2 = 0 < x1
    code, out, _ = cli_out(check_main, ["--data-dir", data], capsys)
    assert code == 1
    assert f"{label(data, 2)}:1: " in out and "x2 < x1 or y2 < y1" in out


def test_all_problems_are_reported_at_once(data, capsys):
    set_label_column(label(data, 1), 8, "0")  # h = 0
    (data / "training" / "calib" / "000005.txt").unlink()
    label(data, 9).write_text("Car 0 0 0 1 2 3\n")  # 7 columns
    code, out, _ = cli_out(check_main, ["--data-dir", data, "--splits", "train", "val"], capsys)
    assert code == 1
    assert "10 frames checked: 3 error(s)" in out
    assert "000001.txt:1: " in out and "has a non-positive 3D size h w l" in out
    assert "calib file not found" in out and "000005.txt" in out
    assert "000009.txt:1: expected 15 columns, got 7" in out


def test_box_outside_the_image_is_a_counted_warning(data, capsys):
    set_label_column(label(data, 4), 6, "400.0")  # x2 far beyond the 128 px image
    set_label_column(label(data, 6), 4, "-50.0")  # x1 far left
    code, out, _ = cli_out(check_main, ["--data-dir", data], capsys)
    assert code == 0
    assert "warning: 2 2D boxes outside their image by more than 1 px" in out


def test_missing_image_is_reported(data, capsys):
    (data / "training" / "image_2" / "000007.png").unlink()
    code, out, _ = cli_out(check_main, ["--data-dir", data, "--splits", "train"], capsys)
    assert code == 1
    assert f"image not found: {data / 'training' / 'image_2' / '000007.png'}" in out


def test_missing_dataset_folder(tmp_path, capsys):
    code, err = cli(check_main, ["--data-dir", tmp_path / "nowhere"], capsys)
    assert code == 2
    assert error_line(err) == f"error: {tmp_path / 'nowhere'}: dataset folder not found"


# ------------------------------------------------------------------ depth maps
def depth_path(data: Path, frame: int) -> Path:
    return data / "training" / "depth_dense" / f"{frame:06d}.png"


def test_depth_map_narrower_than_its_image_is_refused(data, capsys):
    write_depth_map(depth_path(data, 3), np.full((48, 60), 10.0))  # image 128x48
    code, out, _ = cli_out(check_main, ["--data-dir", data, "--depth"], capsys)
    assert code == 1
    assert f"{depth_path(data, 3)}: depth map 60x48 does not fit its image 128x48" in out


def test_depth_map_larger_than_its_image_is_refused(data, capsys):
    write_depth_map(depth_path(data, 8), np.full((60, 128), 10.0))
    code, out, _ = cli_out(check_main, ["--data-dir", data, "--depth", "--splits", "val"], capsys)
    assert code == 1
    assert "depth map 128x60 is larger than its image 128x48" in out


def test_documented_top_crop_depth_map_is_accepted(data, capsys):
    write_depth_map(depth_path(data, 3), np.full((40, 120), 10.0))  # rows cut on top, centred
    code, out, _ = cli_out(check_main, ["--data-dir", data, "--depth"], capsys)
    assert code == 0 and "0 error(s), 0 warning(s)" in out


def test_blank_depth_map_is_a_counted_warning(data, capsys):
    write_depth_map(depth_path(data, 0), np.zeros((48, 128)))
    write_depth_map(depth_path(data, 1), np.zeros((48, 128)))
    code, out, _ = cli_out(check_main, ["--data-dir", data, "--depth"], capsys)
    assert code == 0
    assert "warning: 2 depth maps without any depth (blank)" in out


def test_teacher_training_stops_on_a_depth_map_that_does_not_fit(config, data, tmp_path, capsys):
    write_depth_map(depth_path(data, 2), np.full((20, 128), 10.0))
    argv = ["--config", config, "--output-dir", tmp_path / "out", "model.input=depth"]
    code, err = cli(train_main, argv, capsys)
    assert code == 2
    assert "depth map 128x20 does not fit its image 128x48" in err
    assert not list((tmp_path / "out").rglob("*.pth"))


# ------------------------------------------------------------------ scans
def scan_path(data: Path, frame: int) -> Path:
    return data / "training" / "velodyne" / f"{frame:06d}.bin"


def test_empty_scan_fails_its_frame_and_writes_no_map(data, capsys):
    scan_path(data, 4).write_bytes(b"")
    depth_path(data, 4).unlink()
    before = snapshot(data)
    code, out, err = cli_out(depth_main, ["--data-dir", data], capsys)
    assert code == 1
    assert f"frame 000004 failed: {scan_path(data, 4)}: empty Velodyne scan (0 points)" in err
    assert "0 written, 9 skipped (existing), 1 failed" in out
    assert not depth_path(data, 4).exists()
    assert_kept(before, data)


def test_implausible_scan_fails_its_frame(data, capsys):
    points = np.zeros((500, 4), np.float32)
    points[:, 0] = -10.0  # every point behind the car: nothing lands in the image
    scan_path(data, 6).write_bytes(points.tobytes())
    code, out, err = cli_out(depth_main, ["--data-dir", data, "--overwrite"], capsys)
    assert code == 1
    assert "implausible scan: 0 of its 500 points project into the 128x48 image" in err
    assert "9 written, 0 skipped (existing), 1 failed" in out


def test_truncated_scan_is_reported_by_the_check(data, capsys):
    scan_path(data, 5).write_bytes(b"\0" * 20)
    code, out, _ = cli_out(check_main, ["--data-dir", data, "--scans"], capsys)
    assert code == 1
    assert f"{scan_path(data, 5)}: 20 bytes: empty, or not whole 16-byte points" in out


def test_depth_output_folder_that_is_a_file(data, capsys):
    (data / "training" / "blocked").write_text("not a folder")
    code, err = cli(depth_main, ["--data-dir", data, "--depth-dir", "blocked"], capsys)
    assert code == 2
    assert error_line(err).startswith(f"error: {data / 'training' / 'blocked'}: ")
