"""tools/prepare_kitti.py on the real sample frames, a synthetic KITTI-format tree and broken trees."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from lib.datasets.depth_maps import build_depth_map
from lib.datasets.kitti_io import STANDARD_SPLITS_DIR, read_depth_map, write_split
from lib.datasets.synthetic import write_dataset
from lib.errors import run_cli
from tools.prepare_kitti import main


def prepare(root: Path, link: Path, *extra: str) -> int:
    return run_cli(main, ["--kitti-root", str(root), "--link", str(link), "--workers", "1", *extra])


def problems(capfd) -> list[str]:
    err = capfd.readouterr().err
    return [line for line in err.splitlines() if line.startswith("problem: ")]


def test_sample_frames_prepared_then_a_rerun_resumes(kitti_sample: Path, tmp_path: Path, capfd) -> None:
    link = tmp_path / "repo" / "data" / "KITTI3D"
    image_sets = {p.name: p.read_text() for p in (kitti_sample / "ImageSets").iterdir()}
    assert prepare(kitti_sample, link) == 0
    assert link.is_symlink() and link.resolve() == kitti_sample.resolve()
    assert {p.name: p.read_text() for p in (kitti_sample / "ImageSets").iterdir()} == image_sets  # kept
    depth_dir = kitti_sample / "training" / "depth_dense"
    assert sorted(p.name for p in depth_dir.iterdir()) == ["000000.png", "000001.png", "000002.png"]
    training = kitti_sample / "training"
    expected = build_depth_map(training / "velodyne" / "000001.bin", training / "calib" / "000001.txt",
                               training / "image_2" / "000001.png")  # fmt: skip
    np.testing.assert_allclose(read_depth_map(depth_dir / "000001.png"), expected, atol=1 / 256)
    out = capfd.readouterr().out
    assert "3 written, 0 skipped" in out and "training/velodyne          3 files" in out
    assert "split val: 1 frame ids (KITTI's standard one has 3769)" in out
    assert "testing: not found; needed only to submit" in out

    (depth_dir / "000002.png").unlink()
    assert prepare(kitti_sample, link) == 0  # the link is kept, one map made again
    assert "1 written, 2 skipped" in capfd.readouterr().out
    assert prepare(kitti_sample, link) == 0  # complete: no depth-map run at all
    out = capfd.readouterr().out
    assert "depth maps: all there; 3 in" in out and "written" not in out


def test_synthetic_tree_with_a_test_split(tmp_path: Path, capfd) -> None:
    root = tmp_path / "synthetic"
    write_dataset(root, frames=6, seed=3, image_size=(621, 188), val_fraction=0.5)
    for folder in ("image_2", "calib"):
        shutil.copytree(root / "training" / folder, root / "testing" / folder)
    write_split(root / "ImageSets" / "test.txt", list(range(6)))
    assert prepare(root, tmp_path / "KITTI3D") == 0
    out = capfd.readouterr().out
    assert "6 written, 0 skipped (existing), 0 failed" in out
    assert "splits: train 3, val 3, trainval 6, test 6" in out
    assert "testing/calib              6 files" in out and "note: " in out
    assert len(list((root / "training" / "depth_dense").glob("*.png"))) == 6

    (root / "testing" / "calib" / "000004.txt").unlink()  # a partly extracted archive
    assert prepare(root, tmp_path / "KITTI3D") == 2
    assert problems(capfd) == [
        f"problem: {root / 'testing' / 'calib'}: 1 of the 6 listed frames have no .txt file (000004); "
        "re-extract data_object_calib.zip (camera calibration matrices, 16 MB)"
    ]


def test_without_image_sets_the_standard_lists_are_checked_and_installed(tmp_path: Path, capfd) -> None:
    """A tree with every KITTI training frame (frames 0-2 real, the rest empty files) gets the
    standard lists as ImageSets/; the same tree short of frames names the missing ones."""
    sample = Path(__file__).parent / "data" / "kitti_sample" / "training"
    root = tmp_path / "kitti"
    for folder, suffix in (("image_2", ".png"), ("calib", ".txt"), ("label_2", ".txt"), ("velodyne", ".bin")):
        (root / "training" / folder).mkdir(parents=True)
        for i in range(7481):
            (root / "training" / folder / f"{i:06d}{suffix}").touch()
        for i in range(3):
            shutil.copyfile(
                sample / folder / f"{i:06d}{suffix}", root / "training" / folder / f"{i:06d}{suffix}"
            )
    for i in (5, 6, 7, 8, 9, 7480):
        (root / "training" / "velodyne" / f"{i:06d}.bin").unlink()
    (root / "training" / "label_2").rename(root / "training" / "labels")  # extracted under another name

    assert prepare(root, tmp_path / "KITTI3D", "--skip-depth") == 2
    assert problems(capfd) == [
        f"problem: {root / 'training' / 'label_2'}: is missing; download data_object_label_2.zip "
        f"(training labels, 5 MB) and extract it into {root}",
        f"problem: {root / 'training' / 'velodyne'}: 6 of the 7481 listed frames have no .bin file "
        "(000005 000006 000007 000008 000009 ...); re-extract data_object_velodyne.zip "
        "(Velodyne point clouds, 29 GB)",
    ]
    assert not (root / "ImageSets").exists() and not (tmp_path / "KITTI3D").exists()  # nothing written

    (root / "training" / "labels").rename(root / "training" / "label_2")
    for i in (5, 6, 7, 8, 9, 7480):
        (root / "training" / "velodyne" / f"{i:06d}.bin").touch()
    assert prepare(root, tmp_path / "KITTI3D", "--skip-depth") == 0
    for name in ("train", "val", "trainval", "test"):
        assert (root / "ImageSets" / f"{name}.txt").read_text() == (
            STANDARD_SPLITS_DIR / f"{name}.txt"
        ).read_text()
    out = capfd.readouterr().out
    assert "splits: train 3712, val 3769, trainval 7481, test 7518" in out
    assert "depth maps: skipped (--skip-depth); 0 in" in out


def test_a_malformed_file_is_named_with_its_archive(kitti_sample: Path, tmp_path: Path, capfd) -> None:
    (kitti_sample / "training" / "label_2" / "000000.txt").write_text("Car 0.0 0 1.0 10 20\n")
    (kitti_sample / "training" / "calib" / "000002.txt").write_text("P2: 1 2 3\n")  # val's first
    assert prepare(kitti_sample, tmp_path / "KITTI3D") == 2
    found = problems(capfd)
    assert len(found) == 2
    assert "label_2/000000.txt:1" in found[0] and found[0].endswith(
        "re-extract data_object_label_2.zip (training labels, 5 MB)"
    )
    assert "calib/000002.txt" in found[1] and "re-extract data_object_calib.zip" in found[1]


def test_depth_maps_instead_of_scans(kitti_sample: Path, tmp_path: Path, capfd) -> None:
    """Maps distributed by MonoSKD / MonoDistill make the scans unnecessary: a note, no problem."""
    assert prepare(kitti_sample, tmp_path / "KITTI3D") == 0
    shutil.rmtree(kitti_sample / "training" / "velodyne")
    capfd.readouterr()
    assert prepare(kitti_sample, tmp_path / "KITTI3D") == 0
    assert (
        f"note: {kitti_sample / 'training' / 'velodyne'}: is missing; download data_object_velodyne.zip"
        in (capfd.readouterr().out)
    )
    (kitti_sample / "training" / "depth_dense" / "000001.png").unlink()
    assert prepare(kitti_sample, tmp_path / "KITTI3D") == 2  # now the scans are needed again
    assert "training/velodyne: is missing" in problems(capfd)[0]


def test_an_existing_link_or_folder_is_not_replaced(kitti_sample: Path, tmp_path: Path, capfd) -> None:
    other = tmp_path / "other"
    other.mkdir()
    link = tmp_path / "KITTI3D"
    link.symlink_to(other)
    assert prepare(kitti_sample, link, "--skip-depth") == 2
    assert problems(capfd) == [
        f"problem: {link}: already links to {other}; pass --replace-link to point it at {kitti_sample}"
    ]
    assert link.resolve() == other and not (kitti_sample / "training" / "depth_dense").exists()
    assert prepare(kitti_sample, link, "--skip-depth", "--replace-link") == 0
    assert link.resolve() == kitti_sample

    folder = tmp_path / "folder"
    folder.mkdir()
    assert prepare(kitti_sample, folder, "--replace-link") == 2
    assert "a folder or file is already there (not a link)" in problems(capfd)[0]
    assert prepare(kitti_sample, kitti_sample, "--skip-depth") == 0  # the dataset is already in place


def test_workers_must_be_positive(kitti_sample: Path, tmp_path: Path, capfd) -> None:
    assert prepare(kitti_sample, tmp_path / "KITTI3D", "--workers", "0") == 2
    assert capfd.readouterr().err == "error: --workers: must be >= 1, got 0\n"


def test_missing_root_names_the_archives(tmp_path: Path, capfd) -> None:
    assert prepare(tmp_path / "nowhere", tmp_path / "KITTI3D") == 2
    (line,) = problems(capfd)
    for archive in (
        "data_object_image_2.zip",
        "data_object_calib.zip",
        "data_object_label_2.zip",
        "velodyne.zip",
    ):
        assert archive in line
