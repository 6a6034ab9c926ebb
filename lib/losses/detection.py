"""GUPNet / DID-M3D detection losses (docs/reference.md, 'GUPNet losses' and 'The DID-M3D variant used by
SKD'): one small function per term.

Conventions shared by every term:

* Objects are the target slots where ``mask_2d`` is true, taken in (batch, slot) row-major
  order; the model's RoI outputs have one row per such object in the same order (lib/models/detector.py).
* Means are over the selected elements; an empty selection (a batch without objects, a RoI
  without LiDAR cells) gives 0, not NaN (docs/reference.md, 'Known bugs and quirks: Batches without objects'),
  still attached to the graph when the prediction is, so ``backward()`` works on every term.
* Log / exp / uncertainty arithmetic runs in float32 even under autocast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from lib.constants import HEATMAP_EPS, NUM_HEADING_BIN

# The 7 detection terms, the task names of Hierarchical Task Learning (docs/reference.md, 'Hierarchical Task
# Learning').
HTL_TASKS: tuple[str, ...] = ("seg", "offset2d", "size2d", "offset3d", "size3d", "heading", "depth")

MODEL_TYPES: tuple[str, ...] = ("did", "gupnet")

# √2 of the Laplacian loss, exact; GUPNet and MonoSKD write the literal 1.4142 (up to 3e-5
# relative on a loss term, docs/parity.md).
LAPLACE_SQRT2 = math.sqrt(2.0)


def safe_mean(x: Tensor) -> Tensor:
    """Mean of all elements, 0 for an empty tensor (still part of the graph)."""
    return x.sum() / max(x.numel(), 1)


def heatmap_focal_loss(logits: Tensor, target: Tensor, *, alpha: float = 2.0, beta: float = 4.0) -> Tensor:
    """CornerNet penalty-reduced focal loss on the class heatmap (docs/reference.md, 'GUPNet losses'
    ``seg_loss``).

    With p = clamp(sigmoid(logits), 1e-4, 1 - 1e-4) and y the gaussian target:
    positives (y = 1) add -(1-p)^α·log p, the others -p^α·(1-y)^β·log(1-p); the batch sum is
    divided by the number of positives (by 1 when there are none).

    Args:
        logits: (B, C, H, W) heatmap logits.
        target: (B, C, H, W) gaussian heatmap in [0, 1], exactly 1 at object centres.

    Returns:
        () float32 loss.
    """
    p = torch.sigmoid(logits.float()).clamp(HEATMAP_EPS, 1.0 - HEATMAP_EPS)
    target = target.float()
    pos = target == 1
    pos_term = torch.log(p) * (1.0 - p) ** alpha
    neg_term = torch.log(1.0 - p) * p**alpha * (1.0 - target) ** beta
    total = torch.where(pos, pos_term, neg_term).sum()
    return -total / pos.sum().clamp(min=1)


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over all elements (objects × components); 0 when empty.

    Args:
        pred, target: (N, C) matching shapes.
    """
    return safe_mean((pred.float() - target.float()).abs())


def laplacian_uncertainty_loss(pred: Tensor, target: Tensor, log_variance: Tensor) -> Tensor:
    """Laplacian aleatoric-uncertainty loss (GUPNet paper Eq. 6, docs/reference.md, 'GUPNet losses'
    ``depth_loss``).

    Per element √2·exp(-½·log σ²)·|pred - target| + ½·log σ², averaged; 0 when empty.

    Args:
        pred, target, log_variance: matching shapes (any), log_variance = log σ².
    """
    log_variance = log_variance.float()
    residual = (pred.float() - target.float()).abs()
    return safe_mean(LAPLACE_SQRT2 * torch.exp(-0.5 * log_variance) * residual + 0.5 * log_variance)


def size3d_loss_gupnet(pred: Tensor, target: Tensor, h_log_variance: Tensor) -> Tensor:
    """GUPNet's 3D size loss (docs/reference.md, 'GUPNet losses'): (2/3)·L1(w, l) + (1/3)·Laplacian(h, log
    σ_h²).

    Args:
        pred: (N, 3) predicted h, w, l residuals to the class mean (metres).
        target: (N, 3) target residuals.
        h_log_variance: (N, 1) predicted log-variance of the h residual.
    """
    wl = l1_loss(pred[:, 1:], target[:, 1:])
    h = laplacian_uncertainty_loss(pred[:, :1], target[:, :1], h_log_variance)
    return wl * (2.0 / 3.0) + h / 3.0


def heading_loss(heading: Tensor, target_bin: Tensor, target_res: Tensor) -> Tensor:
    """Multi-bin heading loss (docs/reference.md, 'Heading' and 'GUPNet losses'): CE over the bins + L1 of the
    GT bin's residual.

    Args:
        heading: (N, 2·NB) logits of NB = 12 bins, then NB per-bin residuals (radians).
        target_bin: (N,) int64 GT bin of alpha.
        target_res: (N,) GT residual to the bin centre (radians).

    Returns:
        () mean cross-entropy + mean absolute residual error; 0 when N = 0.
    """
    heading = heading.float()
    cls_logits, residuals = heading[:, :NUM_HEADING_BIN], heading[:, NUM_HEADING_BIN:]
    ce = F.cross_entropy(cls_logits, target_bin, reduction="sum") / max(target_bin.numel(), 1)
    res_at_gt = residuals.gather(1, target_bin[:, None]).squeeze(1)  # (N,)
    return ce + l1_loss(res_at_gt, target_res)


