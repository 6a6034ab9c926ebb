"""The synthetic generator's depth-ambiguity options: ``camera_height`` and ``object_scale``
(lib/datasets/synthetic_scene.py, ``--camera-height`` / ``--object-scale`` of
tools/make_synthetic_kitti.py). Off by default; the default frames themselves are pinned by the
input digests of tests/parity/test_targets_parity.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lib.datasets.synthetic import generate_frame, render_scene, synthetic_calibration
from lib.datasets.synthetic_scene import CAMERA_HEIGHT, SIZE_MEAN, SIZE_STD, SceneObject, sample_road
from lib.geometry import project_to_image, velo_to_rect
from lib.kitti_io import read_label, read_split

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL = REPO_ROOT / "tools" / "make_synthetic_kitti.py"
SMALL = (320, 96)
TOL = 0.1  # m: 5 sigma of the 2 cm LiDAR range noise


def test_options_off_are_the_default_frame() -> None:
    a = generate_frame(np.random.default_rng([2, 0]), image_size=SMALL)
    b = generate_frame(np.random.default_rng([2, 0]), image_size=SMALL, camera_height=None, object_scale=None)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.scan, b.scan)
    assert all(o.pos[1] == CAMERA_HEIGHT for o in a.objects)


def test_camera_height_moves_the_ground_not_the_calibration() -> None:
    heights = []
    for i in range(10):
        frame = generate_frame(
            np.random.default_rng([3, i]), image_size=SMALL, num_objects=(3, 3), camera_height=(1.2, 2.1)
        )
        assert np.array_equal(frame.calib.P2, synthetic_calibration(SMALL).P2)  # KITTI's, as always
        ys = {o.pos[1] for o in frame.objects}
        assert len(ys) == 1  # every object stands on the frame's one road
        heights.append(ys.pop())
        rect = velo_to_rect(frame.scan[:, :3], frame.calib)
        # Most points are ground points: at the frame's road height, none at the nominal one.
        assert np.mean(np.abs(rect[:, 1] - heights[-1]) < TOL) > 0.5
        if abs(heights[-1] - CAMERA_HEIGHT) > 2 * TOL:
            assert np.mean(np.abs(rect[:, 1] - CAMERA_HEIGHT) < TOL) < 0.05
    assert 1.2 <= min(heights) and max(heights) <= 2.1
    assert max(heights) - min(heights) > 0.4  # 10 uniform draws over 0.9 m


def test_the_ground_contact_gives_a_wrong_depth_and_the_lidar_the_right_one() -> None:
    """A car 20 m ahead, the road 2.0 m below the camera: its bottom edge is where a car 20 * 1.65
    / 2.0 = 16.5 m ahead would touch a road at KITTI's 1.65 m; its LiDAR points say 20 m."""
    calib = synthetic_calibration(SMALL)
    road = sample_road(np.random.default_rng(0), camera_height=(2.0, 2.0))
    assert road.ground_y == 2.0
    car = SceneObject("Car", dims=np.array([1.5, 1.6, 3.9]), loc=np.array([0.0, 2.0, 20.0]), ry=0.0)
    frame = render_scene([car], rng=np.random.default_rng(1), calib=calib, image_size=SMALL, road=road)
    P = calib.P2
    uv, _ = project_to_image(np.array([[0.0, 2.0, 20.0]]), P)
    v = uv[0, 1]  # the image row of the car's bottom centre
    # Rect z at which row v meets the plane y = 1.65 (solve v (z + p23) = fv h + p13 + cv z).
    z_nominal = (P[1, 1] * CAMERA_HEIGHT + P[1, 3] - v * P[2, 3]) / (v - P[1, 2])
    assert z_nominal == pytest.approx(16.5, abs=0.1)
    near_edge, _ = project_to_image(np.array([[0.0, 2.0, 19.2]]), P)
    rows = np.flatnonzero((frame.instance_ids == 1).any(axis=1))
    assert rows.max() == pytest.approx(near_edge[0, 1], abs=1.0)  # drawn where it stands
    rect = velo_to_rect(frame.scan[:, :3], frame.calib)
    on_car = rect[:, 1] < 2.0 - TOL
    assert on_car.sum() > 20
    # The car is 1.6 m wide across rect z (ry = 0): its near face is at z = 19.2, its far one 20.8.
    assert rect[on_car, 2].min() == pytest.approx(19.2, abs=TOL) and rect[on_car, 2].max() < 20.8 + TOL


def test_object_scale_spreads_the_sizes() -> None:
    ratios = []
    for i in range(12):
        frame = generate_frame(
            np.random.default_rng([4, i]), image_size=SMALL, num_objects=(4, 4), object_scale=(0.7, 1.3)
        )
        for obj in frame.objects:
            mean, std = np.array(SIZE_MEAN[obj.cls_type]), np.array(SIZE_STD[obj.cls_type])
            dims = np.array([obj.h, obj.w, obj.l])
            # One factor in [0.7, 1.3] times a size within 2 std of the mean (label rounding: 0.01).
            assert (dims >= 0.7 * (mean - 2 * std) - 0.01).all() and (
                dims <= 1.3 * (mean + 2 * std) + 0.01
            ).all()
            ratios.append(obj.h / mean[0])
    # Without the option h / mean stays within 1 -+ 2 std / mean (Car: 0.87-1.13).
    assert min(ratios) < 0.82 and max(ratios) > 1.18


@pytest.mark.parametrize("bounds", [(2.0, 1.0), (0.0, 1.0)])
def test_bad_ranges_are_refused(bounds: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="camera_height must be"):
        generate_frame(np.random.default_rng(0), image_size=SMALL, camera_height=bounds)
    with pytest.raises(ValueError, match="object_scale must be"):
        generate_frame(np.random.default_rng(0), image_size=SMALL, object_scale=bounds)


def test_cli_options(tmp_path: Path) -> None:
    out = tmp_path / "data"
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
    flags = ["--camera-height", "1.4-1.9", "--object-scale", "0.8-1.2"]
    result = subprocess.run([*cmd, *flags], capture_output=True, text=True, cwd=REPO_ROOT, check=False)
    assert result.returncode == 0, result.stderr
    ys = [
        obj.pos[1]
        for i in read_split(out / "ImageSets" / "trainval.txt")
        for obj in read_label(out / "training" / "label_2" / f"{i:06d}.txt")
    ]
    assert ys and all(1.4 <= y <= 1.9 for y in ys) and len(set(ys)) > 1
    for flag, value in [("--camera-height", "2-1"), ("--object-scale", "0-1.2"), ("--object-scale", "big")]:
        bad = subprocess.run([*cmd, flag, value], capture_output=True, text=True, cwd=REPO_ROOT, check=False)
        assert bad.returncode == 2 and flag in bad.stderr, bad.stderr
