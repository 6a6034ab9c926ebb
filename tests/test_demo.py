"""tools/demo.py's closing picture: which frame, which detections, where it goes."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import cv2
import pytest

from lib.config import load_config, save_config
from lib.datasets.synthetic import write_dataset
from lib.datasets.targets import has_difficulty
from lib.kitti_io import read_label, write_label

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tools"))

import demo  # noqa: E402


def test_picture_threshold_is_taken_out_of_the_reproduce_arguments():
    assert demo.pop_threshold(["--frames", "6"]) == (demo.PICTURE_THRESHOLD, ["--frames", "6"])
    assert demo.pop_threshold(["--picture-threshold", "0.3", "a=1"]) == (0.3, ["a=1"])
    with pytest.raises(SystemExit, match="needs a number"):
        demo.pop_threshold(["--picture-threshold", "x"])


def test_picture_draws_the_busiest_val_frame_above_the_threshold(tmp_path):
    data = tmp_path / "data"
    splits = write_dataset(data, frames=4, seed=3, image_size=(320, 96), val_fraction=0.5)
    labels = {f: read_label(data / "training" / "label_2" / f"{f:06d}.txt") for f in splits["val"]}
    counts = {f: sum(o.cls_type == "Car" and has_difficulty(o) for o in objs) for f, objs in labels.items()}
    busiest = max(splits["val"], key=lambda f: (counts[f], -f))
    run_dir = tmp_path / "out" / "monommkd"
    cfg = load_config(REPO_ROOT / "configs" / "demo" / "monommkd.yaml", [f"dataset.root_dir={data}"])
    save_config(cfg, run_dir / "config.yaml")
    for frame, objects in labels.items():  # detections = the labels, scores 0.9 and 0.01 alternating
        scored = [replace(o, score=0.9 if i % 2 == 0 else 0.01) for i, o in enumerate(objects)]
        path = run_dir / "results" / "val" / "data" / f"{frame:06d}.txt"  # the tester's layout
        write_label(path, scored, score_decimals=6)

    drawn = demo.detections_above(run_dir / "results" / "val" / "data" / f"{busiest:06d}.txt", 0.5)
    assert [o.score for o in drawn] == [0.9] * ((len(labels[busiest]) + 1) // 2)
    path = demo.picture(run_dir, threshold=0.5)
    assert path == tmp_path / "out" / f"monommkd_val_{busiest:06d}.png"
    image = cv2.imread(str(path))
    assert image.shape[1] > demo.PICTURE_WIDTH  # the bird's-eye view beside the image
    assert image.shape[0] == pytest.approx(96 * demo.PICTURE_WIDTH / 320, abs=40)  # + the title bar
