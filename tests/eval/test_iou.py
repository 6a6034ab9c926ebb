"""Box overlaps against hand-computed values (float64 geometry, devkit formulas)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lib.eval.iou import bev_overlaps, box3d_overlaps, frame_overlaps, image_overlaps


def _box(x=0.0, z=10.0, l=2.0, w=2.0, h=1.5, y=1.6, ry=0.0) -> list[float]:
    """A 3D box in the label column order h, w, l, x, y, z, ry."""
    return [h, w, l, x, y, z, ry]


def test_image_overlaps():
    a = [[0, 0, 10, 10]]
    b = [[5, 0, 15, 10], [10, 0, 20, 10], [20, 20, 30, 30], [0, 0, 10, 10]]
    np.testing.assert_allclose(image_overlaps(a, b), [[1 / 3, 0.0, 0.0, 1.0]])


def test_bev_axis_aligned_squares():
    """2 x 2 squares shifted by 1 m: intersection 2, union 6."""
    iou = bev_overlaps([_box()], [_box(x=1.0), _box(z=11.0), _box(x=1.0, z=11.0)])
    np.testing.assert_allclose(iou, [[1 / 3, 1 / 3, 1 / 7]], rtol=1e-12)


def test_bev_square_vs_45_degree_square():
    """The intersection of a square and its 45-degree rotation is a regular octagon, area 8(sqrt2-1)."""
    inter = 8 * (math.sqrt(2) - 1)
    iou = bev_overlaps([_box()], [_box(ry=math.pi / 4)])
    assert iou[0, 0] == pytest.approx(inter / (8 - inter), rel=1e-12)


@pytest.mark.parametrize("ry", [0.0, 0.3, math.pi / 2, math.pi, -math.pi, -2.15])
def test_rotated_box_vs_itself_is_one(ry):
    box = _box(x=-2.54, z=3.59, l=0.80, w=0.68, h=1.72, y=1.63, ry=ry)
    assert bev_overlaps([box], [box])[0, 0] == 1.0
    assert box3d_overlaps([box], [box])[0, 0] == 1.0  # exactly, not 1 - 1e-16


def test_plus_pi_and_minus_pi_are_the_same_box():
    iou = box3d_overlaps([_box(l=3.9, w=1.6, ry=math.pi)], [_box(l=3.9, w=1.6, ry=-math.pi)])
    assert iou[0, 0] == pytest.approx(1.0, abs=1e-12)


def test_disjoint_boxes_overlap_zero():
    iou = box3d_overlaps([_box()], [_box(x=5.0), _box(z=20.0, ry=1.0), _box(x=2.0)])  # the last one touches
    assert np.array_equal(iou, [[0.0, 0.0, 0.0]])


def test_3d_overlap_uses_height_interval():
    """Same footprint, shifted down by half its height: intersection 1/2, union 3/2 of a volume."""
    iou = box3d_overlaps([_box()], [_box(y=1.6 + 0.75), _box(y=1.6 + 1.5)])
    np.testing.assert_allclose(iou, [[1 / 3, 0.0]], rtol=1e-12)
    assert bev_overlaps([_box()], [_box(y=1.6 + 0.75)])[0, 0] == 1.0


def test_overlaps_are_symmetric_and_bounded():
    rng = np.random.default_rng(0)
    boxes = np.stack(
        [rng.uniform(0.5, 2, 30), rng.uniform(0.5, 2, 30), rng.uniform(1, 5, 30), rng.uniform(-2, 2, 30),
         rng.uniform(1, 2, 30), rng.uniform(9, 13, 30), rng.uniform(-np.pi, np.pi, 30)], axis=1
    )  # fmt: skip
    for fn in (bev_overlaps, box3d_overlaps):
        iou = fn(boxes, boxes)
        np.testing.assert_allclose(iou, iou.T, atol=1e-12)
        assert np.all((iou >= 0) & (iou <= 1 + 1e-12))
        assert np.all(np.diag(iou) == 1.0)
        assert np.count_nonzero(np.triu(iou, 1)) > 10  # the test does exercise overlapping pairs


def test_dontcare_columns_use_the_detection_area():
    """A DontCare region's overlap is intersection / detection area (criterion 0 of the devkit)."""
    det2d = np.array([[0.0, 0.0, 10.0, 10.0]])
    gt2d = np.array([[0.0, 0.0, 40.0, 40.0], [0.0, 0.0, 40.0, 40.0]])
    det3d = np.array([_box()])
    gt3d = np.array([_box(l=8.0, w=8.0), [-1, -1, -1, -1000, -1000, -1000, -10]])
    pair_offsets, overlaps = frame_overlaps(
        det2d, det3d, [0, 1], gt2d, gt3d, [0, 2], np.array([False, True]), device="cpu"
    )
    assert list(pair_offsets) == [0, 2]
    np.testing.assert_allclose(overlaps[0], [100 / 1600, 1.0])  # IoU vs the object, inside the region
    np.testing.assert_allclose(overlaps[1:, 1], [0.0, 0.0])  # the DontCare 3D box lies at -1000 m
