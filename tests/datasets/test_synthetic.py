"""Synthetic KITTI generator (lib/datasets/synthetic.py, tools/make_synthetic_kitti.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from lib.constants import CLASS_TO_ID, MEAN_SIZES
from lib.datasets.depth_maps import build_depth_map
from lib.datasets.synthetic import (
    IMAGE_SIZE,
    SceneObject,
    SyntheticFrame,
    generate_frame,
    occlusion_level,
    render_scene,
    split_frames,
    synthetic_calibration,
    write_dataset,
)
from lib.datasets.synthetic_scene import CAMERA_HEIGHT
from lib.geometry import box3d_corners, project_to_image, velo_to_rect
from lib.kitti_io import read_calib, read_label, read_split, read_velodyne

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL = REPO_ROOT / "tools" / "make_synthetic_kitti.py"
SMALL = (320, 96)
NUM_FRAMES = 4  # full-size frames checked by the geometry tests
TOL = 0.1  # m: LiDAR points may leave a surface by 5 sigma of the 2 cm range noise


@pytest.fixture(scope="module")
def frames() -> list[SyntheticFrame]:
    return [generate_frame(np.random.default_rng([7, i])) for i in range(NUM_FRAMES)]


def points_in_box(
    points: np.ndarray, dims: np.ndarray, loc: np.ndarray, ry: float, *, margin: float
) -> np.ndarray:
    """(N,) whether rect points lie in a 3D box (h, w, l; bottom centre; yaw) grown by ``margin``."""
    rel = points - loc
    c, s = np.cos(ry), np.sin(ry)
    along = c * rel[:, 0] - s * rel[:, 2]  # box-frame x (length), see geometry.box3d_corners
    across = s * rel[:, 0] + c * rel[:, 2]  # box-frame z (width)
    h, w, l = dims
    return (
        (np.abs(along) <= l / 2 + margin)
        & (np.abs(across) <= w / 2 + margin)
        & (rel[:, 1] <= margin)
        & (rel[:, 1] >= -h - margin)
    )


def car(x: float, z: float, ry: float = -np.pi / 2) -> SceneObject:
    return SceneObject("Car", dims=np.array([1.5, 1.6, 3.9]), loc=np.array([x, CAMERA_HEIGHT, z]), ry=ry)


def test_same_seed_gives_the_same_frame_and_another_seed_does_not() -> None:
    a, b = (generate_frame(np.random.default_rng(3), image_size=SMALL) for _ in range(2))
    c = generate_frame(np.random.default_rng(4), image_size=SMALL)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.scan, b.scan)
    assert [o.to_line() for o in a.objects] == [o.to_line() for o in b.objects]
    assert not np.array_equal(a.image, c.image)


def test_frame_contents(frames: list[SyntheticFrame]) -> None:
    for frame in frames:
        assert frame.image.shape == (IMAGE_SIZE[1], IMAGE_SIZE[0], 3) and frame.image.dtype == np.uint8
        assert frame.instance_ids.shape == frame.image.shape[:2]
        assert frame.scan.dtype == np.float32 and frame.scan.shape[1] == 4 and len(frame.scan) > 20000
        assert ((frame.scan[:, 3] >= 0) & (frame.scan[:, 3] <= 1)).all()
        assert 1 <= len(frame.objects) <= 8
        for obj in frame.objects:
            mean = MEAN_SIZES[CLASS_TO_ID[obj.cls_type]]
            assert np.allclose([obj.h, obj.w, obj.l], mean, rtol=0.3), obj.to_line()
            assert obj.pos[1] == pytest.approx(CAMERA_HEIGHT)  # resting on the ground plane
            assert 3.0 < obj.pos[2] < 62.0


def test_labels_agree_with_the_geometry(frames: list[SyntheticFrame]) -> None:
    checked = 0
    for frame in frames:
        P = frame.calib.P2
        width, height = IMAGE_SIZE
        for obj in frame.objects:
            corners = box3d_corners(np.array([[obj.h, obj.w, obj.l]]), obj.pos[None], np.array([obj.ry]))[0]
            uv, depth = project_to_image(corners, P)
            full = np.concatenate([uv.min(axis=0), uv.max(axis=0)])
            assert (depth > 0).all()
            if obj.truncation == 0.0:
                assert np.allclose(obj.box2d, full, atol=1e-6)  # the projected 3D box
                checked += 1
            else:
                clipped = np.clip(full, 0, [width - 1, height - 1, width - 1, height - 1])
                assert np.allclose(obj.box2d, clipped, atol=1e-6)
                area = (full[2] - full[0]) * (full[3] - full[1])
                inside = (clipped[2] - clipped[0]) * (clipped[3] - clipped[1])
                assert obj.truncation == pytest.approx(1.0 - inside / area)
            alpha = obj.ry - np.arctan2(obj.pos[0], obj.pos[2])
            assert np.cos(obj.alpha - alpha) == pytest.approx(1.0)
            assert -np.pi <= obj.alpha < np.pi
    assert checked >= 3


def test_rendered_object_pixels_lie_in_their_2d_box(frames: list[SyntheticFrame]) -> None:
    for frame in frames:
        assert frame.instance_ids.max() == len(frame.objects)  # every labelled object is seen
        for k, obj in enumerate(frame.objects):
            rows, cols = np.nonzero(frame.instance_ids == k + 1)
            x1, y1, x2, y2 = obj.box2d
            assert rows.size > 0
            assert cols.min() >= x1 - 1 and cols.max() <= x2 + 1
            assert rows.min() >= y1 - 1 and rows.max() <= y2 + 1


def test_occlusion_of_a_car_behind_another() -> None:
    rng = np.random.default_rng(0)
    behind = render_scene([car(0.0, 10.0), car(0.0, 20.0)], rng=rng)
    near, far = sorted(behind.objects, key=lambda o: o.pos[2])
    assert near.occlusion == 0 and far.occlusion >= 2
    apart = render_scene([car(-4.0, 10.0), car(4.0, 20.0)], rng=np.random.default_rng(0))
    assert [o.occlusion for o in apart.objects] == [0, 0]
    hidden = render_scene(
        [
            car(0.0, 8.0),
            SceneObject("Pedestrian", np.array([1.0, 0.5, 0.5]), np.array([0.0, CAMERA_HEIGHT, 14.0]), 0.0),
        ],
        rng=np.random.default_rng(0),
    )
    assert [o.cls_type for o in hidden.objects] == ["Car"]  # nothing of the pedestrian shows: no label


def test_occlusion_levels() -> None:
    assert [occlusion_level(f) for f in (0.0, 0.05, 0.2, 0.6, 0.95, 1.0)] == [0, 0, 1, 2, 3, 3]


def test_lidar_points_lie_on_the_ground_or_on_objects(frames: list[SyntheticFrame]) -> None:
    for frame in frames:
        rect = velo_to_rect(frame.scan[:, :3], frame.calib)  # (N, 3)
        on_ground = np.abs(rect[:, 1] - CAMERA_HEIGHT) < TOL
        on_object = np.zeros(len(rect), dtype=bool)
        for obj in frame.objects:
            dims = np.array([obj.h, obj.w, obj.l])
            inside = points_in_box(rect, dims, obj.pos, obj.ry, margin=TOL)
            on_object |= inside
            if obj.occlusion == 0 and obj.truncation == 0.0:
                assert inside.sum() >= 3, obj.to_line()  # the scanner sees every visible object
        assert (on_ground | on_object).all()
        assert on_ground.mean() > 0.5


def test_lidar_points_in_a_2d_box_near_its_depth_are_in_its_3d_box(frames: list[SyntheticFrame]) -> None:
    for frame in frames:
        rect = velo_to_rect(frame.scan[:, :3], frame.calib)
        uv, depth = project_to_image(rect, frame.calib.P2)
        above_ground = rect[:, 1] < CAMERA_HEIGHT - TOL
        for obj in frame.objects:
            if obj.occlusion > 0:
                continue
            x1, y1, x2, y2 = obj.box2d
            hit = (uv[:, 0] >= x1) & (uv[:, 0] <= x2) & (uv[:, 1] >= y1) & (uv[:, 1] <= y2)
            hit &= (np.abs(depth - obj.pos[2]) < obj.l / 2) & above_ground
            dims = np.array([obj.h, obj.w, obj.l])
            assert points_in_box(rect[hit], dims, obj.pos, obj.ry, margin=TOL).all(), obj.to_line()


def test_sparse_depth_map_of_the_scan_matches_the_objects(
    frames: list[SyntheticFrame], tmp_path: Path
) -> None:
    write_dataset(tmp_path, frames=1, seed=7, val_fraction=0.0)
    frame = frames[0]  # the same generator state: [7, 0]
    training = tmp_path / "training"
    sparse = build_depth_map(
        training / "velodyne" / "000000.bin",
        training / "calib" / "000000.txt",
        training / "image_2" / "000000.png",
        dense=False,
    )
    for k, obj in enumerate(frame.objects):
        if obj.occlusion > 0:
            continue
        values = sparse[(frame.instance_ids == k + 1) & (sparse > 0)]
        assert values.size > 0
        assert np.median(values) == pytest.approx(obj.pos[2], abs=max(obj.l, obj.w))


def test_written_files_parse_and_repeat_byte_for_byte(tmp_path: Path) -> None:
    splits = write_dataset(tmp_path / "a", frames=3, seed=5, image_size=SMALL, val_fraction=0.34)
    write_dataset(tmp_path / "b", frames=3, seed=5, image_size=SMALL, val_fraction=0.34, workers=2)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 3 * 4 + 3
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    root = tmp_path / "a"
    assert splits == {"train": [0, 1], "val": [2], "trainval": [0, 1, 2]}
    assert read_split(root / "ImageSets" / "val.txt") == [2]
    frame = generate_frame(np.random.default_rng([5, 1]), image_size=SMALL)
    name = "000001"
    image = cv2.imread(str(root / "training" / "image_2" / f"{name}.png"))
    assert np.array_equal(image[..., ::-1], frame.image)
    assert np.allclose(read_calib(root / "training" / "calib" / f"{name}.txt").P, frame.calib.P)
    assert np.array_equal(read_velodyne(root / "training" / "velodyne" / f"{name}.bin"), frame.scan)
    labels = read_label(root / "training" / "label_2" / f"{name}.txt")
    assert [o.to_line() for o in labels] == [o.to_line() for o in frame.objects]


def test_calibration_scales_with_the_image() -> None:
    full, half = synthetic_calibration(), synthetic_calibration((621, 187))
    assert np.allclose(half.P[:, 0], full.P[:, 0] / 2)
    assert np.allclose(half.P[:, 1], full.P[:, 1] * 187 / 375)
    assert np.allclose(half.P[:, 2], full.P[:, 2]) and np.array_equal(half.V2C, full.V2C)
    with pytest.raises(ValueError, match="at least 16x16"):
        synthetic_calibration((8, 100))


def test_split_frames() -> None:
    assert split_frames(8, val_fraction=0.25) == {
        "train": list(range(6)),
        "val": [6, 7],
        "trainval": list(range(8)),
    }
    assert split_frames(1, val_fraction=0.25)["val"] == []
    assert split_frames(2, val_fraction=0.01)["val"] == [1]
    with pytest.raises(ValueError, match="val_fraction"):
        split_frames(4, val_fraction=1.0)


def test_cli_writes_a_kitti_tree(tmp_path: Path) -> None:
    out = tmp_path / "synthetic"
    cmd = [sys.executable, str(TOOL), "--out", str(out), "--frames", "3", "--seed", "1", "--size", "320x96"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, check=False)
    assert result.returncode == 0, result.stderr
    for folder, ext in (("image_2", "png"), ("calib", "txt"), ("label_2", "txt"), ("velodyne", "bin")):
        assert sorted(p.name for p in (out / "training" / folder).iterdir()) == [
            f"00000{i}.{ext}" for i in range(3)
        ]
    assert read_split(out / "ImageSets" / "trainval.txt") == [0, 1, 2]
    assert read_split(out / "ImageSets" / "train.txt") + read_split(out / "ImageSets" / "val.txt") == [
        0,
        1,
        2,
    ]
    assert cv2.imread(str(out / "training" / "image_2" / "000002.png")).shape == (96, 320, 3)
    # the teacher's depth maps come in the same call: make_depth_maps.py's files, byte for byte
    depth = out / "training" / "depth_dense"
    assert sorted(p.name for p in depth.iterdir()) == [f"00000{i}.png" for i in range(3)]
    again = tmp_path / "again"
    cmd_no_maps = [*cmd[:3], str(again), *cmd[4:], "--no-depth-maps"]
    assert subprocess.run(cmd_no_maps, capture_output=True, cwd=REPO_ROOT, check=False).returncode == 0
    assert not (again / "training" / "depth_dense").exists()
    maps = [sys.executable, str(REPO_ROOT / "tools" / "make_depth_maps.py"), "--data-dir", str(again)]
    assert subprocess.run(maps, capture_output=True, cwd=REPO_ROOT, check=False).returncode == 0
    for i in range(3):
        name = f"00000{i}.png"
        assert (depth / name).read_bytes() == (again / "training" / "depth_dense" / name).read_bytes()
    assert (cv2.imread(str(depth / "000000.png"), cv2.IMREAD_UNCHANGED) > 0).any()

    bad = subprocess.run([*cmd[:-1], "320by96"], capture_output=True, text=True, cwd=REPO_ROOT, check=False)
    assert bad.returncode != 0 and "--size must look like 1242x375" in bad.stderr


def test_cli_object_count_and_depth_range(tmp_path: Path) -> None:
    out = tmp_path / "near"
    cmd = [
        sys.executable,
        str(TOOL),
        "--out",
        str(out),
        "--frames",
        "4",
        "--size",
        "320x96",
        "--no-depth-maps",
    ]
    result = subprocess.run(
        [*cmd, "--objects", "3-3", "--depth-range", "8-20"], capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert result.returncode == 0, result.stderr
    for i in range(4):
        objects = read_label(out / "training" / "label_2" / f"00000{i}.txt")
        assert 1 <= len(objects) <= 3  # 3 drawn; a crowded or hidden one may be dropped
        assert all(8.0 - 0.005 <= obj.pos[2] <= 20.0 + 0.005 for obj in objects)  # label rounding
    assert sum(len(read_label(p)) for p in (out / "training" / "label_2").iterdir()) >= 8
    for flag, value, message in (
        ("--objects", "5-2", "--objects must be MIN-MAX"),
        ("--objects", "5", "expected LOW-HIGH"),
        ("--depth-range", "30-10", "--depth-range must be NEAR-FAR"),
        ("--workers", "0", "--workers must be >= 1, got 0"),
    ):
        bad = subprocess.run([*cmd, flag, value], capture_output=True, text=True, cwd=REPO_ROOT, check=False)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
