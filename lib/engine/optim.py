"""Optimiser parameter groups and the learning-rate schedule of GUPNet (docs/reference.md, 'Training schedules
and hyper-parameters').

Schedule, stepped once per epoch (``epoch`` is 0-based, the epoch about to be trained):

* warm-up, epochs ``0 .. warmup_epochs-1``: cosine from ``warmup_start_lr`` to the base lr,
  ``lr(e) = start + (base - start) * (1 - cos(pi * e / warmup_epochs)) / 2``
  (GUPNet/MonoSKD: 1e-5, 1.05e-4, 3.52e-4, 6.58e-4, 9.05e-4, then the base 1e-3);
* afterwards the base lr times ``decay_rate`` for every entry of ``decay_list`` that is
  ``<= e``.

``decay_list`` holds the epochs at which the decayed lr is FIRST USED. GUPNet's config says
[90, 120], but its LambdaLR is stepped only after the 5 warm-up epochs, so its lr really drops
at epochs 96 and 126 (1-based), i.e. 95 and 125 0-based (docs/reference.md, 'Training schedules and
hyper-parameters' and 'Known bugs and quirks: LR milestones', confirmed in MonoSKD's log). To reproduce
GUPNet's effective schedule the base config therefore sets ``decay_list: [95, 125]``; the schedule here
applies the list as written, without hidden offsets. ``warmup: false`` turns the warm-up off
(``warmup_epochs`` is then ignored); the key is GUPNet's (its config says ``warmup: True``) and short runs use
it (configs/demo/base.yaml).

The ``optimizer:`` and ``lr_scheduler:`` sections are parsed once into :class:`OptimizerSettings`
and :class:`LrSchedulerSettings` (``from_config``); the builders take those objects.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from lib.config import ConfigError, check_record_ranges, section_settings

FUSED_DEVICES = {"cpu", "cuda"}  # device types with fused Adam/SGD kernels
OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class OptimizerSettings:
    """The ``optimizer:`` section (defaults and meanings: configs/base.yaml)."""

    type: str  # "adam" | "sgd"
    lr: float  # base learning rate
    weight_decay: float  # L2 decay of non-bias parameters
    momentum: float  # SGD momentum (Adam ignores it)

    def __post_init__(self) -> None:
        if self.type not in OPTIMIZERS:
            raise ConfigError(
                f"optimizer.type: unknown optimizer {self.type!r} (choose from {', '.join(OPTIMIZERS)})"
            )
        check_record_ranges(self, "optimizer")  # lib/config.py RANGES

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> OptimizerSettings:
        return section_settings(cls, section, name="optimizer")


@dataclass(frozen=True)
class LrSchedulerSettings:
    """The ``lr_scheduler:`` section (defaults and meanings: configs/base.yaml, module docstring)."""

    warmup: bool  # false: no warm-up, whatever warmup_epochs says
    warmup_epochs: int
    warmup_start_lr: float
    decay_rate: float
    decay_list: tuple[int, ...]  # 0-based epochs from which the lr is multiplied by decay_rate once more

    def __post_init__(self) -> None:
        object.__setattr__(self, "decay_list", tuple(self.decay_list))
        if self.warmup_epochs < (1 if self.warmup else 0):
            raise ConfigError(
                f"lr_scheduler.warmup_epochs must be >= {1 if self.warmup else 0}, got {self.warmup_epochs}"
                + (" (lr_scheduler.warmup=false turns the warm-up off)" if self.warmup else "")
            )
        if any(not isinstance(e, int) or isinstance(e, bool) or e < 0 for e in self.decay_list):
            raise ConfigError(
                f"lr_scheduler.decay_list must hold epochs (ints >= 0), got {list(self.decay_list)}"
            )
        check_record_ranges(self, "lr_scheduler")  # lib/config.py RANGES

    @property
    def effective_warmup_epochs(self) -> int:
        """The warm-up length the schedule uses (0 when ``warmup`` is off)."""
        return self.warmup_epochs if self.warmup else 0

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> LrSchedulerSettings:
        return section_settings(cls, section, name="lr_scheduler")


def build_param_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]], *, weight_decay: float
) -> list[dict]:
    """Split trainable parameters into a decayed group and a no-decay group for biases.

    GUPNet gives weight decay 0 to every parameter whose name contains "bias" (docs/reference.md, 'Training
    schedules and hyper-parameters'); BatchNorm weights keep the decay, as there. Frozen parameters
    (requires_grad False) are left out, so a frozen teacher never reaches the optimiser.

    Returns:
        [{"params": [...], "weight_decay": weight_decay}, {"params": [...], "weight_decay": 0.0}]
        (an empty group is dropped).
    """
    decay, no_decay = [], []
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        (no_decay if "bias" in name else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("no trainable parameters: every parameter has requires_grad=False")
    return groups


def build_optimizer(
    named_parameters: Iterable[tuple[str, nn.Parameter]], settings: OptimizerSettings
) -> torch.optim.Optimizer:
    """Adam (GUPNet's default) or SGD with momentum over :func:`build_param_groups`.

    Args:
        named_parameters: ``module.named_parameters()`` of what is trained.
        settings: the ``optimizer:`` section.

    The update runs as one fused kernel over all parameters when they live on a CPU or CUDA
    device: the same update up to float rounding, several times faster than the per-tensor loop
    for the hundreds of small tensors of these networks (BENCHMARKS.md, training throughput).
    """
    groups = build_param_groups(named_parameters, weight_decay=settings.weight_decay)
    devices = {p.device.type for group in groups for p in group["params"]}
    fused = devices <= FUSED_DEVICES and bool(devices)
    if settings.type == "adam":
        return torch.optim.Adam(groups, lr=settings.lr, fused=fused)
    return torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum, fused=fused)


def lr_factor(
    epoch: int,
    *,
    base_lr: float,
    warmup_epochs: int,
    warmup_start_lr: float,
    decay_rate: float,
    decay_list: Sequence[int],
) -> float:
    """The lr of 0-based ``epoch`` divided by ``base_lr`` (see the module docstring).

    ``warmup_epochs`` 0 turns the warm-up off.
    """
    if epoch < warmup_epochs:
        cosine = (1.0 - math.cos(math.pi * epoch / warmup_epochs)) / 2.0
        return (warmup_start_lr + (base_lr - warmup_start_lr) * cosine) / base_lr
    return decay_rate ** sum(1 for d in decay_list if epoch >= d)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, settings: LrSchedulerSettings) -> LambdaLR:
    """A per-epoch LambdaLR implementing :func:`lr_factor` for every parameter group.

    Call ``scheduler.step()`` once after each epoch; ``scheduler.last_epoch`` is then the
    0-based epoch the current lr belongs to. All groups must share one base lr.
    """
    base_lrs = {group["lr"] for group in optimizer.param_groups}
    if len(base_lrs) != 1:
        raise ValueError(f"the schedule needs one base lr for all parameter groups, got {sorted(base_lrs)}")
    factor = functools.partial(
        lr_factor,
        base_lr=base_lrs.pop(),
        warmup_epochs=settings.effective_warmup_epochs,
        warmup_start_lr=settings.warmup_start_lr,
        decay_rate=settings.decay_rate,
        decay_list=settings.decay_list,
    )
    return LambdaLR(optimizer, factor)