def did_depth_loss(
    preds: Mapping[str, Tensor],
    *,
    vis_target: Tensor,
    att_target: Tensor,
    depth_mask: Tensor,
    depth_target: Tensor,
) -> Tensor:
    """DID-M3D depth loss (docs/reference.md, 'The DID-M3D variant used by SKD'; MonoSKD
    ``DIDLoss.compute_bbox3d_loss``).

    Sum of three Laplacian uncertainty losses on the 7×7 RoI grid of every object:
    visual depth and attribute depth on the cells with a LiDAR target (``depth_mask``), and
    the instance depth vis + att (log-variance logsumexp of both) against the object's z on
    all 49 cells. Each is a mean over its cells, 0 when it has none.

    Args:
        preds: RoI outputs ``vis_depth``, ``att_depth``, ``vis_depth_uncer``,
            ``att_depth_uncer``, each (N, 7, 7) (uncertainties are log-variances).
        vis_target: (N, 7, 7) LiDAR depth at the RoI cells (metres).
        att_target: (N, 7, 7) object depth minus vis_target.
        depth_mask: (N, 7, 7) bool, cells with a usable LiDAR depth.
        depth_target: (N,) object depth z (metres).
    """
    vis, att = preds["vis_depth"].float(), preds["att_depth"].float()
    vis_u, att_u = preds["vis_depth_uncer"].float(), preds["att_depth_uncer"].float()
    vis_loss = laplacian_uncertainty_loss(vis[depth_mask], vis_target[depth_mask], vis_u[depth_mask])
    att_loss = laplacian_uncertainty_loss(att[depth_mask], att_target[depth_mask], att_u[depth_mask])
    ins_depth = vis + att  # (N, 7, 7)
    ins_log_variance = torch.logaddexp(vis_u, att_u)  # log(σ_vis² + σ_att²)
    ins_target = depth_target.float()[:, None, None].expand_as(ins_depth)
    ins_loss = laplacian_uncertainty_loss(ins_depth, ins_target, ins_log_variance)
    return vis_loss + att_loss + ins_loss


def gather_at_indices(maps: Tensor, indices: Tensor) -> Tensor:
    """Read dense head outputs at flat cell indices: (B, C, H, W), (B, M) → (B, M, C)."""
    b, c = maps.shape[:2]
    flat = maps.reshape(b, c, -1)  # (B, C, H·W)
    picked = flat.gather(2, indices[:, None, :].expand(b, c, indices.shape[1]))  # (B, C, M)
    return picked.transpose(1, 2)


class DetectionLoss:
    """The 7 unweighted detection terms of GUPNet or DID-M3D (docs/reference.md, 'GUPNet losses' and 'The
    DID-M3D variant used by SKD').

    ``model_type="gupnet"``: depth = Laplacian loss of the GUP depth; size3d uses the
    predicted h log-variance. ``model_type="did"``: depth = :func:`did_depth_loss`; size3d
    is a plain L1 of the 3 residuals.
    """

    def __init__(self, model_type: str) -> None:
        if model_type not in MODEL_TYPES:
            raise ValueError(f"DetectionLoss: model_type must be one of {MODEL_TYPES}, got {model_type!r}")
        self.model_type = model_type

    def __call__(self, preds: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Compute the terms.

        Args:
            preds: model outputs (lib/models/detector.py): dense ``heatmap`` (B, 3, H, W) logits,
                ``offset_2d`` / ``size_2d`` (B, 2, H, W); RoI rows (N = mask_2d.sum())
                ``offset_3d`` (N, 2), ``size_3d`` (N, 3), ``heading`` (N, 24), ``depth``
                (N, 2) and ``h3d_log_variance`` (N, 1) (gupnet) or the 4 (N, 7, 7) DID maps.
            targets: the collated ``targets`` of a batch (lib/datasets/kitti.py), slots (B, M, ...).

        Returns:
            {task: () float32 loss} for every name in :data:`HTL_TASKS`.
        """
        mask = targets["mask_2d"].bool()  # (B, M)
        num_objects = int(mask.sum())
        for key in ("offset_3d", "size_3d", "heading"):
            rows = preds[key].shape[0]
            if rows != num_objects:
                raise ValueError(
                    f"DetectionLoss: preds['{key}'] has {rows} rows but targets['mask_2d'] selects "
                    f"{num_objects} objects (RoI outputs need one row per masked target, (b, m) order)"
                )

        def dense(name: str) -> Tensor:  # (N, C) predictions of a dense head at the objects
            return gather_at_indices(preds[name], targets["indices"])[mask]

        losses = {
            "seg": heatmap_focal_loss(preds["heatmap"], targets["heatmap"]),
            "offset2d": l1_loss(dense("offset_2d"), targets["offset_2d"][mask]),
            "size2d": l1_loss(dense("size_2d"), targets["size_2d"][mask]),
            "offset3d": l1_loss(preds["offset_3d"], targets["offset_3d"][mask]),
            "heading": heading_loss(
                preds["heading"], targets["heading_bin"][mask][:, 0], targets["heading_res"][mask][:, 0]
            ),
        }
        size3d_target = targets["size_3d"][mask]  # (N, 3)
        depth_target = targets["depth"][mask]  # (N, 1)
        if self.model_type == "gupnet":
            losses["size3d"] = size3d_loss_gupnet(preds["size_3d"], size3d_target, preds["h3d_log_variance"])
            depth = preds["depth"]  # (N, 2) depth, log-variance
            losses["depth"] = laplacian_uncertainty_loss(depth[:, :1], depth_target, depth[:, 1:])
        else:
            losses["size3d"] = l1_loss(preds["size_3d"], size3d_target)
            losses["depth"] = did_depth_loss(
                preds,
                vis_target=targets["vis_depth"][mask],
                att_target=targets["att_depth"][mask],
                depth_mask=targets["depth_mask"][mask].bool(),
                depth_target=depth_target[:, 0],
            )
        return {name: losses[name] for name in HTL_TASKS}
