"""Checks that see what training sees: tools/check_dataset.py and tools/prepare_kitti.py decode
every image they vouch for and read labels with training's own reader, so on every damaged set
below their verdict equals the dataset loader's (each test runs the loader on the same set)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from faults_common import cli, cli_out, error_line

from lib.config import load_config
from lib.datasets.dataset_check import check_splits, warn_split_overlap
from lib.datasets.kitti import build_dataset
from lib.errors import UserError
from tools.check_dataset import main as check_main
from tools.evaluate import main as evaluate_main
from tools.make_submission import main as submit_main
from tools.prepare_kitti import main as prepare_main
from tools.train_val import main as train_main


def label(data: Path, frame: int) -> Path:
    return data / "training" / "label_2" / f"{frame:06d}.txt"


def image(data: Path, frame: int) -> Path:
    return data / "training" / "image_2" / f"{frame:06d}.png"


def set_column(path: Path, column: int, value: str) -> None:
    parts = path.read_text().splitlines()[0].split()
    parts[column] = value
    rest = path.read_text().splitlines()[1:]
    path.write_text("\n".join([" ".join(parts), *rest]) + "\n")


def loader_verdict(config: Path, split: str) -> str | None:
    """What the dataset loader says reading every frame of ``split`` (None: all read)."""
    dataset = build_dataset(load_config(config, ["dataset.check_on_start=false"]), split, train=False)
    try:
        for index in range(len(dataset)):
            dataset[index]
    except (UserError, OSError) as err:
        return str(err)
    return None


def check_verdict(data: Path, split: str, capsys) -> tuple[int, str]:
    code, out, _ = cli_out(check_main, ["--data-dir", data, "--splits", split], capsys)
    return code, out


def cut(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


UNDECODABLE = "cannot be decoded as an image"
DAMAGES = {  # name: (what is done to the set, the split that reads it, what both say)
    "truncated_png": (lambda d: cut(image(d, 3), 300), "train", f"000003.png: {UNDECODABLE} (300 bytes"),
    "zero_byte_png": (lambda d: cut(image(d, 9), 0), "val", f"000009.png: {UNDECODABLE} (0 bytes"),
    "occlusion_7": (
        lambda d: set_column(label(d, 2), 2, "7"),
        "train",
        "000002.txt:1: Car has occlusion 7; KITTI's is 0, 1, 2 or 3",
    ),
    "truncation_2.5": (
        lambda d: set_column(label(d, 8), 1, "2.5"),
        "val",
        "000008.txt:1: Car has truncation 2.5; KITTI's is in [0, 1]",
    ),
    "type_Kar": (
        lambda d: set_column(label(d, 2), 0, "Kar"),
        "train",
        "000002.txt:1: unknown object type 'Kar'; KITTI's are Car, Van, Truck,",
    ),
    "alpha_9": (
        lambda d: set_column(label(d, 2), 3, "9.0"),
        "train",
        "000002.txt:1: Car has alpha 9; KITTI's is in [-pi, pi] (or -10: not given)",
    ),
    "heading_9": (
        lambda d: set_column(label(d, 4), 14, "9.0"),
        "train",
        "000004.txt:1: Car has rotation_y 9; KITTI's is in [-pi, pi]",
    ),
    "latin1_label": (
        lambda d: label(d, 5).write_bytes("Car \xe9".encode("latin-1")),
        "train",
        "000005.txt: not a text file: byte 0xe9 at offset 4 is not UTF-8",
    ),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_check_and_loader_refuse_the_same_file(data, config, capsys, damage):
    spoil, split, message = DAMAGES[damage]
    spoil(data)
    code, out = check_verdict(data, split, capsys)
    assert code == 1 and message in out, out
    assert message in (loader_verdict(config, split) or "loader read every frame")


def test_intact_set_passes_both(data, config, capsys):
    code, out = check_verdict(data, "train", capsys)
    assert code == 0 and "8 frames checked: 0 error(s), 0 warning(s)" in out
    assert loader_verdict(config, "train") is None


def test_training_stops_on_a_truncated_image_before_the_first_step(data, config, tmp_path, capsys):
    image(data, 6).write_bytes(image(data, 6).read_bytes()[:200])
    code, err = cli(train_main, ["--config", config, "--output-dir", tmp_path / "out"], capsys)
    assert code == 2
    assert f"{image(data, 6)}: cannot be decoded as an image (200 bytes" in err
    assert not list((tmp_path / "out").rglob("*.pth"))


def test_a_frame_in_train_and_val_is_reported_by_both(data, config, capsys, caplog):
    (data / "ImageSets" / "val.txt").write_text("000008\n000009\n000001\n")
    code, out, _ = cli_out(check_main, ["--data-dir", data], capsys)
    assert code == 0
    assert "warning: 1 frames listed in both 'train' and 'val'" in out and "(e.g. 000001)" in out
    with caplog.at_level(logging.WARNING, logger="lib.datasets.dataset_check"):
        check_splits(load_config(config), ["train", "val"])  # training's dataset.check_on_start
    assert "dataset check: 1 frames listed in both 'train' and 'val'" in caplog.text  # a warning: it trains


def prepare(data: Path, tmp_path: Path) -> list:
    return ["--kitti-root", data, "--link", tmp_path / "link", "--workers", "1", "--skip-depth"]


def test_prepare_kitti_does_not_declare_a_zero_byte_image_ready(data, tmp_path, capsys):
    image(data, 4).write_bytes(b"")
    set_column(label(data, 8), 2, "5")
    code, err = cli(prepare_main, prepare(data, tmp_path), capsys)
    assert code == 2
    problems = [line for line in err.splitlines() if line.startswith("problem: ")]
    assert any(f"{image(data, 4)}: cannot be decoded as an image (0 bytes" in p for p in problems), err
    assert any("000008.txt:1: Car has occlusion 5" in p for p in problems), err
    assert not (tmp_path / "link").exists()  # nothing written


def test_prepare_kitti_passes_the_intact_set(data, tmp_path, capsys):
    code, err = cli(prepare_main, prepare(data, tmp_path), capsys)
    assert code == 0, err
    assert (tmp_path / "link").resolve() == data.resolve()


def evaluate_argv(data: Path, folder: Path) -> list:
    labels, split = data / "training" / "label_2", data / "ImageSets" / "val.txt"
    return ["--label-dir", labels, "--result-dir", folder, "--split", split]


def results(data: Path, tmp_path: Path, lines: dict[int, str]) -> Path:
    folder = tmp_path / "results"
    folder.mkdir(exist_ok=True)
    for frame, text in lines.items():
        (folder / f"{frame:06d}.txt").write_text(text)
    return folder


def test_results_both_at_top_level_and_in_data_are_refused(data, tmp_path, capsys):
    folder = results(data, tmp_path, {8: "", 9: ""})
    (folder / "data").mkdir()
    (folder / "data" / "000008.txt").write_text("")
    argv = evaluate_argv(data, folder)
    message = (
        f"error: {folder}: holds result files both at its top level (2, e.g. 000008.txt) and in data/ (1); "
        "keep one set: move the other away"
    )
    code, err = cli(evaluate_main, argv, capsys)
    assert code == 2 and error_line(err) == message
    argv = [folder, "--split", data / "ImageSets" / "val.txt", "--out", tmp_path / "s.zip"]
    code, err = cli(submit_main, argv, capsys)
    assert code == 2 and error_line(err) == message
    assert not (tmp_path / "s.zip").exists()


def test_result_classes_the_evaluation_cannot_score_are_named(data, tmp_path, capsys):
    car = label(data, 8).read_text().splitlines()[0]
    cyclist, tram = car.replace("Car", "Cyclist", 1), car.replace("Car", "Tram", 1)
    lines = {8: f"{car} 0.9\n{cyclist} 0.8\n", 9: f"{tram} 0.5\n"}
    folder = results(data, tmp_path, lines)
    argv = evaluate_argv(data, folder)
    code, out, err = cli_out(evaluate_main, argv, capsys)
    assert code == 0, err
    assert "note: 1 result line(s) of class 'Tram' are not scored (evaluated classes: Car, Pedestrian" in err
    assert "note: 1 Cyclist detection(s) but no Cyclist in the labels of these frames: its AP means" in err


def test_training_that_reads_only_train_warns_of_a_frame_also_in_val(data, config, tmp_path, capsys):
    """No evaluation during training (tests/configs/tiny.yaml): its start reads the train frames
    only, and still warns as tools/check_dataset.py does (lib/datasets/dataset_check.py)."""
    (data / "ImageSets" / "val.txt").write_text("000008\n000009\n000001\n")
    stop = "dataset.batch_size=9"  # larger than the train split: the run stops once its loader is built
    argv = ["--config", config, "--output-dir", tmp_path / "out", stop]
    code, err = cli(train_main, argv, capsys)
    assert code == 2 and "dataset.batch_size 9 is larger than the 8 frames" in error_line(err)
    assert (
        "WARNING lib.datasets.dataset_check: dataset check: 1 frames listed in both 'train' and 'val' "
        "(evaluated on what was trained on, unless one split contains the other on purpose, as trainval) "
        "(e.g. 000001)"
    ) in err
    assert "dataset check: 8 frames of train are fine" in err  # val's frames were not read
    assert sum(warn_split_overlap(data, ["train", "val", "train"]).warnings.values()) == 1
    (data / "ImageSets" / "val.txt").write_text("000008\n000009\n")
    assert not warn_split_overlap(data, ["train", "val"]).warnings


def test_check_of_a_split_that_does_not_exist_is_a_bad_command(pristine, capsys):
    code, err = cli(check_main, ["--data-dir", pristine, "--splits", "train", "nosuch"], capsys)
    assert code == 2
    missing = pristine / "ImageSets" / "nosuch.txt"
    assert error_line(err) == f"error: split file not found: {missing} (--splits / the config's splits)"
