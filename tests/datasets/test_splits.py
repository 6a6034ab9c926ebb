"""The standard KITTI 3D splits kept in data/splits/ and how a dataset root falls back to them."""

from __future__ import annotations

from pathlib import Path

import pytest

from lib.config import load_config
from lib.constants import KITTI_SPLIT_SIZES
from lib.datasets.kitti import build_dataset
from lib.kitti_io import STANDARD_SPLITS_DIR, find_split_file, read_split, write_split


@pytest.fixture(scope="module")
def splits() -> dict[str, list[int]]:
    return {
        name: read_split(STANDARD_SPLITS_DIR / f"{name}.txt") for name in ("train", "val", "trainval", "test")
    }


def test_counts_are_the_standard_ones(splits) -> None:
    assert {name: len(ids) for name, ids in splits.items()} == {
        "train": 3712,
        "val": 3769,
        "trainval": 7481,
        "test": 7518,
    }
    assert KITTI_SPLIT_SIZES == {name: len(ids) for name, ids in splits.items()}


def test_train_and_val_are_disjoint_and_make_trainval(splits) -> None:
    train, val, trainval = set(splits["train"]), set(splits["val"]), set(splits["trainval"])
    assert len(train) == 3712 and len(val) == 3769  # no id listed twice
    assert not train & val
    assert train | val == trainval == set(range(7481))  # every KITTI training frame, once
    assert set(splits["test"]) == set(range(7518))
    assert splits["trainval"] == sorted(splits["trainval"])


def test_known_ids_of_the_chen_split(splits) -> None:
    # The 3DOP split (Chen et al.) that every reference ships: frames 0, 3, 7 are train, 1, 2 val.
    assert splits["train"][:4] == [0, 3, 7, 9]
    assert splits["val"][:4] == [1, 2, 4, 5]


def test_dataset_without_image_sets_uses_the_standard_lists(kitti_sample: Path) -> None:
    assert find_split_file(kitti_sample, "val") == kitti_sample / "ImageSets" / "val.txt"
    for f in (kitti_sample / "ImageSets").iterdir():
        f.unlink()
    (kitti_sample / "ImageSets").rmdir()
    assert find_split_file(kitti_sample, "val") == STANDARD_SPLITS_DIR / "val.txt"
    overrides = [f"dataset.root_dir={kitti_sample}", "dataset.check_split_sizes=false"]
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "base.yaml", overrides)
    ds = build_dataset(cfg, "val", train=False, load_depth=False)
    assert len(ds) == 3769 and ds.frame_ids[:2] == [1, 2]


def test_own_image_sets_win_and_an_unknown_split_names_image_sets(tmp_path: Path) -> None:
    write_split(tmp_path / "ImageSets" / "val.txt", [5])
    assert find_split_file(tmp_path, "val") == tmp_path / "ImageSets" / "val.txt"
    assert find_split_file(tmp_path, "train") == tmp_path / "ImageSets" / "train.txt"  # not the standard one
    assert find_split_file(tmp_path / "other", "mini") == tmp_path / "other" / "ImageSets" / "mini.txt"
