"""Training tasks: modules that turn a batch into a dict of named losses.

The trainer (``lib/engine/trainer.py``) only weights, sums and back-propagates what a task
returns. Two tasks exist:

* :class:`DetectorTask`: one detector and its :class:`~lib.losses.criterion.Criterion`: the
  teacher (``model.input: depth``) and the RGB baseline (``model.input: rgb``), docs/method.md, 'Framework'
  stages 1 and 2;
* ``lib.distiller.Distiller``: frozen teacher + student + distillation terms, docs/method.md, 'Framework'
  stage 3, chosen by :func:`uses_distiller`.

Both expose ``student_state_dict()`` (the weights of the detector that is evaluated and
exported) and ``inference_detector()`` (that detector as a module).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from lib.config import Config

LossFn = Callable[[Mapping[str, Any], Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]


class DetectorTask(nn.Module):
    """Detector + criterion: ``forward(batch) -> {loss name: () tensor}``.

    The network reads ``batch[input_key]`` ("rgb" for the student, "depth" for the teacher)
    and, in training, the GT objects of ``batch["targets"]`` as RoIs (docs/reference.md, 'RoI 3D head').
    """

    def __init__(self, detector: nn.Module, criterion: LossFn, *, input_key: str | None = None) -> None:
        """
        Args:
            detector: a ``lib.models`` detector (``forward(images, *, calib, coord_range, targets)``).
            criterion: ``(preds, targets) -> loss dict`` (``lib.losses.criterion.Criterion``).
            input_key: batch key of the input images; default ``detector.input_key``.
        """
        super().__init__()
        self.detector = detector
        self.criterion = criterion
        self.input_key = input_key if input_key is not None else detector.input_key

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        if self.input_key not in batch:
            raise KeyError(
                f"the batch has no '{self.input_key}' images (model.input={self.input_key!r}); "
                "depth inputs need the dataset's depth maps"
            )
        targets = batch["targets"]
        preds = self.detector(
            batch[self.input_key], calib=batch["calib"], coord_range=batch["coord_range"], targets=targets
        )
        return self.criterion(preds, targets)

    def student_state_dict(self) -> dict[str, torch.Tensor]:
        """The detector's weights (GUPNet key layout, docs/reference.md, 'State dict of the default
        model')."""
        return self.detector.state_dict()

    def inference_detector(self) -> nn.Module:
        """The detector that is evaluated."""
        return self.detector


def uses_distiller(cfg: Config) -> bool:
    """Distillation is on when any distillation weight is > 0 or a teacher checkpoint is named."""
    from lib.distiller import DistillSettings

    return DistillSettings.from_config(cfg).enabled


def build_task(cfg: Config) -> tuple[nn.Module, str]:
    """The training task of a config and its name ("detector" | "distiller"), on the CPU.

    Raises:
        ValueError / FileNotFoundError: bad model keys, missing backbone weights or, for
            distillation, a missing teacher / student checkpoint (from the builders).
    """
    if uses_distiller(cfg):
        from lib.distiller import Distiller

        return Distiller.from_config(cfg), "distiller"
    from lib.depth_bins import RpdSettings
    from lib.losses.criterion import Criterion, LossSettings
    from lib.models.build import ModelSettings
    from lib.models.loading import load_detector

    model, rpd = ModelSettings.from_config(cfg), RpdSettings.from_config(cfg)
    criterion = Criterion(model_type=model.type, loss=LossSettings.from_config(cfg), rpd=rpd)
    return DetectorTask(load_detector(cfg, role="train").detector, criterion), "detector"
