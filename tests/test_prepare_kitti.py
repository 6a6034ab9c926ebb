"""tools/prepare_kitti.py on the real sample frames, a synthetic KITTI-format tree and broken trees."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np

from lib import kitti_io
from lib.datasets.depth_maps import build_depth_map
from lib.datasets.synthetic import write_dataset
from lib.errors import run_cli
from lib.kitti_io import read_depth_map, write_split
from lib.utils.files import current_umask
from tools import prepare_kitti
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


def test_without_image_sets_the_standard_lists_are_checked(kitti_sample: Path, tmp_path: Path, capfd) -> None:
    """The three sample frames without their ImageSets/: checked against data/splits/, which
    lists all 7481 training frames."""
    shutil.rmtree(kitti_sample / "ImageSets")
    (kitti_sample / "training" / "label_2").rename(
        kitti_sample / "training" / "labels"
    )  # extracted elsewhere
    assert prepare(kitti_sample, tmp_path / "KITTI3D") == 2
    training = kitti_sample / "training"
    first = "(000003 000004 000005 000006 000007 ...)"
    assert problems(capfd) == [
        f"problem: {training / 'image_2'}: 7478 of the 7481 listed frames have no .png file {first}; "
        "re-extract data_object_image_2.zip (left colour images, 12 GB)",
        f"problem: {training / 'calib'}: 7478 of the 7481 listed frames have no .txt file {first}; "
        "re-extract data_object_calib.zip (camera calibration matrices, 16 MB)",
        f"problem: {training / 'label_2'}: is missing; download data_object_label_2.zip "
        f"(training labels, 5 MB) and extract it into {kitti_sample}",
        f"problem: {training / 'velodyne'}: 7478 of the 7481 listed frames have no .bin file {first}; "
        "re-extract data_object_velodyne.zip (Velodyne point clouds, 29 GB)",
    ]
    assert (
        not (kitti_sample / "ImageSets").exists() and not (tmp_path / "KITTI3D").exists()
    )  # nothing written
    assert not (training / "depth_dense").exists()


def test_standard_lists_are_installed_where_image_sets_is_missing(
    kitti_sample: Path, tmp_path: Path, monkeypatch, capfd
) -> None:
    """Standard lists that the three sample frames satisfy stand in for data/splits/."""
    standard = tmp_path / "splits"
    lists = {"train": [0, 1], "val": [2], "trainval": [0, 1, 2], "test": [1, 0]}
    for name, ids in lists.items():
        write_split(standard / f"{name}.txt", ids)
    monkeypatch.setattr(kitti_io, "STANDARD_SPLITS_DIR", standard)
    monkeypatch.setattr(prepare_kitti, "STANDARD_SPLITS_DIR", standard)
    shutil.rmtree(kitti_sample / "ImageSets")

    assert prepare(kitti_sample, tmp_path / "KITTI3D", "--skip-depth") == 0
    for name in lists:
        assert (kitti_sample / "ImageSets" / f"{name}.txt").read_text() == (
            standard / f"{name}.txt"
        ).read_text()
    out = capfd.readouterr().out
    assert f"{kitti_sample / 'ImageSets'} written from {standard}" in out
    assert "splits: train 2, val 1, trainval 3, test 2" in out
    assert "depth maps: skipped (--skip-depth); 0 in" in out
    (standard / "val.txt").write_text("000001\n")  # from now on the dataset's own lists count
    assert prepare(kitti_sample, tmp_path / "KITTI3D", "--skip-depth") == 0
    assert f"{kitti_sample / 'ImageSets'} kept (the dataset's own lists)" in capfd.readouterr().out
    assert (kitti_sample / "ImageSets" / "val.txt").read_text() == "000002\n"


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


def test_official_archives_in_the_folder_are_extracted(kitti_sample: Path, tmp_path: Path, capfd) -> None:
    """Four zips laid out as KITTI's (training/<folder>/...) are extracted, then prepared; a rerun
    after a lost file extracts that file only; a member escaping the folder is refused."""
    root = tmp_path / "download"
    shutil.copytree(kitti_sample / "ImageSets", root / "ImageSets")  # the 3 frames' lists, not KITTI's
    for archive, folder in (
        ("data_object_image_2.zip", "image_2"),
        ("data_object_calib.zip", "calib"),
        ("data_object_label_2.zip", "label_2"),
        ("data_object_velodyne.zip", "velodyne"),
    ):
        with zipfile.ZipFile(root / archive, "w") as zf:
            for path in sorted((kitti_sample / "training" / folder).iterdir()):
                zf.write(path, f"training/{folder}/{path.name}")
    assert prepare(root, tmp_path / "KITTI3D", "--skip-depth") == 0
    out = capfd.readouterr().out
    assert "data_object_velodyne.zip: 3 files extracted, 0 there already" in out
    for folder in ("image_2", "calib", "label_2", "velodyne"):
        for path in (kitti_sample / "training" / folder).iterdir():
            extracted = root / "training" / folder / path.name
            assert extracted.read_bytes() == path.read_bytes()
            assert extracted.stat().st_mode & 0o777 == 0o666 & ~current_umask()
    assert not list(root.rglob("*.part"))  # no temporary file left

    (root / "training" / "calib" / "000001.txt").unlink()
    assert prepare(root, tmp_path / "KITTI3D", "--skip-depth") == 0
    out = capfd.readouterr().out
    assert "data_object_calib.zip: 1 files extracted, 2 there already" in out
    assert "data_object_image_2.zip: 0 files extracted, 3 there already" in out

    with zipfile.ZipFile(root / "data_object_label_2.zip", "w") as zf:
        zf.writestr("../escape.txt", "x")
    assert prepare(root, tmp_path / "KITTI3D", "--skip-depth") == 2
    assert "would land outside the folder" in capfd.readouterr().err
    assert not (tmp_path / "escape.txt").exists()
