"""tools/make_submission.py on synthetic result folders, and the test-split path that feeds it:
train on trainval without evaluation, ``-e`` on a split without labels, zip."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from lib.datasets.synthetic import write_dataset
from lib.errors import run_cli
from lib.eval.kitti_format import latest_result_dir
from lib.kitti_io import write_split
from lib.utils.logging import reset_logging
from tools.make_submission import main
from tools.train_val import main as train_val_main

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_BASE = REPO_ROOT / "tests" / "configs" / "tiny.yaml"  # tiny network and data of the CLI tests
CAR = "Car -1 -1 -1.57 100.00 150.00 200.00 250.00 1.50 1.60 3.90 1.00 1.70 20.00 -1.50 0.87\n"
PEDESTRIAN = "Pedestrian -1 -1 0.20 600.00 160.00 640.00 260.00 1.76 0.66 0.84 -2.00 1.60 12.00 0.10 0.41\n"


def submit(*args: str | Path) -> int:
    return run_cli(main, [str(a) for a in args])


def write_results(folder: Path, frames: int) -> Path:
    """``frames`` result files in ``folder/data``, three of them with objects."""
    data = folder / "data"
    data.mkdir(parents=True)
    for i in range(frames):
        (data / f"{i:06d}.txt").touch()
    (data / "000000.txt").write_text(CAR + PEDESTRIAN)
    (data / "000007.txt").write_text(CAR)
    (data / f"{frames - 1:06d}.txt").write_text(CAR + CAR)
    return folder


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, Path]:
    """A result folder of 12 frames and the split file that lists them."""
    write_split(tmp_path / "split.txt", list(range(12)))
    return write_results(tmp_path / "results", 12), tmp_path / "split.txt"


def test_whole_test_split_gives_a_flat_zip_and_missing_frames_are_named(tmp_path: Path, capsys) -> None:
    results = write_results(tmp_path / "results" / "test", 7518)  # data/splits/test.txt by default
    out = tmp_path / "sub" / "monommkd.zip"
    assert submit(results, "--out", out) == 0
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        assert names == [f"{i:06d}.txt" for i in range(7518)]  # top level, no folder, frame order
        assert archive.read("000000.txt").decode() == CAR + PEDESTRIAN
        assert archive.read("007517.txt").decode() == CAR + CAR
        assert archive.read("000001.txt") == b""
    printed = capsys.readouterr().out
    assert "7518 frames checked (7515 without detections); detections: Car 4, Pedestrian 1" in printed
    assert not list(out.parent.glob("*.partial"))

    (results / "data" / "000005.txt").unlink()
    (results / "data" / "007517.txt").unlink()
    assert submit(results, "--out", tmp_path / "s.zip") == 2
    err = capsys.readouterr().err
    assert f"{results / 'data'}: 2 of the 7518 frames of " in err
    assert "have no result file: 000005 007517 (run tools/train_val.py -e" in err
    assert not (tmp_path / "s.zip").exists()


def test_existing_zip_is_kept_and_the_data_folder_works_too(small, tmp_path: Path, capsys) -> None:
    results, split = small
    out = tmp_path / "s.zip"
    assert submit(results, "--split", split, "--out", out) == 0
    assert submit(results, "--split", split, "--out", out) == 2
    assert (
        capsys.readouterr().err
        == f"error: {out}: already exists; pass --overwrite to replace it or choose another --out\n"
    )
    assert submit(results, "--split", split, "--out", out, "--overwrite") == 0
    assert submit(results / "data", "--split", split) == 0  # default --out: beside the result files
    assert not (results / "data" / "submission.zip").exists()
    with zipfile.ZipFile(results / "submission.zip") as archive:
        assert archive.namelist() == [f"{i:06d}.txt" for i in range(12)]


def test_a_file_of_another_frame_is_refused(small, tmp_path: Path, capsys) -> None:
    results, split = small
    (results / "data" / "000012.txt").touch()
    assert submit(results, "--split", split, "--out", tmp_path / "s.zip") == 2
    assert f"result files of frames that are not in {split}: 000012" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (CAR + CAR.rsplit(" ", 1)[0] + "\n", "000007.txt:2: expected 16 columns, got 15"),
        (CAR.replace("Car", "car"), "000007.txt:1: unknown object type 'car'"),
        (PEDESTRIAN + CAR.replace("20.00", "nan"), "000007.txt:2: NaN or infinite value"),
        (CAR.replace("1.60", "1,60"), "000007.txt:1: non-numeric field"),
    ],
)
def test_malformed_line_names_file_and_line(small, tmp_path: Path, capsys, text, message) -> None:
    results, split = small
    (results / "data" / "000007.txt").write_text(text)
    assert submit(results, "--split", split, "--out", tmp_path / "s.zip") == 2
    err = capsys.readouterr().err
    assert str(results / "data" / "000007.txt") in err and message in err
    assert not (tmp_path / "s.zip").exists()


TRAINVAL_CONFIG = """\
_base_: {base}
experiment:
  name: trainval
  seed: 3
dataset:
  root_dir: {data}
  train_split: trainval
trainer:
  max_epoch: 1
tester:
  split: test
"""


@pytest.fixture
def restore_loggers():
    yield
    reset_logging()  # train_val attaches file handlers to the run folder


def test_trainval_run_then_test_split_then_zip(tmp_path: Path, restore_loggers, monkeypatch, capsys) -> None:
    """The submission path on a synthetic set: training/ (6 labelled frames, all of them
    trainval) and testing/ (4 frames without labels listed in ImageSets/test.txt)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = tmp_path / "data"
    write_dataset(data, frames=6, seed=2, image_size=(320, 96))
    for folder in ("image_2", "calib"):
        shutil.copytree(data / "training" / folder, data / "testing" / folder)
    write_split(data / "ImageSets" / "test.txt", [0, 2, 3, 5])
    config = tmp_path / "trainval.yaml"
    config.write_text(TRAINVAL_CONFIG.format(base=TINY_BASE, data=data))
    outputs = f"experiment.output_dir={tmp_path / 'outputs'}"

    assert run_cli(train_val_main, ["--config", str(config), outputs]) == 0
    run_dir = tmp_path / "outputs" / "trainval"
    assert (run_dir / "checkpoints" / "last.pth").is_file() and not (run_dir / "results").exists()
    assert run_cli(train_val_main, ["--config", str(config), "-e", outputs]) == 0  # tester.split: test
    results = latest_result_dir(run_dir, "test")  # results/test/last-<sha256 prefix>
    assert sorted(p.name for p in (results / "data").iterdir()) == [
        "000000.txt",
        "000002.txt",
        "000003.txt",
        "000005.txt",
    ]
    assert not (results / "ap.json").exists()  # no labels, no AP

    capsys.readouterr()
    assert submit(results, "--split", data / "ImageSets" / "test.txt", "--out", tmp_path / "s.zip") == 0
    with zipfile.ZipFile(tmp_path / "s.zip") as archive:
        assert archive.namelist() == ["000000.txt", "000002.txt", "000003.txt", "000005.txt"]
        assert archive.read("000003.txt") == (results / "data" / "000003.txt").read_bytes()
