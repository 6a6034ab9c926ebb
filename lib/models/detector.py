"""The detector shared by GUPNet and DID-M3D: backbone, DLAUp neck, 2D heads, RoI features.

``Detector`` runs everything up to the 69-channel 7x7 RoI features (docs/reference.md, 'Backbone: DLA-34' to
'RoI 3D head') and the optional depth branch (docs/method.md, 'Framework'); a subclass adds its RoI heads
through the ``roi_heads`` spec table and turns the RoI features into 3D outputs in ``predict_3d`` (``GUPNet``
in gupnet.py, ``DIDM3D`` in did.py). Teacher and student are the same class: the teacher is fed depth images
(``input_key``), the network does not change.

The RoI geometry is written as pure functions of tensors so that tests can check it by hand.

Predictions (``forward``), read by the losses, the distiller and decoding:

* always: heatmap (B, 3, Hf, Wf) logits; offset_2d, size_2d (B, 2, Hf, Wf); features, the 4
  neck maps [s4 64 ch, s8 128, s16 256, s32 512]; depth_logits (B, K+1, Hf, Wf) with the depth
  branch.
* one row per RoI: with ``targets`` the GT objects where mask_2d, in (image, slot) row-major
  order; without, the top-K peaks of every image (B·K rows): roi_batch_idx, roi_cls (N,);
  offset_3d (N, 2); size_3d residuals; heading (N, 24); depth (N, 2) [depth, log-variance];
  depth_confidence (N,); gupnet adds h3d_log_variance (N, 1), did its 7×7 vis/att maps.
* without ``targets``: topk {scores, cls, xs, ys, indices} (B, K) of the peaks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from lib.constants import HEATMAP_CLASSES, HEATMAP_EPS, MEAN_SIZES, ROI_SIZE
from lib.models.backbones import DLAUp, build_backbone
from lib.models.depth_branch import build_depth_branch
from lib.models.heads import HeadSpec, build_head

FEATURE_STRIDE = 4  # the heads read the stride-4 neck output (docs/reference.md, 'Neck: DLAUp')
INPUT_MULTIPLE = 32  # the deepest level has stride 32: H and W must be multiples of it
INPUT_KEYS = ("rgb", "depth")  # student sees `rgb`, teacher sees `depth` (docs/method.md, 'Framework')

# 2D heads on the stride-4 feature (docs/reference.md, '2D heads'); the heatmap width is the class count.
HEADS_2D = (
    HeadSpec("offset_2d", 2, "dense", "small"),
    HeadSpec("size_2d", 2, "dense", "small"),
)


@dataclass(frozen=True)
class RoiBatch:
    """The RoIs of one forward pass, one row per RoI.

    Attributes:
        batch_idx: (N,) int64 image index.
        cls: (N,) int64 class id (GT class in training, peak class at test time).
        boxes_feat: (N, 4) x1, y1, x2, y2 in feature-map px (the RoIAlign boxes).
        boxes_orig: (N, 4) the same boxes in original-image px (via ``coord_range``).
        calib: (N, 3, 4) P2 of each RoI's image.
        input_scale: (N,) input px per original px of each RoI's image: the input height over
            the height of its crop window (``coord_range``); 1 / the crop's zoom of the original.
    """

    batch_idx: torch.Tensor
    cls: torch.Tensor
    boxes_feat: torch.Tensor
    boxes_orig: torch.Tensor
    calib: torch.Tensor
    input_scale: torch.Tensor


def select_topk_peaks(heatmap: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """The K highest local maxima of the heatmap of every image (docs/reference.md, 'RoI 3D head' and
    'Decoding and testing').

    Sigmoid, clamp to [1e-4, 1 - 1e-4], keep cells equal to their 3x3 max (CenterNet's NMS),
    then GUPNet's two stages: the top-K cells of each class, then the top-K of those C·K. A
    single top-K over all cells keeps the same peaks but may order exactly tied scores (e.g.
    saturated at the clamp) differently; the two stages give the reference's order too
    (docs/parity.md). For K > H·W every cell is a candidate.

    Args:
        heatmap: (B, C, H, W) logits.
        k: peaks per image; at most C*H*W.

    Returns:
        scores (B, K) float heatmap scores; cls (B, K) int64; indices (B, K) int64 = y*W + x;
        xs, ys (B, K) int64 peak cell coordinates (feature map).
    """
    b, c, h, w = heatmap.shape
    if not 0 < k <= c * h * w:
        raise ValueError(f"topk must be in 1..{c * h * w} for a {c}x{h}x{w} heatmap, got {k}")
    prob = heatmap.float().sigmoid().clamp(HEATMAP_EPS, 1.0 - HEATMAP_EPS)
    peaks = prob * (F.max_pool2d(prob, 3, stride=1, padding=1) == prob)
    per_class = min(k, h * w)
    class_scores, class_cells = peaks.reshape(b, c, -1).topk(per_class)  # (B, C, per_class), any layout
    scores, pick = class_scores.view(b, -1).topk(k)  # (B, K) among the C * per_class candidates
    indices = class_cells.view(b, -1).gather(1, pick)
    return {
        "scores": scores,
        "cls": pick // per_class,
        "indices": indices,
        "xs": indices % w,
        "ys": indices // w,
    }


def gather_roi_boxes(
    offset_2d: torch.Tensor, size_2d: torch.Tensor, *, batch_idx: torch.Tensor, indices: torch.Tensor
) -> torch.Tensor:
    """Predicted 2D boxes at the given cells: (cell + offset) +- size / 2.

    Args:
        offset_2d, size_2d: (B, 2, H, W) dense predictions (x, y) / (w, h) in feature px.
        batch_idx, indices: (N,) image index and cell index y*W + x.

    Returns:
        (N, 4) x1, y1, x2, y2 in feature px.
    """
    w = offset_2d.shape[-1]
    cell = torch.stack([indices % w, indices // w], dim=1).to(offset_2d.dtype)  # (N, 2) x, y
    centre = cell + offset_2d.flatten(2)[batch_idx, :, indices]  # (N, 2)
    half = size_2d.flatten(2)[batch_idx, :, indices] / 2  # (N, 2)
    return torch.cat([centre - half, centre + half], dim=1)


def boxes_to_original(
    boxes: torch.Tensor, coord_range: torch.Tensor, feat_hw: tuple[int, int]
) -> torch.Tensor:
    """Map feature-px boxes to original-image px through each image's crop window (docs/reference.md, 'RoI 3D
    head').

    x_orig = x / W_feat * (x1 - x0) + x0, y likewise with H_feat, where [[x0, y0], [x1, y1]] is the
    original-px window of the input (lib/datasets/augment.py ``input_window``: the exact inverse
    of the input affine, or GUPNet's per-axis approximation, docs/reference.md, 'Known bugs and quirks:
    Per-axis input window'). Decoding maps its boxes the same way (lib/decode.py ``FeatureToOriginal``).

    Args:
        boxes: (N, 4) x1, y1, x2, y2 in feature px.
        coord_range: (N, 2, 2) crop window of each box's image.
        feat_hw: (H_feat, W_feat).
    """
    h, w = feat_hw
    origin = coord_range[:, 0].repeat(1, 2)  # (N, 4) x0 y0 x0 y0
    extent = (coord_range[:, 1] - coord_range[:, 0]).repeat(1, 2)  # (N, 4)
    grid = boxes.new_tensor([w, h, w, h])
    return boxes / grid * extent + origin


def plane_coordinate_maps(
    boxes_orig: torch.Tensor, calib: torch.Tensor, *, size: int = ROI_SIZE
) -> torch.Tensor:
    """Normalised-plane coordinates of the RoI cells (docs/reference.md, 'RoI 3D head').

    The box corners (original px) are back-projected at depth 1 with P2: x = (u - cu)/fu + tx,
    y = (v - cv)/fv + ty with tx = P2[0,3]/(-fu), ty = P2[1,3]/(-fv). Channel 0 holds ``size``
    values spaced linearly from the left to the right edge (inclusive, constant down a column),
    channel 1 the same from the top to the bottom edge (constant along a row).

    Args:
        boxes_orig: (N, 4) x1, y1, x2, y2 in original px.
        calib: (N, 3, 4) P2 of each box's image.

    Returns:
        (N, 2, size, size).
    """
    fu, fv = calib[:, 0, 0], calib[:, 1, 1]
    cu, cv = calib[:, 0, 2], calib[:, 1, 2]
    tx, ty = calib[:, 0, 3] / -fu, calib[:, 1, 3] / -fv
    left, right = (boxes_orig[:, 0] - cu) / fu + tx, (boxes_orig[:, 2] - cu) / fu + tx  # (N,)
    top, bottom = (boxes_orig[:, 1] - cv) / fv + ty, (boxes_orig[:, 3] - cv) / fv + ty
    steps = torch.linspace(0.0, 1.0, size, device=boxes_orig.device, dtype=boxes_orig.dtype)  # (S,)
    xs = left[:, None] + (right - left)[:, None] * steps  # (N, S)
    ys = top[:, None] + (bottom - top)[:, None] * steps
    n = boxes_orig.shape[0]
    return torch.stack([xs[:, None, :].expand(n, size, size), ys[:, :, None].expand(n, size, size)], dim=1)


def roi_features(feat: torch.Tensor, rois: RoiBatch, *, num_classes: int) -> torch.Tensor:
    """RoIAlign 7x7 of the stride-4 feature + 2 coordinate maps + class one-hot (docs/reference.md, 'RoI 3D
    head').

    Args:
        feat: (B, C, Hf, Wf) head input.
        rois: the RoIs (boxes in feature px for RoIAlign, original px for the coordinate maps).

    Returns:
        (N, C + 2 + num_classes, 7, 7).
    """
    boxes = torch.cat(
        [rois.batch_idx[:, None].to(feat.dtype), rois.boxes_feat.to(feat.dtype)], dim=1
    )  # (N, 5)
    pooled = roi_align(feat, boxes, ROI_SIZE, spatial_scale=1.0, sampling_ratio=-1, aligned=False)
    coords = plane_coordinate_maps(rois.boxes_orig, rois.calib).to(pooled.dtype)  # (N, 2, 7, 7)
    one_hot = F.one_hot(rois.cls, num_classes).to(pooled.dtype)  # (N, num_classes)
    one_hot = one_hot[:, :, None, None].expand(-1, -1, ROI_SIZE, ROI_SIZE)
    return torch.cat([pooled, coords, one_hot], dim=1)


class Detector(nn.Module):
    """Backbone + DLAUp + 2D heads + RoI features + optional depth branch; subclasses add 3D heads.

    The heatmap has one channel per class of ``HEATMAP_CLASSES`` and ``mean_size`` holds their
    ``MEAN_SIZES`` (lib/constants.py): the class set is fixed. The arguments are the ``model``
    section and ``rpd.num_bins`` (lib/models/build.py ``build_detector``; no defaults here:
    configs/base.yaml holds them).

    Args:
        backbone: ``dla34`` (GUPNet) or ``resnet18`` (light, CPU).
        head_conv: hidden width of every head (GUPNet: 256).
        depth_branch: build the depth branch (docs/method.md, 'Framework').
        num_depth_bins: K, RPD bins; the branch predicts K + 1 logits.
        depth_branch_channels: hidden width of the depth branch.
        input_key: batch key this network reads, ``rgb`` (student) or ``depth`` (teacher).
    """

    roi_heads: tuple[HeadSpec, ...] = ()  # the subclass's RoI head table, in registration order

    def __init__(
        self,
        *,
        backbone: str,
        head_conv: int,
        depth_branch: bool,
        num_depth_bins: int,
        depth_branch_channels: int,
        input_key: str,
    ) -> None:
        super().__init__()
        if input_key not in INPUT_KEYS:
            raise ValueError(f"model.input must be one of {INPUT_KEYS}, got {input_key!r}")
        self.input_key = input_key
        self.num_classes = len(HEATMAP_CLASSES)
        # Frozen, but a parameter (not a buffer) so that GUPNet's state_dict layout holds
        # (docs/reference.md, 'Class mean sizes [h, w, l] in metres').
        self.mean_size = nn.Parameter(torch.tensor(MEAN_SIZES), requires_grad=False)
        self.backbone = build_backbone(backbone)
        self.first_level = list(self.backbone.strides).index(FEATURE_STRIDE)
        neck_channels = list(self.backbone.channels[self.first_level :])
        self.feat_up = DLAUp(neck_channels)
        feat_channels = neck_channels[0]
        roi_channels = feat_channels + 2 + self.num_classes
        for spec in (HeadSpec("heatmap", self.num_classes, "dense", "heatmap"), *HEADS_2D):
            setattr(self, spec.name, build_head(spec, feat_channels, mid_channels=head_conv))
        for spec in self.roi_heads:
            setattr(self, spec.name, build_head(spec, roi_channels, mid_channels=head_conv))
        self.depth_branch = None
        if depth_branch:
            self.depth_branch = build_depth_branch(
                feat_channels, num_bins=num_depth_bins, mid_channels=depth_branch_channels
            )

    def forward(
        self,
        images: torch.Tensor,
        *,
        calib: torch.Tensor,
        coord_range: torch.Tensor,
        targets: dict[str, torch.Tensor] | None = None,
        topk: int | None = None,
    ) -> dict:
        """Run the network; RoIs are the GT objects when ``targets`` is given, else the top-K peaks.

        The RoI choice follows ``targets``, not ``self.training``: a frozen teacher in eval mode
        still runs on the GT objects during distillation (docs/reference.md, 'Networks and weights').

        Args:
            images: (B, 3, H, W), H and W multiples of 32: RGB for the student; for the teacher the
                depth map, (B, 1, H, W) as the data loader ships it, repeated into the 3 input
                channels here (a free view; the network, and MonoSKD's teacher, take 3).
            calib: (B, 3, 4) P2 per image.
            coord_range: (B, 2, 2) input window [[x0, y0], [x1, y1]] in original px.
            targets: the batch ``targets``; reads indices (B, M), cls_ids (B, M), mask_2d (B, M).
            topk: peaks per image, required when ``targets`` is None (``tester.topk``).

        Returns:
            heatmap (B, C, Hf, Wf) logits; offset_2d, size_2d (B, 2, Hf, Wf); features [s4, s8, s16,
            s32]; depth_logits (B, K+1, Hf, Wf) with the depth branch; roi_batch_idx, roi_cls (N,);
            the subclass's RoI outputs (N, ...); without targets also ``topk`` (see select_topk_peaks).
        """
        self._check_inputs(images, calib, coord_range)
        features = self._features(images)
        feat = features[0]  # (B, 64, H/4, W/4)
        out = {
            "heatmap": self.heatmap(feat),
            "offset_2d": self.offset_2d(feat),
            "size_2d": self.size_2d(feat),
            "features": features,
        }
        # after the heads, as before: the forward order sets the order in which autograd sums the
        # gradients of feat, and another order changes training in the last bits
        if self.depth_branch is not None:
            out["depth_logits"] = self.depth_branch(feat)
        batch_idx, indices, cls = self._roi_cells(out, targets, topk)
        boxes_feat = gather_roi_boxes(
            out["offset_2d"].float(), out["size_2d"].float(), batch_idx=batch_idx, indices=indices
        )
        window = coord_range[batch_idx].float()  # (N, 2, 2)
        rois = RoiBatch(
            batch_idx=batch_idx,
            cls=cls,
            boxes_feat=boxes_feat,
            boxes_orig=boxes_to_original(boxes_feat, window, feat_hw=feat.shape[-2:]),
            calib=calib[batch_idx].float(),
            input_scale=images.shape[-2] / (window[:, 1, 1] - window[:, 0, 1]),
        )
        out["roi_batch_idx"], out["roi_cls"] = batch_idx, cls
        out.update(self.predict_3d(roi_features(feat, rois, num_classes=self.num_classes), rois))
        return out

    @staticmethod
    def _roi_cells(
        out: dict, targets: dict[str, torch.Tensor] | None, topk: int | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(batch_idx, cell index y·Wf + x, class) (N,) of the RoIs: the GT slots of ``targets``
        (row-major over (B, M)), else the top-``topk`` peaks of each image, stored as ``out['topk']``."""
        if targets is None:
            if topk is None:
                raise ValueError("without targets the detector needs topk (peaks per image, tester.topk)")
            heatmap = out["heatmap"]
            peaks = out["topk"] = select_topk_peaks(heatmap, topk)
            b = heatmap.shape[0]
            batch_idx = torch.arange(b, device=heatmap.device).repeat_interleave(topk)  # (B*K,)
            return batch_idx, peaks["indices"].flatten(), peaks["cls"].flatten()
        batch_idx, slot = targets["mask_2d"].bool().nonzero(as_tuple=True)  # (b, m) row-major
        return batch_idx, targets["indices"][batch_idx, slot], targets["cls_ids"][batch_idx, slot]

    def encode(self, images: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Backbone + neck (+ depth branch) only: ``features`` [s4, s8, s16, s32] and, with the
        branch, ``depth_logits`` (B, K+1, Hf, Wf), exactly as :meth:`forward` computes them.

        All a frozen teacher needs for the DualKL and feature terms (lib/distiller.py): its 2D
        heads and RoI heads are skipped. ``images`` as in :meth:`forward`.
        """
        features = self._features(images)
        out: dict[str, torch.Tensor | list[torch.Tensor]] = {"features": features}
        if self.depth_branch is not None:
            out["depth_logits"] = self.depth_branch(features[0])
        return out

    def _features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Backbone + neck maps [s4, s8, s16, s32]; a 1-channel depth map fills the 3 inputs."""
        self._check_images(images)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return self.feat_up(self.backbone(images)[self.first_level :])

    def predict_3d(self, roi_feat: torch.Tensor, rois: RoiBatch) -> dict[str, torch.Tensor]:
        """(N, 69, 7, 7) RoI features -> the model type's per-RoI outputs (subclasses)."""
        raise NotImplementedError

    @staticmethod
    def _check_images(images: torch.Tensor) -> None:
        _, c, h, w = images.shape
        if c not in (1, 3):
            raise ValueError(f"input images must have 3 channels (or 1 for a depth map), got {c}")
        if h % INPUT_MULTIPLE or w % INPUT_MULTIPLE:
            raise ValueError(f"input height and width must be multiples of {INPUT_MULTIPLE}, got {h}x{w}")

    def _check_inputs(self, images: torch.Tensor, calib: torch.Tensor, coord_range: torch.Tensor) -> None:
        b = images.shape[0]
        if calib.shape != (b, 3, 4):
            raise ValueError(f"calib must have shape ({b}, 3, 4), got {tuple(calib.shape)}")
        if coord_range.shape != (b, 2, 2):
            raise ValueError(f"coord_range must have shape ({b}, 2, 2), got {tuple(coord_range.shape)}")
