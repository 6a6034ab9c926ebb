"""Optimiser parameter groups and the learning-rate schedule of GUPNet (docs/reference.md §5).

Schedule, stepped once per epoch (``epoch`` is 0-based, the epoch about to be trained):

* warm-up, epochs ``0 .. warmup_epochs-1``: cosine from ``warmup_start_lr`` to the base lr,
  ``lr(e) = start + (base - start) * (1 - cos(pi * e / warmup_epochs)) / 2``
  (GUPNet/MonoSKD: 1e-5, 1.05e-4, 3.52e-4, 6.58e-4, 9.05e-4, then the base 1e-3);
* afterwards the base lr times ``decay_rate`` for every entry of ``decay_list`` that is
  ``<= e``.

``decay_list`` holds the epochs at which the decayed lr is FIRST USED. GUPNet's config says
[90, 120], but its LambdaLR is stepped only after the 5 warm-up epochs, so its lr really drops
at epochs 96 and 126 (1-based), i.e. 95 and 125 0-based (docs/reference.md §5, §9.9, confirmed in
MonoSKD's log). To reproduce GUPNet's effective schedule the base config therefore sets
``decay_list: [95, 125]``; the schedule here applies the list as written, without hidden offsets.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

FUSED_DEVICES = {"cpu", "cuda"}  # device types with fused Adam/SGD kernels
OPTIMIZERS = ("adam", "sgd")


def build_param_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]], *, weight_decay: float
) -> list[dict]:
    """Split trainable parameters into a decayed group and a no-decay group for biases.

    GUPNet gives weight decay 0 to every parameter whose name contains "bias" (docs/reference.md §5);
    BatchNorm weights keep the decay, as there. Frozen parameters (requires_grad False) are left
    out, so a frozen teacher never reaches the optimiser.

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
    named_parameters: Iterable[tuple[str, nn.Parameter]],
    *,
    name: str,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """Adam (GUPNet's default) or SGD with momentum over :func:`build_param_groups`.

    Args:
        named_parameters: ``module.named_parameters()`` of what is trained.
        name: "adam" | "sgd" (config ``optimizer.type``).
        lr: base learning rate; weight_decay: L2 decay of non-bias parameters.
        momentum: SGD momentum (ignored by Adam).

    The update runs as one fused kernel over all parameters when they live on a CPU or CUDA
    device: the same update up to float rounding, several times faster than the per-tensor loop
    for the hundreds of small tensors of these networks (BENCHMARKS.md, training throughput).
    """
    groups = build_param_groups(named_parameters, weight_decay=weight_decay)
    devices = {p.device.type for group in groups for p in group["params"]}
    fused = devices <= FUSED_DEVICES and bool(devices)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, fused=fused)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, fused=fused)
    raise ValueError(f"optimizer.type: unknown optimizer {name!r} (choose from {', '.join(OPTIMIZERS)})")


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


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    warmup_epochs: int,
    warmup_start_lr: float,
    decay_rate: float,
    decay_list: Sequence[int],
) -> LambdaLR:
    """A per-epoch LambdaLR implementing :func:`lr_factor` for every parameter group.

    Call ``scheduler.step()`` once after each epoch; ``scheduler.last_epoch`` is then the
    0-based epoch the current lr belongs to. All groups must share one base lr.
    """
    base_lrs = {group["lr"] for group in optimizer.param_groups}
    if len(base_lrs) != 1:
        raise ValueError(f"the schedule needs one base lr for all parameter groups, got {sorted(base_lrs)}")
    if warmup_epochs < 0:
        raise ValueError(f"lr_scheduler.warmup_epochs must be >= 0, got {warmup_epochs}")
    factor = functools.partial(
        lr_factor,
        base_lr=base_lrs.pop(),
        warmup_epochs=warmup_epochs,
        warmup_start_lr=warmup_start_lr,
        decay_rate=decay_rate,
        decay_list=tuple(decay_list),
    )
    return LambdaLR(optimizer, factor)


def lr_scheduler_settings(section: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`build_lr_scheduler` from a config's ``lr_scheduler``
    section (``warmup: false`` means no warm-up epochs)."""
    return {
        "warmup_epochs": section["warmup_epochs"] if section["warmup"] else 0,
        "warmup_start_lr": section["warmup_start_lr"],
        "decay_rate": section["decay_rate"],
        "decay_list": section["decay_list"],
    }
