"""One box convention: the evaluator's numba footprint and the flip agree with lib/geometry.py.

``geometry.box3d_corners`` is the convention (h, w, l, bottom centre, ry about rect y);
``eval.iou.bev_corners`` restates it inside numba for the devkit's polygons, and
``augment.flip_objects`` mirrors labels without going through corners. Both are checked against
it on random boxes.
"""

from __future__ import annotations

import numpy as np

from lib.datasets.augment import flip_objects
from lib.eval.iou import bev_corners
from lib.geometry import box3d_corners
from lib.kitti_io import Object3d


def _boxes(n: int, seed: int) -> np.ndarray:
    """(n, 7) h, w, l, x, y, z, ry with ry over the whole circle."""
    rng = np.random.default_rng(seed)
    dims = rng.uniform(0.5, 5.0, (n, 3))
    loc = rng.uniform([-20.0, 0.5, 2.0], [20.0, 2.5, 70.0], (n, 3))
    ry = rng.uniform(-np.pi, np.pi, (n, 1))
    return np.concatenate([dims, loc, ry], axis=1)


def test_evaluator_footprint_is_the_bottom_face_of_box3d_corners() -> None:
    boxes = _boxes(200, seed=0)
    xs, zs = bev_corners(boxes)
    corners = box3d_corners(boxes[:, :3], boxes[:, 3:6], boxes[:, 6])  # (N, 8, 3)
    np.testing.assert_allclose(xs, corners[:, :4, 0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(zs, corners[:, :4, 2], rtol=0, atol=1e-12)
    # clockwise seen from above in the devkit's x-z plane: negative shoelace area in (x, z)
    twice_area = np.sum(xs * np.roll(zs, -1, axis=1) - np.roll(xs, -1, axis=1) * zs, axis=1)
    np.testing.assert_allclose(-twice_area / 2, boxes[:, 1] * boxes[:, 2], rtol=1e-9)


def test_flipped_labels_have_the_mirrored_corners() -> None:
    boxes = _boxes(50, seed=1)
    objects = [
        Object3d("Car", 0.0, 0, 0.0, np.array([100.0, 150.0, 200.0, 220.0]), h, w, l, np.array([x, y, z]), ry)
        for h, w, l, x, y, z, ry in boxes
    ]
    flipped = flip_objects(objects, 1242)
    for obj, mirror in zip(objects, flipped, strict=True):
        before = box3d_corners([obj.h, obj.w, obj.l], obj.pos, [obj.ry])[0] * [-1.0, 1.0, 1.0]
        after = box3d_corners([mirror.h, mirror.w, mirror.l], mirror.pos, [mirror.ry])[0]
        # the same eight points; a mirror swaps the +w/2 and -w/2 sides: 0<->1, 2<->3 per face
        np.testing.assert_allclose(after, before[[1, 0, 3, 2, 5, 4, 7, 6]], atol=1e-9)
