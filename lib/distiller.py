"""Cross-modal distillation: an RGB student, a frozen depth-map teacher, and the KD losses.

``Distiller(batch)`` returns a dict of named, already-weighted losses:
the student's own :class:`~lib.losses.criterion.Criterion` terms (the trainer applies HTL to
those in ``HTL_TASKS``) plus the distillation terms that are on (weight > 0):

* ``dualkl`` — DualKL between the depth-branch distributions (docs/method.md, 'DualKL distillation') on the
  RPD-valid cells (every cell with ``all_pixels``), foreground cells × ``fg_weight``;
* ``dualkl_instance`` — the Laplace instance term on the RoI depths (docs/method.md, 'Optional instance
  term');
* ``feature``, ``affinity``, ``spearman``, ``response`` — MonoDistill's / MonoSKD's terms
  (docs/reference.md, 'Features and losses') on the four neck maps [s4, s8, s16, s32] and the heads.

Teacher and student come from the same builder. The teacher is frozen (``requires_grad`` off,
never in :meth:`Distiller.trainable_parameters`), runs under ``no_grad`` and stays in eval mode
while the student trains (``train()`` is overridden, as dinov2's meta-arch does), unless
``distill.teacher_bn: train`` asks for MonoSKD's behaviour (batch statistics; docs/reference.md,
'Networks and weights'). Feature terms compare adapted student maps (3×3 conv → ReLU → 1×1 conv per
level, docs/reference.md, 'Features and losses') with the raw teacher maps; the adapters exist only
when a feature term is on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lib.config import ConfigError, check_record_ranges, section_settings
from lib.datasets.masks import foreground_mask
from lib.depth_bins import RpdSettings
from lib.losses.criterion import Criterion, LossSettings
from lib.losses.distill import (
    DUAL_KL_MODES,
    SPEARMAN_MODES,
    affinity_loss,
    dual_kl_loss,
    foreground_feature_loss,
    gaussian_disc_mask,
    laplace_dual_kl_loss,
    require_torchsort,
    response_loss,
    spearman_loss,
)
from lib.models import ModelSettings
from lib.models.loading import load_detector

logger = logging.getLogger(__name__)

TEACHER_BN_MODES = ("eval", "train")
FEATURE_CELL_RULES = ("cover", "truncate")  # distill.feature_cells (feature_box_masks)
STUDENT_INPUT, TEACHER_INPUT = "rgb", "depth"  # batch keys (docs/method.md, 'Framework')


@dataclass(frozen=True)
class DualKLSettings:
    """``distill.dualkl`` (docs/method.md, 'DualKL distillation'); the term is on when ``weight`` > 0."""

    weight: float
    temperature: float
    head_mass: float
    gamma: float
    mode: str
    fg_weight: float
    all_pixels: bool
    instance_weight: float

    def __post_init__(self) -> None:
        if self.mode not in DUAL_KL_MODES:
            raise ConfigError(f"distill.dualkl.mode must be one of {DUAL_KL_MODES}, got {self.mode!r}")
        check_record_ranges(self, "distill.dualkl")  # lib/config.py RANGES


@dataclass(frozen=True)
class DistillSettings:
    """The ``distill:`` config section, checked; configs/base.yaml documents each key and its default.

    ``teacher_checkpoint`` / ``student_checkpoint`` are file paths (or None), read by
    :meth:`Distiller.from_config`.
    """

    teacher_checkpoint: str | None
    student_checkpoint: str | None
    teacher_bn: str
    dualkl: DualKLSettings
    feature_weight: float
    feature_cells: str
    affinity_weight: float
    spearman_weight: float
    spearman_strength: float
    spearman_mode: str
    response_weight: float

    def __post_init__(self) -> None:
        choices = {
            "teacher_bn": TEACHER_BN_MODES,
            "feature_cells": FEATURE_CELL_RULES,
            "spearman_mode": SPEARMAN_MODES,
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"distill.{key} must be one of {allowed}, got {getattr(self, key)!r}")
        check_record_ranges(self, "distill")  # lib/config.py RANGES
        if self.spearman_weight > 0:
            require_torchsort()  # a missing torchsort stops the run here, not at the first step

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> DistillSettings:
        """The ``distill`` section of a resolved config (:func:`lib.config.load_config`)."""
        return section_settings(cls, cfg["distill"], name="distill", nested={"dualkl": DualKLSettings})

    @property
    def enabled(self) -> bool:
        """Distillation is on when any distillation weight is > 0 or a teacher checkpoint is named."""
        weights = (
            self.dualkl.weight,
            self.dualkl.instance_weight,
            self.feature_weight,
            self.affinity_weight,
            self.spearman_weight,
            self.response_weight,
        )
        return any(w > 0 for w in weights) or self.teacher_checkpoint is not None

    @property
    def uses_adapters(self) -> bool:
        """Adapters exist only for the feature-map terms."""
        return self.feature_weight > 0 or self.affinity_weight > 0 or self.spearman_weight > 0

    @property
    def teacher_needs_heads(self) -> bool:
        """The response and Laplace instance terms read the teacher's 2D/RoI head outputs; the
        other terms need only its features and depth logits (``Detector.encode``)."""
        return self.response_weight > 0 or self.dualkl.instance_weight > 0


def build_adapter(channels: int) -> nn.Sequential:
    """MonoSKD's ``adapt_layer``: 3×3 conv C→C (bias) → ReLU → 1×1 conv C→C (bias).

    docs/reference.md, 'Features and losses'.
    """
    return nn.Sequential(
        nn.Conv2d(channels, channels, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, kernel_size=1),
    )


class Distiller(nn.Module):
    """Student + frozen teacher + adapters; ``forward(batch)`` → {loss name: () tensor}.

    Args:
        student: detector fed ``batch["rgb"]``.
        teacher: detector of the same class fed ``batch["depth"]``; frozen here.
        criterion: the student's training criterion, ``criterion(preds, targets) -> dict``.
        settings: which distillation terms are on, and their parameters.
        feature_channels: channels of the student's neck maps [s4, s8, s16, s32] (for the
            adapters); read from the student's backbone when omitted.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        criterion: Callable[[Mapping[str, Any], Mapping[str, Tensor]], dict[str, Tensor]],
        settings: DistillSettings,
        feature_channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if type(student) is not type(teacher):
            raise ValueError(
                f"teacher and student must be the same network, got {type(teacher).__name__} and "
                f"{type(student).__name__}"
            )
        self.settings = settings
        if self.settings.dualkl.weight > 0 and None in (
            getattr(student, "depth_branch", None),
            getattr(teacher, "depth_branch", None),
        ):
            raise ValueError(
                "distill.dualkl.weight > 0 needs the depth branch in both networks (model.depth_branch)"
            )
        self.student = student
        self.teacher = teacher.requires_grad_(False)
        self.criterion = criterion
        self.adapters: nn.ModuleList | None = None
        if self.settings.uses_adapters:
            if feature_channels is None:
                feature_channels = student.backbone.channels[student.first_level :]
            self.adapters = nn.ModuleList(build_adapter(c) for c in feature_channels)
        self.train(self.training)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Distiller:
        """Load both networks (lib/models/loading.py ``load_detector``), build the criterion.

        ``distill.teacher_checkpoint`` (required) and ``distill.student_checkpoint`` (optional,
        MonoSKD's "student initialised from the RGB baseline") may be this project's training or
        exported checkpoints or GUPNet / MonoSKD files: all keep the detector under
        ``model_state`` (lib/models/checkpoint_io.py; a MonoSKD distillation file gives its student).
        Both load strictly (lib/models/checkpoint_io.py: only the training-only depth branch may
        be absent from a file, or present for a network without one). ImageNet backbone weights
        are loaded only for a student that has no checkpoint.

        Raises:
            ValueError: ``distill.teacher_checkpoint`` is not set, or DualKL is on and the teacher
                file has no depth branch.
            CheckpointNotFoundError (a FileNotFoundError): a configured file does not exist (names
                file and key); CheckpointRoleError / CheckpointMismatchError: a file trained for
                another role, or that does not fit the configured network.
        """
        settings = DistillSettings.from_config(cfg)
        if not settings.teacher_checkpoint:
            raise ValueError("distill.teacher_checkpoint is not set: distillation needs a trained teacher")
        # The student is built first: its initial weights are the seeded RNG's first draws.
        student = load_detector(cfg, settings.student_checkpoint, role="student")
        teacher = load_detector(cfg, settings.teacher_checkpoint, role="teacher")
        if teacher.report.optional_missing and settings.dualkl.weight > 0:
            raise ValueError(
                f"distill.teacher_checkpoint ({settings.teacher_checkpoint}) has no depth branch, but "
                "distill.dualkl.weight > 0 distils the teacher's depth distribution: use a teacher "
                "trained with model.depth_branch: true"
            )
        model, rpd = ModelSettings.from_config(cfg), RpdSettings.from_config(cfg)
        criterion = Criterion(model_type=model.type, loss=LossSettings.from_config(cfg), rpd=rpd)
        return cls(student.detector, teacher.detector, criterion=criterion, settings=settings)

    # ------------------------------------------------------------------ modes and parameters
    def train(self, mode: bool = True) -> Distiller:
        """Set the student (and adapters) to ``mode``; the teacher stays in eval mode unless
        ``teacher_bn == "train"`` (MonoSKD parity, docs/reference.md, 'Networks and weights')."""
        super().train(mode)
        if self.settings.teacher_bn == "eval":
            self.teacher.eval()
        return self

    def named_trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """(name, parameter) of the student and the adapters, with ``requires_grad`` (for the optimizer)."""
        for name, param in self.named_parameters():
            if not name.startswith("teacher.") and param.requires_grad:
                yield name, param

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters the optimizer updates: student + adapters, never the teacher."""
        for _, param in self.named_trainable_parameters():
            yield param

    def student_state_dict(self) -> dict[str, Tensor]:
        """The student alone, keyed like a plain detector (export / evaluation)."""
        return self.student.state_dict()

    def inference_detector(self) -> nn.Module:
        """The network that is evaluated and exported: the student (the teacher is training-only)."""
        return self.student

    # ------------------------------------------------------------------ forward
    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Student criterion terms + the distillation terms that are on (each × its weight).

        Args:
            batch: the dataset batch (lib/datasets/kitti.py): rgb, depth (B, 3, H, W), calib (B, 3, 4),
                coord_range (B, 2, 2), targets (with rpd_mask, fg_mask, box2d, mask_2d, ...).
        """
        if TEACHER_INPUT not in batch:
            raise ValueError(
                f"the batch has no '{TEACHER_INPUT}' images, the teacher's input: build the dataset with "
                "load_depth=True (lib.datasets.kitti.build_dataset)"
            )
        targets = batch["targets"]
        inputs = {"calib": batch["calib"], "coord_range": batch["coord_range"], "targets": targets}
        student_out = self.student(batch[STUDENT_INPUT], **inputs)
        with torch.no_grad():
            if self.settings.teacher_needs_heads:
                teacher_out = self.teacher(batch[TEACHER_INPUT], **inputs)
            else:  # DualKL and the feature terms read only its features and depth logits
                teacher_out = self.teacher.encode(batch[TEACHER_INPUT])
        losses = dict(self.criterion(student_out, targets))
        losses.update(self.distill_losses(student_out, teacher_out, targets))
        return losses

    def distill_losses(
        self, student_out: Mapping[str, Any], teacher_out: Mapping[str, Any], targets: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """The distillation terms that are on, each already multiplied by its weight."""
        cfg = self.settings
        losses: dict[str, Tensor] = {}
        if cfg.dualkl.weight > 0:
            losses["dualkl"] = cfg.dualkl.weight * self._dual_kl(student_out, teacher_out, targets)
        if cfg.dualkl.instance_weight > 0:
            depth_s, depth_t = student_out["depth"], teacher_out["depth"]  # (N, 2) [depth, log-variance]
            losses["dualkl_instance"] = cfg.dualkl.instance_weight * laplace_dual_kl_loss(
                depth_s[:, 0], depth_s[:, 1], depth_t[:, 0], depth_t[:, 1], mode=cfg.dualkl.mode
            )
        if self.adapters is not None:
            student_feats = [
                adapt(f) for adapt, f in zip(self.adapters, student_out["features"], strict=True)
            ]
            teacher_feats = teacher_out["features"]
            if cfg.feature_weight > 0:
                masks = feature_box_masks(
                    targets["box2d"],
                    targets["mask_2d"],
                    [tuple(f.shape[-2:]) for f in student_feats],
                    grid_width=student_out["offset_2d"].shape[-1],
                    cells=cfg.feature_cells,
                )
                losses["feature"] = cfg.feature_weight * foreground_feature_loss(
                    student_feats, teacher_feats, masks
                )
            if cfg.affinity_weight > 0:
                losses["affinity"] = cfg.affinity_weight * affinity_loss(student_feats, teacher_feats)
            if cfg.spearman_weight > 0:
                losses["spearman"] = cfg.spearman_weight * spearman_loss(
                    student_feats, teacher_feats, strength=cfg.spearman_strength, mode=cfg.spearman_mode
                )
        if cfg.response_weight > 0:
            hf, wf = student_out["offset_2d"].shape[-2:]
            head_mask = gaussian_disc_mask(
                targets["box2d"], height=hf, width=wf, valid=targets["mask_2d"].bool()
            )
            heading_bin = targets["heading_bin"][targets["mask_2d"].bool()].reshape(-1)  # (N,) RoI row order
            terms = response_loss(student_out, teacher_out, head_mask=head_mask, heading_bin=heading_bin)
            losses["response"] = cfg.response_weight * sum(terms.values())
        return losses

    def _dual_kl(
        self, student_out: Mapping[str, Any], teacher_out: Mapping[str, Any], targets: Mapping[str, Tensor]
    ) -> Tensor:
        """DualKL over the RPD-valid cells (or all cells), foreground cells × fg_weight.

        docs/method.md, 'Depth-uncertainty weighting'.
        """
        cfg = self.settings.dualkl
        rpd_mask = targets["rpd_mask"].bool()  # (B, Hf, Wf)
        valid = torch.ones_like(rpd_mask) if cfg.all_pixels else rpd_mask
        fg = targets["fg_mask"].bool()
        weight = valid.float() * torch.where(fg, cfg.fg_weight, 1.0)  # (B, Hf, Wf)
        return dual_kl_loss(
            student_out["depth_logits"],
            teacher_out["depth_logits"],
            weight,
            temperature=cfg.temperature,
            head_mass=cfg.head_mass,
            gamma=cfg.gamma,
            mode=cfg.mode,
        )


def feature_box_masks(
    box2d: Tensor,
    valid: Tensor,
    sizes: Sequence[tuple[int, int]],
    *,
    grid_width: int,
    cells: str,
) -> list[Tensor]:
    """Per level (B, H, W) bool: the cells inside a GT 2D box, for the foreground feature term.

    ``cover`` (ours): every cell that a box overlaps (lib/datasets/masks.py). ``truncate``
    (MonoDistill's ``calculate_box_mask``): cells [int(x1/s), int(x2/s)) x [int(y1/s), int(y2/s)),
    which drops partly covered edge cells and can mark nothing for a small box (docs/parity.md).

    Args:
        box2d: (B, M, 4) x1, y1, x2, y2 in the px of a grid ``grid_width`` cells wide
            (``targets['box2d']``: stride-4 feature px).
        valid: (B, M) rows to use (``targets['mask_2d']``).
        sizes: (H, W) of each level; a level of width W has stride grid_width / W box units.
        cells: cover | truncate (``distill.feature_cells``).
    """
    if cells not in FEATURE_CELL_RULES:
        raise ValueError(f"distill.feature_cells must be one of {FEATURE_CELL_RULES}, got {cells!r}")
    masks = []
    for h, w in sizes:
        stride = grid_width / w
        # truncated corners are whole cells, where the cover rule's floor / ceil change nothing
        boxes = box2d if cells == "cover" else torch.trunc(box2d.float() / stride) * stride
        masks.append(foreground_mask(boxes, height=h, width=w, stride=stride, valid=valid))
    return masks
