"""GUPNet / DID-M3D / RPD targets and the foreground mask (lib/datasets/targets.py, masks.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lib.box_coding import decode_heading
from lib.config import load_config
from lib.constants import CLASS_TO_ID, MEAN_SIZES
from lib.datasets.masks import foreground_mask
from lib.datasets.targets import (
    build_detection_targets,
    build_did_depth_targets,
    build_rpd_depth,
    build_targets,
)
from lib.depth_bins import RpdSettings, expected_depth, soft_targets
from lib.geometry import affine_transform, get_affine_transform, project_to_image, ry_to_alpha_pixel
from lib.kitti_io import Object3d

# A KITTI-like camera (frame 000002's P2, rounded) and a 1242 x 375 image warped to 640 x 192.
P2 = np.array([[721.54, 0.0, 609.56, 44.86], [0.0, 721.54, 172.85, 0.2163], [0.0, 0.0, 1.0, 0.0027]])
IMAGE_SIZE = np.array([1242.0, 375.0])
RESOLUTION = (640, 192)
FEATURE = (160, 48)
TRANS = get_affine_transform(IMAGE_SIZE / 2, IMAGE_SIZE, np.array(RESOLUTION))
BINS = RpdSettings.from_config(
    load_config(Path(__file__).resolve().parents[2] / "configs" / "base.yaml")
).bins


def _car(x=2.0, z=20.0, *, cls="Car", box=None, truncation=0.0, occlusion=0, h=1.5, ry=0.3) -> Object3d:
    """An object with a box of roughly its projected size around its projected 3D centre."""
    pos = np.array([x, 1.6, z])
    if box is None:
        uv, _ = project_to_image((pos + [0, -h / 2, 0])[None], P2)
        u, v = uv[0]
        half_w, half_h = 1.8 * 721.54 / z / 2, h * 721.54 / z / 2
        box = np.array([u - half_w, v - half_h, u + half_w, v + half_h])
    return Object3d(cls, truncation, occlusion, 0.0, np.asarray(box, float), h, 1.6, 3.9, pos, ry)


def _targets(objects, **kwargs):
    kwargs = {"feature_size": FEATURE, "downsample": 4, **kwargs}
    return build_detection_targets(objects, P2, TRANS, **kwargs)


def test_detection_targets_peak_offsets_and_sizes():
    car = _car()
    t = _targets([car])
    uv, _ = project_to_image((car.pos + [0, -car.h / 2, 0])[None], P2)
    centre = affine_transform(uv[0], TRANS) / 4  # projected 3D centre, feature px
    cx, cy = np.floor(centre).astype(int)
    assert t["heatmap"][1, cy, cx] == 1.0 and t["heatmap"][1].max() == 1.0
    assert t["heatmap"][0].max() == 0.0 and t["heatmap"][2].max() == 0.0
    assert t["mask_2d"].tolist() == [True] + [False] * 49
    assert t["indices"][0] == cy * FEATURE[0] + cx and t["cls_ids"][0] == CLASS_TO_ID["Car"]
    np.testing.assert_allclose([cx, cy] + t["offset_3d"][0], centre, atol=1e-5)
    box = np.concatenate([affine_transform(car.box2d[:2], TRANS), affine_transform(car.box2d[2:], TRANS)]) / 4
    np.testing.assert_allclose(t["box2d"][0], box, atol=1e-4)
    np.testing.assert_allclose([cx, cy] + t["offset_2d"][0], (box[:2] + box[2:]) / 2, atol=1e-4)
    np.testing.assert_allclose(t["size_2d"][0], box[2:] - box[:2], atol=1e-4)
    assert t["depth"][0, 0] == pytest.approx(20.0)
    np.testing.assert_allclose(t["src_size_3d"][0], [1.5, 1.6, 3.9])
    np.testing.assert_allclose(t["size_3d"][0], np.array([1.5, 1.6, 3.9]) - MEAN_SIZES[1], atol=1e-6)
    alpha = ry_to_alpha_pixel(car.ry, (car.box2d[0] + car.box2d[2]) / 2, P2)
    assert decode_heading(t["heading_bin"][0, 0], t["heading_res"][0, 0]) == pytest.approx(alpha, abs=1e-6)
    for key, shape, dtype in [
        ("heatmap", (3, 48, 160), np.float32),
        ("indices", (50,), np.int64),
        ("heading_bin", (50, 1), np.int64),
        ("heading_res", (50, 1), np.float32),
        ("box2d", (50, 4), np.float32),
    ]:
        assert t[key].shape == shape and t[key].dtype == dtype, key


def test_detection_targets_filters_and_slots():
    objects = [
        _car(cls="DontCare"),  # slot 0: not trained
        _car(z=1.5),  # slot 1: closer than 2 m
        _car(box=[100, 100, 140, 120]),  # slot 2: 21 px tall, no KITTI difficulty
        _car(occlusion=3),  # slot 3: no KITTI difficulty
        _car(x=-40.0),  # slot 4: centre left of the image, outside the grid
        _car(cls="Pedestrian", x=-3.0, z=15.0),  # slot 5: kept
        _car(cls="Van", x=4.0, z=30.0),  # slot 6: paints Car only with class merging
        _car(x=1.0, z=40.0),  # slot 7: beyond max_objs=7
    ]
    t = _targets(objects, max_objs=7)
    assert t["mask_2d"].tolist() == [False] * 5 + [True, False]
    assert t["cls_ids"][5] == CLASS_TO_ID["Pedestrian"]
    assert t["heatmap"][1].max() == 0.0  # no car kept, Van not merged
    merged = _targets(objects, max_objs=7, class_merging=True)
    assert merged["mask_2d"].tolist() == t["mask_2d"].tolist()  # Van: heatmap only
    assert merged["heatmap"][1].max() == 1.0
    only_cars = _targets(objects, writelist=("Car",))
    assert np.flatnonzero(only_cars["mask_2d"]).tolist() == [7]  # max_objs=50 reaches the last car
    with pytest.raises(ValueError, match="Van"):
        _targets(objects, writelist=("Car", "Van"))


def test_did_depth_targets_from_constant_and_partial_maps():
    boxes = np.zeros((3, 4), dtype=np.float32)
    boxes[1] = [10, 5, 24, 19]  # feature px, inside a 48 x 64 grid
    depth = np.array([[0.0], [20.0], [0.0]], dtype=np.float32)
    mask = np.array([False, True, False])

    vis, att, keep = build_did_depth_targets(np.full((48, 64), 21.0, np.float32), boxes, depth, mask)
    assert vis.shape == att.shape == keep.shape == (3, 7, 7) and keep.dtype == bool
    assert keep[1].all() and not keep[0].any() and not keep[2].any()
    np.testing.assert_allclose(vis[1], 21.0, atol=1e-5)
    np.testing.assert_allclose(att[1], -1.0, atol=1e-5)

    far = build_did_depth_targets(np.full((48, 64), 24.0, np.float32), boxes, depth, mask)
    assert not far[2].any() and far[0].max() == 0.0  # |d - z| = 4 m >= 3 m

    # Left half of the box has depth, right half none: kept cells carry exactly 19 m, never a
    # blend with the empty pixels; the right columns are dropped.
    half = np.zeros((48, 64), np.float32)
    half[:, :17] = 19.0
    vis, att, keep = build_did_depth_targets(half, boxes, depth, mask)
    assert keep[1, :, 0].all() and not keep[1, :, -1].any()
    np.testing.assert_allclose(vis[1][keep[1]], 19.0, atol=1e-5)
    np.testing.assert_allclose(att[1][keep[1]], 1.0, atol=1e-5)
    assert np.all(vis[1][~keep[1]] == 0) and np.all(att[1][~keep[1]] == 0)

    none = build_did_depth_targets(None, boxes, depth, mask)
    assert not any(a.any() for a in none)


def test_rpd_targets_decode_to_scaled_depth():
    bins = BINS
    # 70 m x 1.2 = 84 m is beyond depth_max; 50 m x 1.2 = 60 m is below the last bin centre
    # (64.3 m), so the two-hot code inverts exactly in bin space.
    depth = np.array([[0.0, 10.0, 30.0], [50.0, 1.0, 70.0]], dtype=np.float32)
    rpd_depth, mask = build_rpd_depth(
        depth, crop_scale=1.2, bins=bins, supervise_beyond=False, feature_size=(3, 2)
    )
    assert rpd_depth.dtype == np.float32 and mask.tolist() == [[False, True, True], [True, False, False]]
    np.testing.assert_array_equal(rpd_depth, depth * np.float32(1.2))
    # what the criterion makes of it on the device: the two-hot code of the scaled depth
    target, valid = soft_targets(torch.from_numpy(rpd_depth)[None], bins)
    assert target.shape == (1, 81, 2, 3) and target.dtype == torch.float32
    np.testing.assert_array_equal(valid[0].numpy(), mask)
    decoded = expected_depth(target[0].numpy(), bins, axis=0, space="bin")
    np.testing.assert_allclose(decoded[mask], depth[mask] * 1.2, rtol=1e-6)
    beyond_depth, beyond_mask = build_rpd_depth(
        depth, crop_scale=1.2, bins=bins, supervise_beyond=True, feature_size=(3, 2)
    )
    assert beyond_mask.all() and np.array_equal(beyond_depth, rpd_depth)
    empty_depth, empty_mask = build_rpd_depth(
        None, crop_scale=1.0, bins=bins, supervise_beyond=True, feature_size=(3, 2)
    )
    assert empty_depth.shape == (2, 3) and not empty_depth.any() and not empty_mask.any()


def test_build_targets_without_depth_has_every_key_with_zeros():
    t = build_targets(
        [_car()], P2, TRANS, depth=None, crop_scale=1.0, feature_size=FEATURE, downsample=4, bins=BINS
    )
    assert t["vis_depth"].shape == (50, 7, 7) and not t["depth_mask"].any()
    assert t["rpd_depth"].shape == (48, 160) and not t["rpd_depth"].any() and not t["rpd_mask"].any()
    assert t["fg_mask"].dtype == bool and t["fg_mask"].any()
    with pytest.raises(ValueError, match="feature grid"):
        kwargs = dict(crop_scale=1.0, feature_size=FEATURE, downsample=4, bins=BINS)
        build_targets([], P2, TRANS, depth=np.ones((10, 10), np.float32), **kwargs)


def test_foreground_mask_cells():
    boxes = np.array(
        [
            [1.2, 0.5, 2.9, 1.0],  # columns 1-2, row 0
            [3.3, 2.2, 3.6, 2.4],  # smaller than a cell: still marks cell (2, 3)
            [0.0, 0.0, 0.0, 0.0],  # empty slot
            [0.0, 0.0, 5.0, 4.0],  # invalid (masked out)
        ]
    )
    mask = foreground_mask(boxes, height=4, width=5, valid=np.array([True, True, True, False]))
    expected = np.zeros((4, 5), dtype=bool)
    expected[0, 1:3] = True
    expected[2, 3] = True
    assert isinstance(mask, np.ndarray) and mask.dtype == bool
    np.testing.assert_array_equal(mask, expected)
    # stride 2: the first box in half-resolution cells spans x 0.6..1.45, y 0.25..0.5.
    coarse = foreground_mask(boxes[:1], height=2, width=3, stride=2)
    np.testing.assert_array_equal(coarse, [[True, True, False], [False, False, False]])


def test_foreground_mask_batched_torch_matches_numpy():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 30, (2, 6, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0, 8, (2, 6, 2))], axis=-1)
    valid = rng.random((2, 6)) < 0.7
    batched = foreground_mask(
        torch.from_numpy(boxes), height=12, width=16, stride=2, valid=torch.from_numpy(valid)
    )
    assert isinstance(batched, torch.Tensor) and batched.shape == (2, 12, 16) and batched.dtype == torch.bool
    for b in range(2):
        single = foreground_mask(boxes[b], height=12, width=16, stride=2, valid=valid[b])
        np.testing.assert_array_equal(batched[b].numpy(), single)
        # Every box cell by brute force: a cell is foreground iff it overlaps a valid box.
        for i in range(12):
            for j in range(16):
                overlap = [
                    v and x1 < 2 * (j + 1) and x2 > 2 * j and y1 < 2 * (i + 1) and y2 > 2 * i
                    for (x1, y1, x2, y2), v in zip(boxes[b], valid[b], strict=True)
                ]
                assert single[i, j] == any(overlap)
