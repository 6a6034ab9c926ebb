"""Depth maps from Velodyne scans (lib/datasets/depth_maps.py, tools/make_depth_maps.py)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lib.datasets.depth_maps import build_depth_map, densify, project_scan, read_image_size
from lib.kitti_io import (
    DEPTH_PNG_SCALE,
    Calibration,
    KittiFormatError,
    read_calib,
    read_depth_map,
    read_velodyne,
    write_depth_map,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL = REPO_ROOT / "tools" / "make_depth_maps.py"
FRAMES = ("000000", "000001", "000002")
IMAGE_SIZES = {"000000": (1224, 370), "000001": (1242, 375), "000002": (1242, 375)}
QUANTUM = 1.0 / DEPTH_PNG_SCALE  # m, the PNG's depth step


def frame_files(root: Path, name: str) -> tuple[Path, Path, Path]:
    training = root / "training"
    return (
        training / "velodyne" / f"{name}.bin",
        training / "calib" / f"{name}.txt",
        training / "image_2" / f"{name}.png",
    )


def reference_sparse_map(points: np.ndarray, calib: Calibration, width: int, height: int) -> np.ndarray:
    """An independent projection: own 4x4 velo→rect matrix, then a plain per-point z-buffer."""
    velo_to_cam = np.eye(4)
    velo_to_cam[:3, :] = calib.V2C
    rectify = np.eye(4)
    rectify[:3, :3] = calib.R0
    velo_to_rect = rectify @ velo_to_cam  # (4, 4)
    pts_h = np.concatenate([points[:, :3].astype(np.float64), np.ones((len(points), 1))], axis=1)
    pts_rect = (velo_to_rect @ pts_h.T).T[:, :3]  # (N, 3)
    p = calib.P2.tolist()
    nearest: dict[tuple[int, int], float] = {}
    for x, y, z in pts_rect[pts_rect[:, 2] > 0.1].tolist():
        u = p[0][0] * x + p[0][1] * y + p[0][2] * z + p[0][3]
        v = p[1][0] * x + p[1][1] * y + p[1][2] * z + p[1][3]
        w = p[2][0] * x + p[2][1] * y + p[2][2] * z + p[2][3]
        col, row = math.floor(u / w + 0.5), math.floor(v / w + 0.5)
        if 0 <= col < width and 0 <= row < height and z < nearest.get((row, col), math.inf):
            nearest[(row, col)] = z
    depth = np.zeros((height, width), dtype=np.float32)
    for (row, col), z in nearest.items():
        depth[row, col] = z
    return depth


@pytest.fixture(scope="module")
def sample_frames(kitti_sample_dir: Path) -> dict[str, tuple[np.ndarray, Calibration, tuple[int, int]]]:
    """Scan, calibration and image size of the three real frames (read-only)."""
    frames = {}
    for name in FRAMES:
        velo, calib, image = frame_files(kitti_sample_dir, name)
        frames[name] = (read_velodyne(velo), read_calib(calib), read_image_size(image))
    return frames


def simple_calib(focal: float, cu: float, cv: float) -> Calibration:
    """Velo (x fwd, y left, z up) → cam (x right, y down, z fwd), R0 = I, P2 = [K | 0]."""
    v2c = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    p2 = np.array([[focal, 0.0, cu, 0.0], [0.0, focal, cv, 0.0], [0.0, 0.0, 1.0, 0.0]])
    return Calibration(P=np.stack([p2] * 4), R0=np.eye(3), V2C=v2c)


def test_project_scan_hand_example() -> None:
    calib = simple_calib(focal=10.0, cu=4.0, cv=3.0)  # 8x6 image
    points = np.array(
        [
            [10.0, 0.0, 0.0, 0.5],  # straight ahead at 10 m → pixel (u=4, v=3)
            [5.0, 0.0, 0.0, 0.5],  # same pixel, nearer: wins
            [20.0, 0.0, 0.0, 0.5],  # same pixel, farther
            [10.0, -2.0, 1.0, 0.5],  # u = 4 + 10·2/10 = 6, v = 3 − 10·1/10 = 2
            [4.0, 0.57, -0.3, 0.5],  # u = 4 − 1.425 = 2.575 → col 3, v = 3 + 0.75 = 3.75 → row 4
            [-10.0, 0.0, 0.0, 0.5],  # behind the camera
            [0.05, 0.0, 0.0, 0.5],  # closer than 0.1 m
            [10.0, -20.0, 0.0, 0.5],  # u = 24: right of the image
            [np.nan, 0.0, 0.0, 0.5],  # not a point
        ],
        dtype=np.float32,
    )
    depth = project_scan(points, calib, (8, 6))
    expected = np.zeros((6, 8), dtype=np.float32)
    expected[3, 4] = 5.0
    expected[2, 6] = 10.0
    expected[4, 3] = 4.0
    assert depth.dtype == np.float32
    np.testing.assert_array_equal(depth, expected)


@pytest.mark.parametrize("name", FRAMES)
def test_project_scan_matches_independent_projection(sample_frames, name: str) -> None:
    points, calib, (width, height) = sample_frames[name]
    depth = project_scan(points, calib, (width, height))
    expected = reference_sparse_map(points, calib, width, height)
    assert depth.shape == (height, width) and depth.dtype == np.float32
    np.testing.assert_array_equal(depth > 0, expected > 0)
    np.testing.assert_allclose(depth, expected, rtol=1e-6)
    assert (depth > 0).sum() > 10_000  # a real scan covers ~4 % of the 1242x375 pixels


def lidar_rows(sparse: np.ndarray) -> tuple[int, int]:
    rows = np.flatnonzero((sparse > 0).any(axis=1))
    return int(rows[0]), int(rows[-1])


@pytest.mark.parametrize("blur", ["bilateral", "gaussian"])
@pytest.mark.parametrize("name", FRAMES)
def test_densify_real_frames(sample_frames, name: str, blur: str) -> None:
    points, calib, image_size = sample_frames[name]
    sparse = project_scan(points, calib, image_size)
    dense = densify(sparse, blur=blur)
    assert dense.shape == sparse.shape and dense.dtype == np.float32
    measured = sparse > 0
    np.testing.assert_allclose(dense[measured], sparse[measured], rtol=0.01)
    top, bottom = lidar_rows(sparse)
    assert (dense[top : bottom + 1] > 0).mean() >= 0.95
    assert not dense[:top].any()  # above the highest LiDAR return: no depth
    # The fill interpolates between returns: it never leaves the measured depth range.
    assert sparse[measured].min() - 1e-3 <= dense[dense > 0].min()
    assert dense.max() <= sparse.max() + 1e-3


def test_densify_fills_a_plane_between_scan_lines() -> None:
    sparse = np.zeros((60, 80), dtype=np.float32)
    sparse[20:50:4, ::3] = 10.0  # scan lines every 4 rows, a return every 3 columns
    dense = densify(sparse)
    np.testing.assert_allclose(dense[20:47], 10.0, rtol=1e-5)
    assert not dense[:20].any()


def test_densify_keeps_the_nearest_surface() -> None:
    sparse = np.zeros((60, 100), dtype=np.float32)
    sparse[20:50:4, ::2] = 20.0  # background wall
    sparse[20:50:4, 40:61:2] = 5.0  # a nearer object in front of it, columns 40..60
    dense = densify(sparse)
    np.testing.assert_allclose(dense[22:46, 46:55], 5.0, rtol=1e-4)
    np.testing.assert_allclose(dense[22:46, :30], 20.0, rtol=1e-4)
    np.testing.assert_allclose(dense[22:46, 72:], 20.0, rtol=1e-4)


def test_densify_extends_columns_to_the_top_of_the_coverage() -> None:
    sparse = np.zeros((40, 30), dtype=np.float32)
    sparse[10, 5] = 30.0  # the single highest return: the coverage starts at row 10
    sparse[24:36:2, :] = 8.0  # ground returns
    dense = densify(sparse)
    assert not dense[:10].any()
    assert (dense[10:36] > 0).all()


def test_densify_empty_and_bad_arguments() -> None:
    empty = np.zeros((5, 7), dtype=np.float32)
    np.testing.assert_array_equal(densify(empty), empty)
    with pytest.raises(ValueError, match="blur"):
        densify(empty, blur="box")


def test_read_image_size(kitti_sample_dir: Path, tmp_path: Path) -> None:
    for name in FRAMES:
        assert read_image_size(kitti_sample_dir / "training" / "image_2" / f"{name}.png") == IMAGE_SIZES[name]
    not_png = tmp_path / "image.png"
    not_png.write_bytes(b"GIF89a" + bytes(40))
    with pytest.raises(KittiFormatError, match="image.png: not a PNG"):
        read_image_size(not_png)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image_size(tmp_path / "missing.png")


def test_build_depth_map_matches_the_pure_functions(kitti_sample: Path, sample_frames) -> None:
    points, calib, image_size = sample_frames["000001"]
    sparse = project_scan(points, calib, image_size)
    files = frame_files(kitti_sample, "000001")
    np.testing.assert_array_equal(build_depth_map(*files, dense=False), sparse)
    np.testing.assert_array_equal(build_depth_map(*files), densify(sparse))


# --- the CLI, end to end --------------------------------------------------------------------


def run_tool(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_cli_writes_skips_and_overwrites(kitti_sample: Path, sample_frames) -> None:
    out_dir = kitti_sample / "training" / "depth_dense"
    result = run_tool("--data-dir", kitti_sample, "--sparse", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "3 written" in result.stdout
    for name in FRAMES:
        points, calib, image_size = sample_frames[name]
        written = read_depth_map(out_dir / f"{name}.png")
        assert written.shape == image_size[::-1]
        np.testing.assert_allclose(written, project_scan(points, calib, image_size), atol=QUANTUM / 2 + 1e-6)

    marker = np.full((2, 3), 7.0, dtype=np.float32)  # stands for a map made earlier
    write_depth_map(out_dir / "000000.png", marker)
    result = run_tool("--data-dir", kitti_sample)
    assert result.returncode == 0, result.stderr
    assert "0 written, 3 skipped" in result.stdout
    np.testing.assert_array_equal(read_depth_map(out_dir / "000000.png"), marker)

    result = run_tool("--data-dir", kitti_sample, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert "3 written" in result.stdout
    points, calib, image_size = sample_frames["000000"]
    expected = densify(project_scan(points, calib, image_size))
    np.testing.assert_allclose(read_depth_map(out_dir / "000000.png"), expected, atol=QUANTUM / 2 + 1e-6)
    assert not list(out_dir.glob("*.partial.png"))


@pytest.mark.parametrize(
    ("broken", "content", "message"),
    [
        ("velodyne/000001.bin", b"\x00" * 18, "000001.bin: size 18 bytes is not a multiple of 16"),
        ("calib/000001.txt", b"P2: 1 2 3\n", "000001.txt:1: P2 needs 12 finite values, got 3"),
        ("calib/000001.txt", None, "calib file not found"),
    ],
    ids=["short-scan", "bad-calib", "no-calib"],
)
def test_cli_reports_a_broken_frame_and_goes_on(
    kitti_sample: Path, broken: str, content: bytes | None, message: str
) -> None:
    path = kitti_sample / "training" / broken
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)
    result = run_tool("--data-dir", kitti_sample, "--sparse")
    assert result.returncode == 1
    assert message in result.stderr
    assert "failed frames: 000001" in result.stderr
    assert "2 written, 0 skipped (existing), 1 failed" in result.stdout
    out_dir = kitti_sample / "training" / "depth_dense"
    assert sorted(p.name for p in out_dir.iterdir()) == ["000000.png", "000002.png"]


def test_cli_missing_data_dir_prints_the_expected_tree(tmp_path: Path) -> None:
    result = run_tool("--data-dir", tmp_path / "nowhere", "--split", "val")
    assert result.returncode == 2
    assert "not found" in result.stderr
    for entry in (
        "ImageSets/val.txt",
        "training/",
        "velodyne/NNNNNN.bin",
        "calib/NNNNNN.txt",
        "depth_dense/",
    ):
        assert entry in result.stderr
