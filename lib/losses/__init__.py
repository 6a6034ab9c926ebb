"""Training losses: detection terms, the depth-branch term, task weighting, distillation."""

from lib.losses.criterion import HTL_TASKS, Criterion, LossSettings, build_htl
from lib.losses.depth_branch import depth_branch_loss
from lib.losses.detection import DetectionLoss
from lib.losses.task_weighting import HierarchicalTaskLearning

__all__ = [
    "HTL_TASKS",
    "Criterion",
    "DetectionLoss",
    "HierarchicalTaskLearning",
    "LossSettings",
    "build_htl",
    "depth_branch_loss",
]
