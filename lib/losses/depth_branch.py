"""Loss of the dense depth-prediction branch on RPD soft targets (docs/method.md, 'Targets from projected
LiDAR')."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def depth_branch_loss(
    logits: Tensor, target: Tensor, valid: Tensor, fg_mask: Tensor, *, fg_weight: float
) -> Tensor:
    """Foreground-weighted soft cross-entropy over the K+1 depth bins (docs/method.md, 'Targets from projected
    LiDAR').

    Per feature cell, CE = -Σ_k target_k · log softmax(logits)_k. Valid cells are weighted
    ``fg_weight`` inside a GT 2D box (``fg_mask``) and 1 elsewhere; the loss is the weighted
    sum divided by the sum of weights, so its scale does not depend on how many cells have
    LiDAR depth. A batch without any valid cell gives 0.

    Args:
        logits: (B, K+1, H, W) depth-branch logits (stride-4 feature grid).
        target: (B, K+1, H, W) soft two-hot RPD targets (each valid cell sums to 1).
        valid: (B, H, W) bool, cells that have a target.
        fg_mask: (B, H, W) bool, cells inside a GT 2D box of a trained class.
        fg_weight: weight of a foreground cell relative to a background one (≥ 0;
            ``loss.depth_branch_fg_weight``).

    Returns:
        () float32 loss.
    """
    if fg_weight < 0:
        raise ValueError(f"depth_branch_loss: fg_weight must be >= 0, got {fg_weight}")
    if logits.shape != target.shape or logits.shape[:1] + logits.shape[2:] != valid.shape:
        raise ValueError(
            f"depth_branch_loss: logits {tuple(logits.shape)}, target {tuple(target.shape)} and "
            f"valid {tuple(valid.shape)} must be (B, K+1, H, W), (B, K+1, H, W), (B, H, W)"
        )
    ce = -(target.float() * F.log_softmax(logits.float(), dim=1)).sum(dim=1)  # (B, H, W)
    weight = torch.where(fg_mask, fg_weight, 1.0) * valid  # (B, H, W), 0 where invalid
    weighted = torch.where(valid, ce * weight, 0.0).sum()
    weight_sum = weight.sum()
    return weighted / torch.where(weight_sum > 0, weight_sum, 1.0)
