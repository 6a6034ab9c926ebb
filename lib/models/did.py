"""DID-M3D (Peng et al., ECCV 2022) as MonoSKD uses it: visual + attribute depth per RoI cell.

Same network as GUPNet up to the RoI features; no ``depth`` head, ``size_3d`` without the height
uncertainty, and four 7x7 per-cell heads (docs/reference.md, 'The DID-M3D variant used by SKD'). Names and
shapes equal MonoSKD's ``DID`` (370 state_dict entries, 21,348,809 parameters), so its ``model_state`` loads
strictly.
"""

from __future__ import annotations

from typing import Any

import torch

from lib.constants import NUM_HEADING_BIN
from lib.models.detector import FEATURE_STRIDE, Detector, RoiBatch
from lib.models.heads import HeadSpec

VIS_DEPTH_SCALES = ("window", "box")  # model.vis_depth_scale; the first is ours (docs/parity.md)


def visual_depth_scale(rois: RoiBatch, mode: str) -> torch.Tensor:
    """Crop-scale correction of the visual depth: input px per original px at each RoI (N,).

    Visual depth is learnt on the augmented (scaled) image, where an object looks nearer or
    farther by the crop scale; this factor maps it back (DID-M3D). ``window``: the input height
    over the crop window's height (``rois.input_scale``). ``box`` (DID-M3D, MonoSKD): the RoI's
    height in input px over its height in original px, each clamped >= 1 px. The two are equal for
    every RoI at least 1 input px tall; below that, ``box`` is 1 / (original height) and its
    gradient into the predicted 2D height grows as 1 / height², which at the start of training
    (predicted heights ~0) can stall the 2D height head for the whole run (docs/parity.md).
    """
    if mode == "window":
        return rois.input_scale
    if mode != "box":
        raise ValueError(f"visual_depth_scale: mode must be one of {VIS_DEPTH_SCALES}, got {mode!r}")
    h_input = ((rois.boxes_feat[:, 3] - rois.boxes_feat[:, 1]) * FEATURE_STRIDE).clamp(min=1.0)
    h_orig = (rois.boxes_orig[:, 3] - rois.boxes_orig[:, 1]).clamp(min=1.0)
    return h_input / h_orig


def merge_cell_depths(depth: torch.Tensor, log_variance: torch.Tensor) -> dict[str, torch.Tensor]:
    """Merge per-cell instance depths into one depth per RoI (docs/reference.md, 'The DID-M3D variant used by
    SKD', DID-M3D decoding).

    Cell weight p = exp(-sigma), sigma = exp(log-variance / 2). The RoI depth is the p-weighted
    mean of the cell depths, its log-variance the p-weighted mean of the cell log-variances (our
    choice: the same weights, so that decoding and the DualKL instance term treat GUPNet and DID
    alike), and the confidence sum(p^2) / sum(p). The normalised weights are a softmax of -sigma,
    which stays finite when every p underflows.

    Args:
        depth, log_variance: (N, 7, 7) instance depth in m and its log-variance per cell.

    Returns:
        depth (N, 2) [depth, log-variance]; depth_confidence (N,).
    """
    sigma = torch.exp(0.5 * log_variance.flatten(1))  # (N, 49)
    weight = torch.softmax(-sigma, dim=1)  # p / sum(p)
    merged = (weight * depth.flatten(1)).sum(dim=1)
    merged_log_var = (weight * log_variance.flatten(1)).sum(dim=1)
    confidence = (weight * torch.exp(-sigma)).sum(dim=1)
    return {"depth": torch.stack([merged, merged_log_var], dim=1), "depth_confidence": confidence}


class DIDM3D(Detector):
    """DID-M3D: instance depth = visual depth + attribute depth per RoI cell (``model.type: did``).

    RoI outputs (N rows): depth (N, 2) and depth_confidence (N,) from ``merge_cell_depths``;
    vis_depth = exp(-o) x crop-scale correction, att_depth, their log-variances vis_depth_uncer /
    att_depth_uncer, ins_depth = vis + att and ins_depth_uncer = logsumexp of the two (N, 7, 7);
    offset_3d (N, 2); size_3d (N, 3) residuals; heading (N, 24).
    """

    model_type = "did"  # its ``model.type`` name (lib/models/build.py DETECTORS)
    roi_heads = (
        HeadSpec("offset_3d", 2, "roi", "xavier"),
        HeadSpec("size_3d", 3, "roi", "xavier"),
        HeadSpec("heading", 2 * NUM_HEADING_BIN, "roi", "xavier"),
        HeadSpec("vis_depth", 1, "roi_map", "xavier"),
        HeadSpec("att_depth", 1, "roi_map", "xavier"),
        HeadSpec("vis_depth_uncer", 1, "roi_map", "xavier"),
        HeadSpec("att_depth_uncer", 1, "roi_map", "xavier"),
    )

    def __init__(self, *, vis_depth_scale: str, **detector_args: Any) -> None:
        """
        Args:
            vis_depth_scale: ``model.vis_depth_scale``, see :func:`visual_depth_scale`.
            detector_args: the :class:`Detector` arguments.
        """
        if vis_depth_scale not in VIS_DEPTH_SCALES:
            raise ValueError(f"vis_depth_scale must be one of {VIS_DEPTH_SCALES}, got {vis_depth_scale!r}")
        super().__init__(**detector_args)
        self.vis_depth_scale = vis_depth_scale

    def predict_3d(self, roi_feat: torch.Tensor, rois: RoiBatch) -> dict[str, torch.Tensor]:
        scale = visual_depth_scale(rois, self.vis_depth_scale)  # (N,)
        vis_depth = torch.exp(-self.vis_depth(roi_feat)[:, 0].float()) * scale[:, None, None]  # (N, 7, 7)
        att_depth = self.att_depth(roi_feat)[:, 0].float()
        vis_uncer = self.vis_depth_uncer(roi_feat)[:, 0].float()
        att_uncer = self.att_depth_uncer(roi_feat)[:, 0].float()
        ins_depth = vis_depth + att_depth
        ins_uncer = torch.logsumexp(torch.stack([vis_uncer, att_uncer], dim=-1), dim=-1)
        return {
            **merge_cell_depths(ins_depth, ins_uncer),
            "vis_depth": vis_depth,
            "att_depth": att_depth,
            "vis_depth_uncer": vis_uncer,
            "att_depth_uncer": att_uncer,
            "ins_depth": ins_depth,
            "ins_depth_uncer": ins_uncer,
            "offset_3d": self.offset_3d(roi_feat)[:, :, 0, 0],
            "size_3d": self.size_3d(roi_feat)[:, :, 0, 0],
            "heading": self.heading(roi_feat)[:, :, 0, 0],
        }
