"""Flip (with the P2 re-fit), random crop, depth warp and colour augmentation (lib/datasets/augment.py)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lib.datasets.augment import (
    PCA_EIGVAL,
    PCA_EIGVEC,
    augment_sample,
    color_jitter,
    flip_objects,
    flip_projection,
    input_window,
    sample_crop,
    warp_depth,
)
from lib.decode import FeatureToOriginal
from lib.geometry import affine_transform, box3d_corners, get_affine_transform, project_to_image, wrap_angle
from lib.kitti_io import read_calib, read_label
from lib.models.detector import boxes_to_original

IMAGE_SIZE = (1242, 375)


@pytest.fixture
def P2(kitti_sample_dir):
    return read_calib(kitti_sample_dir / "training" / "calib" / "000002.txt").P2


@pytest.fixture
def objects(kitti_sample_dir):
    return read_label(kitti_sample_dir / "training" / "label_2" / "000000.txt")


def _points_in_view(P, n=200, seed=0):
    """Rect points spread over the camera's view, 3..70 m away."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(3, 70, n)
    x = rng.uniform(-0.6, 0.6, n) * z
    y = rng.uniform(-0.1, 0.25, n) * z
    return np.stack([x, y, z], axis=1)


def test_flip_projection_reprojects_mirrored_points(P2):
    flipped = flip_projection(P2, IMAGE_SIZE)
    pts = _points_in_view(P2)
    uv, _ = project_to_image(pts, P2)
    uv_flipped, _ = project_to_image(pts * [-1, 1, 1], flipped)
    np.testing.assert_allclose(uv_flipped[:, 0], IMAGE_SIZE[0] - 1 - uv[:, 0], atol=0.5)
    np.testing.assert_allclose(uv_flipped[:, 1], uv[:, 1], atol=0.5)
    # KITTI's P2 has the structure the fit assumes, so the fit is exact: cu' = W - 1 - cu.
    assert flipped[0, 2] == pytest.approx(IMAGE_SIZE[0] - 1 - P2[0, 2], abs=1e-6)
    assert flipped[0, 0] == pytest.approx(P2[0, 0], rel=1e-9)
    assert flipped[2, 3] == P2[2, 3]


def test_flip_projection_twice_is_identity(P2):
    np.testing.assert_allclose(flip_projection(flip_projection(P2, IMAGE_SIZE), IMAGE_SIZE), P2, atol=1e-6)


def test_flip_objects_mirrors_and_twice_is_identity(objects):
    width = IMAGE_SIZE[0]
    once = flip_objects(objects, width)
    for a, b in zip(objects, once, strict=True):
        np.testing.assert_allclose(
            b.box2d, [width - 1 - a.box2d[2], a.box2d[1], width - 1 - a.box2d[0], a.box2d[3]]
        )
        np.testing.assert_allclose(b.pos, a.pos * [-1, 1, 1])
        assert wrap_angle(b.ry - (np.pi - a.ry)) == pytest.approx(0.0, abs=1e-12)
    twice = flip_objects(once, width)
    for a, b in zip(objects, twice, strict=True):
        np.testing.assert_allclose(b.box2d, a.box2d)
        np.testing.assert_allclose(b.pos, a.pos)
        assert wrap_angle(b.ry - a.ry) == pytest.approx(0.0, abs=1e-12)
        assert wrap_angle(b.alpha - a.alpha) == pytest.approx(0.0, abs=1e-12)


def test_flipped_labels_project_onto_the_flipped_pixels(objects, P2):
    """A mirrored box's corners, projected with the re-fitted P2, land on the mirrored pixels."""
    width = IMAGE_SIZE[0]
    obj, flipped_obj = objects[0], flip_objects(objects[:1], width)[0]
    corners = box3d_corners([[obj.h, obj.w, obj.l]], obj.pos, [obj.ry])[0]
    corners_f = box3d_corners(
        [[flipped_obj.h, flipped_obj.w, flipped_obj.l]], flipped_obj.pos, [flipped_obj.ry]
    )[0]
    uv, _ = project_to_image(corners, P2)
    uv_f, _ = project_to_image(corners_f, flip_projection(P2, IMAGE_SIZE))
    # The mirrored box has the same corner set (in another order): compare sorted pixels.
    expected = np.stack([width - 1 - uv[:, 0], uv[:, 1]], axis=1)
    np.testing.assert_allclose(np.sort(uv_f, axis=0), np.sort(expected, axis=0), atol=0.5)


