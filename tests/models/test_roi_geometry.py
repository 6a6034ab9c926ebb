"""RoI geometry, GUP depth and DID depth merging checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lib.models.detector import (
    RoiBatch,
    boxes_to_original,
    gather_roi_boxes,
    plane_coordinate_maps,
    roi_features,
    select_topk_peaks,
)
from lib.models.did import merge_cell_depths, visual_depth_scale
from lib.models.gupnet import depth_confidence, gup_depth


def _calib(fu: float, fv: float, cu: float, cv: float, p03: float = 0.0, p13: float = 0.0) -> torch.Tensor:
    return torch.tensor([[[fu, 0.0, cu, p03], [0.0, fv, cv, p13], [0.0, 0.0, 1.0, 0.0]]])


def test_topk_peaks_suppresses_neighbours() -> None:
    prob = torch.full((1, 3, 4, 5), 0.01)
    prob[0, 1, 2, 3] = 0.9  # Car peak at x=3, y=2
    prob[0, 1, 2, 2] = 0.8  # its neighbour: suppressed by the 3x3 max
    prob[0, 0, 0, 0] = 0.7  # Pedestrian peak at x=0, y=0
    prob[0, 2, 3, 0] = 0.6  # Cyclist peak at x=0, y=3
    peaks = select_topk_peaks(torch.logit(prob), 3)
    torch.testing.assert_close(peaks["scores"], torch.tensor([[0.9, 0.7, 0.6]]))
    assert peaks["cls"].tolist() == [[1, 0, 2]]
    assert peaks["xs"].tolist() == [[3, 0, 0]]
    assert peaks["ys"].tolist() == [[2, 0, 3]]
    assert peaks["indices"].tolist() == [[2 * 5 + 3, 0, 3 * 5 + 0]]
    with pytest.raises(ValueError, match="topk must be in 1..60"):
        select_topk_peaks(torch.zeros(1, 3, 4, 5), 61)


def test_gather_roi_boxes() -> None:
    offset = torch.zeros(2, 2, 4, 5)
    size = torch.zeros(2, 2, 4, 5)
    offset[1, :, 3, 2] = torch.tensor([0.5, 0.25])  # image 1, cell x=2, y=3
    size[1, :, 3, 2] = torch.tensor([4.0, 2.0])
    boxes = gather_roi_boxes(offset, size, batch_idx=torch.tensor([1]), indices=torch.tensor([3 * 5 + 2]))
    torch.testing.assert_close(boxes, torch.tensor([[2.5 - 2.0, 3.25 - 1.0, 2.5 + 2.0, 3.25 + 1.0]]))


def test_boxes_to_original_uses_crop_window() -> None:
    coord_range = torch.tensor([[[100.0, 20.0], [1100.0, 320.0]]])  # 1000 x 300 px crop
    boxes = torch.tensor([[40.0, 12.0, 80.0, 24.0]])  # feature px on an 80 x 24 grid
    out = boxes_to_original(boxes, coord_range, feat_hw=(24, 80))
    torch.testing.assert_close(out, torch.tensor([[600.0, 170.0, 1100.0, 320.0]]))


def test_plane_coordinate_maps_by_hand() -> None:
    # fu = fv = 700, cu = 600, cv = 180, P2[0,3] = -350 -> tx = 0.5, ty = 0.
    calib = _calib(700.0, 700.0, 600.0, 180.0, p03=-350.0)
    box = torch.tensor([[530.0, 145.0, 670.0, 215.0]])  # u: -70..+70 px, v: -35..+35 px around the centre
    maps = plane_coordinate_maps(box, calib)
    assert maps.shape == (1, 2, 7, 7)
    xs = torch.tensor([0.4, 0.4 + 0.2 / 6, 0.4 + 0.4 / 6, 0.5, 0.6 - 0.4 / 6, 0.6 - 0.2 / 6, 0.6])
    ys = torch.tensor([-0.05 + 0.1 * i / 6 for i in range(7)])
    for row in range(7):
        torch.testing.assert_close(maps[0, 0, row], xs)  # left -> right, constant down a column
        torch.testing.assert_close(maps[0, 1, :, row], ys)  # top -> bottom, constant along a row


def test_roi_features_channels() -> None:
    feat = torch.full((2, 64, 6, 10), 3.0)
    feat[1] = 5.0
    rois = RoiBatch(
        batch_idx=torch.tensor([1, 0]),
        cls=torch.tensor([2, 0]),
        boxes_feat=torch.tensor([[1.0, 1.0, 4.0, 3.0], [2.0, 0.0, 6.0, 5.0]]),
        boxes_orig=torch.tensor([[10.0, 10.0, 40.0, 30.0], [20.0, 0.0, 60.0, 50.0]]),
        calib=_calib(700.0, 700.0, 600.0, 180.0).repeat(2, 1, 1),
        input_scale=torch.tensor([0.5, 0.5]),
    )
    out = roi_features(feat, rois, num_classes=3)
    assert out.shape == (2, 69, 7, 7)
    torch.testing.assert_close(out[0, :64], torch.full((64, 7, 7), 5.0))  # RoI 0 reads image 1
    torch.testing.assert_close(out[1, :64], torch.full((64, 7, 7), 3.0))
    torch.testing.assert_close(out[:, 64:66], plane_coordinate_maps(rois.boxes_orig, rois.calib))
    assert out[0, 66:, 3, 3].tolist() == [0.0, 0.0, 1.0]
    assert out[1, 66:, 0, 6].tolist() == [1.0, 0.0, 0.0]


def test_gup_depth_by_hand() -> None:
    # h3d 1.5 m, f 700 px, h2d 50 px -> geometric depth 21 m; sigma_h^2 = 0.01 -> sigma_p^2 = 0.01 * 14^2.
    out = gup_depth(
        h3d=torch.tensor([1.5]),
        h3d_log_variance=torch.tensor([math.log(0.01)]),
        h2d=torch.tensor([50.0]),
        focal=torch.tensor([700.0]),
        depth_net=torch.tensor([[0.0, math.log(0.25)]]),  # sigmoid(0) = 0.5 -> bias ~1; sigma_b^2 = 0.25
    )
    bias = 1.0 / (0.5 + 1e-6) - 1.0
    torch.testing.assert_close(out, torch.tensor([[21.0 + bias, math.log(0.25 + 1.96)]]))


def test_gup_depth_bias_is_non_negative() -> None:
    logits = torch.linspace(-10.0, 15.0, 26)
    out = gup_depth(
        h3d=torch.ones(26),
        h3d_log_variance=torch.zeros(26),
        h2d=torch.full((26,), 10.0),
        focal=torch.full((26,), 100.0),
        depth_net=torch.stack([logits, torch.zeros(26)], dim=1),
    )
    assert (out[:, 0] >= 10.0 - 1e-5).all()  # the bias cannot bring the depth nearer (a reference quirk)


def test_depth_confidence() -> None:
    torch.testing.assert_close(
        depth_confidence(torch.tensor([0.0, 2 * math.log(3.0)])), torch.exp(-torch.tensor([1.0, 3.0]))
    )


def _scale_rois(heights_feat: list[float], *, px_per_feat: float, input_scale: float) -> RoiBatch:
    """RoIs of the given heights in feature px, 1 feature px = ``px_per_feat`` original px."""
    h = torch.tensor(heights_feat, requires_grad=True)
    zeros = torch.zeros_like(h)
    boxes_feat = torch.stack([zeros, zeros, zeros + 1.0, h], dim=1)
    return RoiBatch(
        batch_idx=torch.zeros(len(heights_feat), dtype=torch.int64),
        cls=torch.ones(len(heights_feat), dtype=torch.int64),
        boxes_feat=boxes_feat,
        boxes_orig=boxes_feat * px_per_feat,
        calib=_calib(700.0, 700.0, 600.0, 180.0).repeat(len(heights_feat), 1, 1),
        input_scale=torch.full((len(heights_feat),), input_scale),
    )


def test_visual_depth_scale_window_and_box() -> None:
    # Stride 4 and 8 original px a feature px: 0.5 input px per original px. Heights 10, 0.1 and
    # 0.2 feature px are 40 / 0.4 / 0.8 input px and 80 / 0.8 / 1.6 original px.
    rois = _scale_rois([10.0, 0.1, 0.2], px_per_feat=8.0, input_scale=0.5)
    torch.testing.assert_close(visual_depth_scale(rois, "window"), torch.tensor([0.5, 0.5, 0.5]))
    box = visual_depth_scale(rois, "box")
    torch.testing.assert_close(box, torch.tensor([0.5, 1.0, 1.0 / 1.6]))  # heights clamped >= 1 px
    # d(box)/dh: 0 where neither height is clamped (40 / 80 px), 0 where both are, and
    # d(1 / (8 h))/dh = -1 / (8 h^2) = -3.125 at h = 0.2, where only the input height is clamped:
    # the singular pull on a near-zero predicted height that "window" does not have
    (grad,) = torch.autograd.grad(box.sum(), rois.boxes_feat)
    torch.testing.assert_close(grad[:, 3], torch.tensor([0.0, 0.0, -3.125]))
    with pytest.raises(ValueError, match="window"):
        visual_depth_scale(rois, "roi")


def test_merge_cell_depths_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    depth = rng.uniform(5, 40, (3, 7, 7))
    log_var = rng.uniform(-4, 3, (3, 7, 7))
    p = np.exp(-np.exp(0.5 * log_var)).reshape(3, -1)
    want_depth = (p * depth.reshape(3, -1)).sum(1) / p.sum(1)
    want_log_var = (p * log_var.reshape(3, -1)).sum(1) / p.sum(1)
    want_conf = (p**2).sum(1) / p.sum(1)
    out = merge_cell_depths(torch.from_numpy(depth), torch.from_numpy(log_var))
    np.testing.assert_allclose(out["depth"][:, 0].numpy(), want_depth, rtol=1e-10)
    np.testing.assert_allclose(out["depth"][:, 1].numpy(), want_log_var, rtol=1e-10)
    np.testing.assert_allclose(out["depth_confidence"].numpy(), want_conf, rtol=1e-10)


def test_merge_cell_depths_stays_finite_when_weights_underflow() -> None:
    depth = torch.full((1, 7, 7), 20.0)
    depth[0, 3, 3] = 30.0
    log_var = torch.full((1, 7, 7), 30.0)  # sigma = e^15: every p = exp(-sigma) is 0 in float32
    log_var[0, 3, 3] = 29.0
    out = merge_cell_depths(depth, log_var)
    assert torch.isfinite(out["depth"]).all()
    assert out["depth"][0, 0].item() == pytest.approx(30.0)  # the least uncertain cell dominates
    assert out["depth_confidence"].item() == 0.0
