"""Camera and box geometry (lib/geometry.py), on hand-made cases and the real sample frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lib.geometry import (
    affine_transform,
    alpha_to_ry,
    alpha_to_ry_pixel,
    box3d_corners,
    box3d_to_box2d,
    get_affine_transform,
    project_to_image,
    rect_to_velo,
    ry_to_alpha,
    ry_to_alpha_pixel,
    to_homogeneous,
    unproject_to_rect,
    velo_to_rect,
    wrap_angle,
)
from lib.kitti_io import read_calib, read_label_table, read_velodyne

FRAMES = ("000000", "000001", "000002")


@pytest.fixture(scope="module")
def sample(kitti_sample_dir: Path) -> Path:
    return kitti_sample_dir / "training"


# --- against the real labels ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "row"), [("000001", 0), ("000001", 1), ("000002", 1)], ids=["truck", "car", "car2"]
)
def test_projected_3d_box_reproduces_the_2d_label(sample: Path, frame: str, row: int) -> None:
    # Un-truncated, un-occluded vehicles: the annotated 2D box is the hull of the 3D box.
    labels = read_label_table(sample / "label_2" / f"{frame}.txt")
    assert labels.names[row] in ("Car", "Truck") and labels.truncated[row] == 0 and labels.occluded[row] == 0
    calib = read_calib(sample / "calib" / f"{frame}.txt")
    corners = box3d_corners(labels.dims[row], labels.loc[row], labels.rotation_y[row])
    box = box3d_to_box2d(corners, calib.P2)
    assert corners.shape == (1, 8, 3) and box.shape == (1, 4)
    np.testing.assert_allclose(box[0], labels.bbox[row], atol=3.0)


@pytest.mark.parametrize("frame", FRAMES)
def test_label_alpha_is_yaw_minus_viewing_angle(sample: Path, frame: str) -> None:
    labels = read_label_table(sample / "label_2" / f"{frame}.txt")
    keep = labels.names != "DontCare"
    assert keep.any()
    alpha = ry_to_alpha(labels.rotation_y[keep], labels.loc[keep, 0], labels.loc[keep, 2])
    np.testing.assert_allclose(alpha, labels.alpha[keep], atol=0.02)  # labels have 2 decimals
    ry = alpha_to_ry(labels.alpha[keep], labels.loc[keep, 0], labels.loc[keep, 2])
    np.testing.assert_allclose(wrap_angle(ry - labels.rotation_y[keep]), 0.0, atol=0.02)


@pytest.mark.parametrize("frame", FRAMES)
def test_velo_rect_round_trip(sample: Path, frame: str) -> None:
    calib = read_calib(sample / "calib" / f"{frame}.txt")
    points = read_velodyne(sample / "velodyne" / f"{frame}.bin")[::50, :3]
    rect = velo_to_rect(points, calib)
    np.testing.assert_allclose(rect_to_velo(rect, calib), points, atol=1e-5)
    # x_rect = R0 (R_velo p + t_velo), one point at a time.
    for p, r in zip(points[:5].astype(np.float64), rect[:5], strict=True):
        np.testing.assert_allclose(r, calib.R0 @ (calib.V2C[:, :3] @ p + calib.V2C[:, 3]), atol=1e-9)
    # The Velodyne looks along +x, the camera along +z: ahead means ahead for both.
    assert np.corrcoef(rect[:, 2], points[:, 0])[0, 1] > 0.99


def test_project_unproject_round_trip(sample: Path) -> None:
    P = read_calib(sample / "calib" / "000000.txt").P2  # with the P2 baseline offsets
    rng = np.random.default_rng(0)
    pts = np.stack([rng.uniform(-20, 20, 50), rng.uniform(-2, 3, 50), rng.uniform(2, 80, 50)], axis=1)
    uv, depth = project_to_image(pts, P)
    np.testing.assert_allclose(depth, pts[:, 2] + P[2, 3])  # P's third row: z + its z offset
    np.testing.assert_allclose(unproject_to_rect(uv, depth, P), pts, atol=1e-9)


def test_project_by_hand() -> None:
    P = np.array([[100.0, 0.0, 50.0, 10.0], [0.0, 200.0, 40.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    uv, depth = project_to_image(np.array([[1.0, -0.5, 5.0]]), P)
    np.testing.assert_allclose(uv, [[(100 + 250 + 10) / 5, (-100 + 200) / 5]])  # (72, 20)
    np.testing.assert_allclose(depth, [5.0])
    np.testing.assert_array_equal(to_homogeneous(np.array([[1.0, 2.0]])), [[1.0, 2.0, 1.0]])


# --- boxes ----------------------------------------------------------------------------------


def test_corners_by_hand_ry_zero() -> None:
    corners = box3d_corners(np.array([[2.0, 1.0, 4.0]]), np.array([[1.0, 2.0, 10.0]]), np.array([0.0]))
    # h = 2 (up is −y), w = 1 along z, l = 4 along x, bottom centre (1, 2, 10).
    expected = [
        [3.0, 2.0, 10.5],
        [3.0, 2.0, 9.5],
        [-1.0, 2.0, 9.5],
        [-1.0, 2.0, 10.5],
        [3.0, 0.0, 10.5],
        [3.0, 0.0, 9.5],
        [-1.0, 0.0, 9.5],
        [-1.0, 0.0, 10.5],
    ]
    np.testing.assert_allclose(corners[0], expected, atol=1e-12)


def test_corners_by_hand_ry_half_pi() -> None:
    corners = box3d_corners(np.array([[2.0, 1.0, 4.0]]), np.array([[1.0, 2.0, 10.0]]), np.array([np.pi / 2]))
    # ry = π/2 turns the length (box +x) onto rect −z: (x, z) → (z, −x).
    expected = [
        [1.5, 2.0, 8.0],
        [0.5, 2.0, 8.0],
        [0.5, 2.0, 12.0],
        [1.5, 2.0, 12.0],
        [1.5, 0.0, 8.0],
        [0.5, 0.0, 8.0],
        [0.5, 0.0, 12.0],
        [1.5, 0.0, 12.0],
    ]
    np.testing.assert_allclose(corners[0], expected, atol=1e-12)


def test_box3d_to_box2d_by_hand() -> None:
    P = np.array([[100.0, 0.0, 50.0, 0.0], [0.0, 100.0, 40.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    corners = box3d_corners(np.array([[2.0, 2.0, 2.0]]), np.array([[0.0, 1.0, 10.0]]), np.array([0.0]))
    # Nearest face z = 9 spans x, y in [−1, 1] and [−1, 1]: u = 50 ± 100/9, v = 40 ± 100/9.
    box = box3d_to_box2d(corners, P)
    np.testing.assert_allclose(box, [[50 - 100 / 9, 40 - 100 / 9, 50 + 100 / 9, 40 + 100 / 9]])
    np.testing.assert_allclose(
        box3d_to_box2d(corners, P, image_size=(55, 45)), [[50 - 100 / 9, 40 - 100 / 9, 54, 44]]
    )


# --- angles ---------------------------------------------------------------------------------


def test_wrap_angle() -> None:
    np.testing.assert_allclose(
        wrap_angle(np.array([0.0, np.pi, -np.pi, 1.5 * np.pi, -2.5 * np.pi])),
        [0, -np.pi, -np.pi, -0.5 * np.pi, -0.5 * np.pi],
    )
    wrapped = wrap_angle(np.linspace(-10, 10, 101))
    assert ((wrapped >= -np.pi) & (wrapped < np.pi)).all()


def test_alpha_ry_by_hand_and_round_trip() -> None:
    # A car straight ahead (x = 0) has alpha = ry; one at 45° to the right has alpha = ry − π/4.
    assert ry_to_alpha(0.3, 0.0, 10.0) == pytest.approx(0.3)
    assert ry_to_alpha(0.3, 10.0, 10.0) == pytest.approx(0.3 - np.pi / 4)
    assert alpha_to_ry(-3.0, -10.0, 10.0) == pytest.approx(wrap_angle(-3.0 - np.pi / 4))
    ry = np.linspace(-np.pi, np.pi, 13, endpoint=False)
    x, z = np.linspace(-20, 20, 13), np.linspace(3, 60, 13)
    np.testing.assert_allclose(alpha_to_ry(ry_to_alpha(ry, x, z), x, z), ry, atol=1e-12)


def test_pixel_form_matches_location_form_without_baseline() -> None:
    # GUPNet's atan2(u − cu, fu) equals atan2(x, z) when P has no translation column.
    P = np.array([[700.0, 0.0, 600.0, 0.0], [0.0, 700.0, 180.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    x, z = np.array([-15.0, 0.0, 4.0]), np.array([30.0, 12.0, 8.0])
    u = 700.0 * x / z + 600.0
    ry = np.array([1.0, -2.0, 3.0])
    np.testing.assert_allclose(ry_to_alpha_pixel(ry, u, P), ry_to_alpha(ry, x, z), atol=1e-12)
    np.testing.assert_allclose(alpha_to_ry_pixel(ry_to_alpha_pixel(ry, u, P), u, P), ry, atol=1e-12)


# --- affine crops ---------------------------------------------------------------------------


def test_affine_by_hand() -> None:
    # GUPNet's test-time warp: the whole 1242x375 image onto 1280x384, scale from the width.
    trans = get_affine_transform(np.array([621.0, 187.5]), np.array([1242.0, 375.0]), np.array([1280, 384]))
    s = 1280 / 1242
    np.testing.assert_allclose(trans, [[s, 0, 640 - s * 621], [0, s, 192 - s * 187.5]])
    np.testing.assert_allclose(affine_transform(np.array([621.0, 187.5]), trans), [640.0, 192.0])
    # Only the crop width sets the scale: a crop twice as tall gives the same matrix.
    tall = get_affine_transform(np.array([621.0, 187.5]), np.array([1242.0, 750.0]), np.array([1280, 384]))
    np.testing.assert_allclose(tall, trans)


def test_affine_and_inverse_compose_to_identity() -> None:
    center, crop, out = np.array([500.0, 210.0]), np.array([900.0, 270.0]), np.array([1280, 384])
    fwd = get_affine_transform(center, crop, out)
    inv = get_affine_transform(center, crop, out, inv=True)
    bottom = np.array([[0.0, 0.0, 1.0]])
    np.testing.assert_allclose(np.vstack([inv, bottom]) @ np.vstack([fwd, bottom]), np.eye(3), atol=1e-12)
    pts = np.array([[[0.0, 0.0], [1241.0, 374.0]], [[500.0, 210.0], [37.5, 99.0]]])  # (2, 2, 2)
    np.testing.assert_allclose(affine_transform(affine_transform(pts, fwd), inv), pts, atol=1e-9)
    np.testing.assert_allclose(affine_transform(pts, fwd).shape, (2, 2, 2))