def test_sample_crop_follows_gupnet_formula():
    size = np.array(IMAGE_SIZE, dtype=np.float64)
    center, crop = sample_crop(IMAGE_SIZE, np.random.default_rng(3), random_crop=1.0, scale=0.4, shift=0.1)
    ref = np.random.default_rng(3)
    assert ref.random() < 1.0
    s = np.clip(ref.standard_normal() * 0.4 + 1, 0.6, 1.4)
    d = np.clip(ref.standard_normal(2) * 0.1, -0.2, 0.2)
    np.testing.assert_allclose(crop, size * s)
    np.testing.assert_allclose(center, size / 2 + size * d)

    for seed in range(50):
        center, crop = sample_crop(
            IMAGE_SIZE, np.random.default_rng(seed), random_crop=1.0, scale=0.4, shift=0.1
        )
        ratio = crop / size
        assert ratio[0] == pytest.approx(ratio[1]) and 0.6 <= ratio[0] <= 1.4
        assert np.all(np.abs(center - size / 2) <= 0.2 * size + 1e-9)
    center, crop = sample_crop(IMAGE_SIZE, np.random.default_rng(0), random_crop=0.0, scale=0.4, shift=0.1)
    np.testing.assert_array_equal(crop, size)
    np.testing.assert_array_equal(center, size / 2)


def test_warp_depth_never_mixes_values():
    rng = np.random.default_rng(0)
    depth = rng.integers(0, 4, (60, 80)).astype(np.float32) * 10  # 0 (empty), 10, 20, 30 m
    trans = get_affine_transform(np.array([37.3, 31.1]), np.array([53.0, 40.0]), np.array([96, 32]))
    out = warp_depth(depth, trans, (96, 32))
    assert out.shape == (32, 96)
    assert set(np.unique(out)) <= {0.0, 10.0, 20.0, 30.0}


def test_color_jitter_is_seeded_pure_and_global():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (8, 10, 3)).astype(np.float32)
    before = image.copy()
    a = color_jitter(image, np.random.default_rng(5))
    b = color_jitter(image, np.random.default_rng(5))
    c = color_jitter(image, np.random.default_rng(6))
    np.testing.assert_array_equal(image, before)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # On a grey image every operation and the lighting shift are the same at every pixel.
    grey = np.full((8, 10, 3), 0.5, dtype=np.float32)
    out = color_jitter(grey, np.random.default_rng(1))
    np.testing.assert_allclose(out, np.broadcast_to(out[0, 0], out.shape), atol=1e-6)


def test_color_jitter_matches_the_operations_one_by_one():
    """The single-pass blend equals CenterNet's ops applied in turn (same draws, float64)."""
    image = np.random.default_rng(0).uniform(0, 1, (6, 7, 3)).astype(np.float32)
    for seed in range(4):
        rng = np.random.default_rng(seed)
        out = image.astype(np.float64)
        gray = out @ [0.299, 0.587, 0.114]  # BT.601 luma
        gray_mean = gray.mean()
        for op in rng.permutation(3):
            f = 1 + rng.uniform(-0.4, 0.4)
            blend_to = [0.0, gray_mean, gray[..., None]][op]  # brightness, contrast, saturation
            out = out * f + (1 - f) * blend_to
        out = out + PCA_EIGVEC.astype(np.float64) @ (PCA_EIGVAL * rng.normal(scale=0.1, size=3))
        np.testing.assert_allclose(color_jitter(image, np.random.default_rng(seed)), out, atol=1e-6)


def test_augment_sample_without_rng_is_the_full_image_warp(objects, P2):
    image = np.zeros((IMAGE_SIZE[1], IMAGE_SIZE[0], 3), dtype=np.uint8)
    image[100:120, 300:340] = 255
    aug = augment_sample(
        image, None, objects, P2, None, resolution=(640, 192), random_flip=1.0, random_crop=1.0
    )
    assert not aug.flipped and aug.crop_scale == 1.0 and aug.depth is None
    np.testing.assert_allclose(
        aug.trans, get_affine_transform(np.array(IMAGE_SIZE) / 2, np.array(IMAGE_SIZE), (640, 192))
    )
    np.testing.assert_array_equal(aug.P2, P2)
    assert aug.image.shape == (192, 640, 3) and aug.image.dtype == np.float32
    assert aug.image.max() == pytest.approx(1.0) and aug.image.min() == 0.0


def test_augment_sample_flip_moves_everything_together(objects, P2):
    """Flip only: the image is mirrored, and the mirrored 3D centre projects onto the mirrored pixel."""
    rng_image = np.random.default_rng(0)
    image = rng_image.integers(0, 255, (IMAGE_SIZE[1], IMAGE_SIZE[0], 3), dtype=np.uint8)
    depth = rng_image.uniform(1, 50, (IMAGE_SIZE[1], IMAGE_SIZE[0])).astype(np.float32)
    objects_before = copy.deepcopy(objects)
    aug = augment_sample(
        image,
        depth,
        objects,
        P2,
        np.random.default_rng(0),
        resolution=IMAGE_SIZE,
        random_flip=1.0,
        random_crop=0.0,
    )
    assert aug.flipped
    # Inputs untouched (pure).
    for a, b in zip(objects, objects_before, strict=True):
        np.testing.assert_array_equal(a.box2d, b.box2d)
        np.testing.assert_array_equal(a.pos, b.pos)
    # resolution = image size and no crop: trans is the identity up to GUPNet's centring (0 here).
    np.testing.assert_allclose(aug.trans, [[1, 0, 0], [0, 1, 0]], atol=1e-9)
    np.testing.assert_allclose(aug.image, image[:, ::-1].astype(np.float32) / 255, atol=1e-6)
    np.testing.assert_array_equal(aug.depth, depth[:, ::-1])
    obj, obj_f = objects[0], aug.objects[0]
    uv, _ = project_to_image((obj.pos + [0, -obj.h / 2, 0])[None], P2)
    uv_f, _ = project_to_image((obj_f.pos + [0, -obj_f.h / 2, 0])[None], aug.P2)
    np.testing.assert_allclose(uv_f[0], [IMAGE_SIZE[0] - 1 - uv[0, 0], uv[0, 1]], atol=0.5)


