"""The ``loss:`` section (:class:`LossSettings`) and what it builds: the training criterion of one
network (detection terms + the depth-branch term) and the HTL weighter.

The trainer multiplies exactly the :data:`HTL_TASKS` entries by their Hierarchical Task
Learning weights and adds every other entry as it is (docs/reference.md, 'GUPNet losses', docs/method.md,
'Targets from projected LiDAR').
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from lib.config import ConfigError, check_record_ranges, section_settings
from lib.depth_bins import RpdSettings, soft_targets
from lib.losses.depth_branch import depth_branch_loss
from lib.losses.detection import HTL_TASKS, DetectionLoss
from lib.losses.task_weighting import HTL_INPUTS, TREND_STEP, HierarchicalTaskLearning

__all__ = ["HTL_TASKS", "Criterion", "LossSettings", "build_htl"]


@dataclass(frozen=True)
class LossSettings:
    """The ``loss:`` config section, checked; configs/base.yaml documents each key and its default.

    Attributes:
        htl: weight the :data:`HTL_TASKS` terms with Hierarchical Task Learning (:func:`build_htl`).
        htl_window: K, epoch means per loss-trend window. htl_horizon: T in epochs, None =
            ``trainer.max_epoch``. htl_inputs: how HTL reads the epoch means (lib/losses/task_weighting.py
            ``HTL_INPUTS``: ``by_name``, or ``monoskd_columns`` as MonoSKD's distillation trainer).
        depth_branch_weight: multiplier of the depth-branch loss; 0 turns the term off.
        depth_branch_fg_weight: foreground cell weight inside that loss (docs/method.md, 'Targets from
        projected LiDAR').
    """

    htl: bool
    htl_window: int
    htl_horizon: int | None
    htl_inputs: str
    depth_branch_weight: float
    depth_branch_fg_weight: float

    def __post_init__(self) -> None:
        if self.htl_window <= TREND_STEP:
            raise ConfigError(f"loss.htl_window must be > {TREND_STEP}, got {self.htl_window}")
        if self.htl_inputs not in HTL_INPUTS:
            raise ConfigError(f"loss.htl_inputs must be one of {list(HTL_INPUTS)}, got {self.htl_inputs!r}")
        check_record_ranges(self, "loss")  # lib/config.py RANGES (htl_horizon: null passes)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> LossSettings:
        """The ``loss`` section of a resolved config (:func:`lib.config.load_config`)."""
        return section_settings(cls, cfg["loss"], name="loss")


def build_htl(loss: LossSettings, *, max_epoch: int) -> HierarchicalTaskLearning | None:
    """The HTL weighter of a run (``loss.htl``), or None when HTL is off.

    Its horizon is ``loss.htl_horizon``, or the run's ``max_epoch`` when that is null.
    """
    if not loss.htl:
        return None
    horizon = loss.htl_horizon if loss.htl_horizon is not None else max_epoch
    return HierarchicalTaskLearning(num_epochs=horizon, window=loss.htl_window, inputs=loss.htl_inputs)


class Criterion:
    """Loss dict of a detector's outputs: 7 unweighted detection terms + ``depth_branch``."""

    def __init__(self, *, model_type: str, loss: LossSettings, rpd: RpdSettings) -> None:
        """
        Args:
            model_type: ``did`` or ``gupnet`` (``model.type``: which depth / size3d losses apply).
            loss: the ``loss`` section (the depth-branch weights).
            rpd: the ``rpd`` section: the bins and ``supervise_beyond`` that turn the batch's
                ``rpd_depth`` into soft targets on its device.
        """
        self.detection = DetectionLoss(model_type)
        self.depth_branch_weight = loss.depth_branch_weight
        self.depth_branch_fg_weight = loss.depth_branch_fg_weight
        self.bins = rpd.bins
        self.supervise_beyond = rpd.supervise_beyond

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
