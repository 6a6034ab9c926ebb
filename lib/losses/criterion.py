"""The training criterion of one network: detection terms + the depth-branch term.

The trainer multiplies exactly the :data:`HTL_TASKS` entries by their Hierarchical Task
Learning weights and adds every other entry as it is (docs/reference.md §2, docs/method.md §2.3).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from lib.depth_bins import DepthBins, soft_targets
from lib.losses.depth_branch import depth_branch_loss
from lib.losses.detection import HTL_TASKS, DetectionLoss

__all__ = ["HTL_TASKS", "Criterion"]


class Criterion:
    """Loss dict of a detector's outputs: 7 unweighted detection terms + ``depth_branch``."""

    def __init__(
        self,
        *,
        model_type: str,
        depth_branch_weight: float = 1.0,
        depth_branch_fg_weight: float = 5.0,
        bins: DepthBins | None = None,
        supervise_beyond: bool = False,
    ) -> None:
        """
        Args:
            model_type: ``did`` or ``gupnet`` (which depth / size3d losses apply).
            depth_branch_weight: multiplier of the depth-branch loss; 0 turns the term off.
            depth_branch_fg_weight: foreground cell weight inside that loss (docs/method.md §2.3).
            bins, supervise_beyond: the RPD settings (``rpd`` section) that turn the batch's
                ``rpd_depth`` into soft targets on its device; default ``DepthBins()``.
        """
        if depth_branch_weight < 0:
            raise ValueError(f"Criterion: depth_branch_weight must be >= 0, got {depth_branch_weight}")
        self.detection = DetectionLoss(model_type)
        self.depth_branch_weight = depth_branch_weight
        self.depth_branch_fg_weight = depth_branch_fg_weight
        self.bins = bins if bins is not None else DepthBins()
        self.supervise_beyond = supervise_beyond

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Criterion:
        """Build from a full config (``model.type``, ``loss.depth_branch_*``, ``rpd``)."""
        return cls(
            model_type=cfg["model"]["type"],
            depth_branch_weight=float(cfg["loss"]["depth_branch_weight"]),
            depth_branch_fg_weight=float(cfg["loss"]["depth_branch_fg_weight"]),
            bins=DepthBins.from_config(cfg["rpd"]),
            supervise_beyond=bool(cfg["rpd"]["supervise_beyond"]),
        )

    def __call__(self, preds: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Loss terms of one batch.

        Args:
            preds: the model's training outputs (lib/models/detector.py); ``depth_logits`` (B, K+1, H, W)
                only when the network has a depth branch.
            targets: the batch targets (lib/datasets/kitti.py); ``rpd_depth`` (expanded to soft
                targets here), ``rpd_mask`` and ``fg_mask`` are read for the depth branch.

        Returns:
            {name: () loss}: the :data:`HTL_TASKS` terms, plus ``depth_branch`` (already
            multiplied by its weight) when the model has the branch and the weight is > 0.
        """
        losses = self.detection(preds, targets)
        if self.depth_branch_weight > 0 and "depth_logits" in preds:
            channels = preds["depth_logits"].shape[1]
            if channels != self.bins.num_bins + 1:
                raise ValueError(
                    f"the depth branch has {channels} channels but the criterion's RPD bins want "
                    f"rpd.num_bins + 1 = {self.bins.num_bins + 1}: build both from one config"
                )
            rpd_target, _ = soft_targets(
                targets["rpd_depth"], self.bins, supervise_beyond=self.supervise_beyond
            )
            losses["depth_branch"] = self.depth_branch_weight * depth_branch_loss(
                preds["depth_logits"],
                rpd_target,
                targets["rpd_mask"].bool(),
                targets["fg_mask"].bool(),
                fg_weight=self.depth_branch_fg_weight,
            )
        return losses