def test_augment_sample_is_deterministic_per_generator(objects, P2):
    image = np.random.default_rng(0).integers(0, 255, (IMAGE_SIZE[1], IMAGE_SIZE[0], 3), dtype=np.uint8)
    kwargs = dict(resolution=(320, 96), random_flip=0.5, random_crop=1.0, color_aug=True)
    a = augment_sample(image, None, objects, P2, np.random.default_rng([1, 2, 3]), **kwargs)
    b = augment_sample(image, None, objects, P2, np.random.default_rng([1, 2, 3]), **kwargs)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.trans, b.trans)
    assert a.crop_scale == b.crop_scale


# ------------------------------------------------------------------ input window (coord_range)
BOX = np.array([[100.3, 50.7], [700.2, 360.9]])  # a 2D box (x1, y1), (x2, y2) in original px


def _to_feature(points: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """Original px → feature px (stride 4) through a sample's input affine."""
    return affine_transform(points, trans) / 4


@pytest.mark.parametrize("resolution", [(1280, 384), (384, 128)])
@pytest.mark.parametrize("random_crop", [0.0, 1.0])
def test_exact_window_inverts_the_input_affine(P2, resolution, random_crop):
    """A box through the input affine and back through coord_range lands on itself, by the RoI
    head's mapping (boxes_to_original, float32 as batches ship it) and by decoding's."""
    image = np.zeros((IMAGE_SIZE[1], IMAGE_SIZE[0], 3), np.uint8)
    grid = np.array(resolution) / 4
    for seed in range(6):
        aug = augment_sample(image, None, [], P2, np.random.default_rng(seed), resolution=resolution,
                             random_flip=0.5, random_crop=random_crop)  # fmt: skip
        window = input_window(aug.center, aug.crop_size, resolution, inverse_affine="exact")
        feat = _to_feature(BOX, aug.trans)  # (2, 2)
        decoded = FeatureToOriginal(window, grid).points(feat)
        assert np.abs(decoded - BOX).max() < 1e-9
        roi = boxes_to_original(
            torch.tensor(feat.reshape(1, 4), dtype=torch.float32),
            torch.tensor(window[None], dtype=torch.float32),
            feat_hw=(int(grid[1]), int(grid[0])),
        )
        assert np.abs(roi.numpy().reshape(2, 2) - BOX).max() < 1e-3


def test_windows_by_hand_at_384x128():
    """1242×375 at 384×128: s = 384/1242, so the 128 input rows cover 128/s = 414 px about the
    centre row 187.5 (exact: y from -19.5 to 394.5); GUPNet's window is the frame, so y maps
    with 375/414 = 0.9058 of the true scale: heights 0.906× too small, whatever the crop."""
    center, size = np.array([621.0, 187.5]), np.array([1242.0, 375.0])
    exact = input_window(center, size, (384, 128), inverse_affine="exact")
    np.testing.assert_allclose(exact, [[0.0, -19.5], [1242.0, 394.5]], atol=1e-12)
    reference = input_window(center, size, (384, 128), inverse_affine="reference")
    np.testing.assert_array_equal(reference, [[0.0, 0.0], [1242.0, 375.0]])
    np.testing.assert_allclose(  # 1280×384: 372.6 rows, GUPNet's y 0.6 % too large (1.2 px at the edges)
        input_window(center, size, (1280, 384)), [[0.0, 1.2], [1242.0, 373.8]], atol=1e-12
    )
    image = np.zeros((375, 1242, 3), np.uint8)
    for seed in range(4):  # random crops: the same y factor
        rng = np.random.default_rng(seed)
        aug = augment_sample(image, None, [], np.eye(3, 4), rng, resolution=(384, 128), random_crop=1.0)
        feat = _to_feature(BOX, aug.trans)
        windows = [
            input_window(aug.center, aug.crop_size, (384, 128), inverse_affine=m)
            for m in ("exact", "reference")
        ]
        exact_box, ref_box = (FeatureToOriginal(w, np.array([96.0, 32.0])).points(feat) for w in windows)
        heights = [b[1, 1] - b[0, 1] for b in (exact_box, ref_box)]
        assert heights[1] / heights[0] == pytest.approx(375 / 414, rel=1e-9)
        assert heights[0] == pytest.approx(BOX[1, 1] - BOX[0, 1], abs=1e-9)
        np.testing.assert_allclose(ref_box[:, 0], BOX[:, 0], atol=1e-9)  # x is exact in both
    with pytest.raises(ValueError, match="dataset.inverse_affine: 'approx' is not one of"):
        input_window(center, size, (384, 128), inverse_affine="approx")
