"""Hierarchical Task Learning: per-epoch weights of the detection terms (GUPNet, docs/reference.md,
'Hierarchical Task Learning').

A dependent task (3D offset, size, heading, depth) starts training only once its pre-tasks
(2D box, then 3D size for depth) have stopped improving quickly. At epoch t, from a window of
K (``window``) epoch-mean losses L[0..K-1] (oldest first):

    trend_j   = mean_{i=0..K-3} (L_j[i] - L_j[i+2])            (signed, as GUPNet's code)
    ls_j      = 1 - relu(trend_j / trend_j(first window))       learning situation
    α_i       = Π_{j ∈ pre(i)} ls_j
    w_i(t)    = clip((t - K) / (T - K), 0, 1) ^ max(1 - α_i, 0)  T = num_epochs (the horizon)

Tasks without pre-tasks always weigh 1; dependent tasks weigh 0 until a window exists.

Call order in the trainer: optionally ``update(e0)`` with GUPNet's "epoch 0" pass (mean losses
of one pass over the train loader before training; ``trainer.htl_init_pass``: GUPNet pushes it,
MonoSKD does not); then per epoch t: ``compute_weights(t)``
→ train → ``update(means of epoch t)``. GUPNet computes epoch t's weights before it pushes
epoch t-1's means, so its window is the K means *before the latest one*; this class keeps that
one-epoch lag, so the weights equal GUPNet's (with the e0 pass) and MonoSKD's (without: MonoSKD
skips the e0 push) epoch for epoch: 0 for epochs 0..K, then (1/(T-K))^(1-α) at t = K+1.

Followed from GUPNet's code: signed differences (the paper writes |L'|); the heatmap is not
a pre-task (the paper lists it); ls is not clipped to [0, 1] (a trend steeper than the first
one gives ls < 0, hence α < 0 and a smaller weight); the time factor's offset equals K.
T is a config key, ``loss.htl_horizon`` (null = ``trainer.max_epoch``); GUPNet and MonoSKD
hard-code 140, which every shipped config that follows them sets (docs/parity.md: weights equal
to the reference's over a 30-epoch history, fixture schedule_decode_htl).
Fixed (docs/reference.md, 'Known bugs and quirks: HTL as coded'; none occurs on that history): a first trend
of 0 (a pre-task loss flat over the first window) counts as learned (ls = 1) instead of dividing
by zero; the exponent 1 - α is clipped at 0, so two pre-tasks with ls < 0 (α > 1) give
weight 1 instead of a weight above 1 that overflows when a first trend was tiny; the time
factor is clipped at 0 (never negative to a fractional power); the state (last K+1 means
and the first trend) is checkpointed via :meth:`state_dict`; the weighter takes plain floats,
never loss tensors that keep graphs alive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# GUPNet's task graph (docs/reference.md, 'Hierarchical Task Learning'): task → pre-tasks whose learning
# situation gates it.
GUPNET_PRE_TASKS: dict[str, tuple[str, ...]] = {
    "seg": (),
    "size2d": (),
    "offset2d": (),
    "offset3d": ("size2d", "offset2d"),
    "size3d": ("size2d", "offset2d"),
    "heading": ("size2d", "offset2d"),
    "depth": ("size2d", "size3d", "offset2d"),
}

# Epoch-mean differences are taken two epochs apart (GUPNet: L[i] - L[i+2]).
TREND_STEP = 2

# How the epoch means reach the weighter (``loss.htl_inputs``): ``by_name``, or as MonoSKD's
# distillation trainer hands them over (docs/parity.md, 'Training trajectories'): its epoch means
# list the KD terms first (MONOSKD_MEAN_ORDER), and its HTL reads task i of its epoch-0 order
# (MONOSKD_READ_ORDER) from the i-th of them, so offset2d follows the affinity term, size2d the
# response term, depth the Spearman term, offset3d offset2d, and so on.
HTL_INPUTS = ("by_name", "monoskd_columns")
MONOSKD_MEAN_ORDER = ("affinity", "response", "spearman", "offset2d", "size2d", "depth", "offset3d")
MONOSKD_READ_ORDER = ("offset2d", "size2d", "depth", "offset3d", "size3d", "heading", "seg")


def monoskd_columns(means: Mapping[str, float]) -> dict[str, float]:
    """The task means MonoSKD's distillation HTL reads from epoch means ``means`` (by our names).

    Raises:
        ValueError: a term of :data:`MONOSKD_MEAN_ORDER` is missing (its weight is 0 in the config).
    """
    missing = [name for name in MONOSKD_MEAN_ORDER if name not in means]
    if missing:
        raise ValueError(f"loss.htl_inputs=monoskd_columns needs the epoch means of {missing}")
    pairs = zip(MONOSKD_READ_ORDER, MONOSKD_MEAN_ORDER, strict=True)
    return {task: float(means[name]) for task, name in pairs}


class HierarchicalTaskLearning:
    """Loss-trend-driven task weights; see the module docstring for the formula."""

    def __init__(
        self,
        *,
        num_epochs: int,
        window: int,
        pre_tasks: Mapping[str, tuple[str, ...]] = GUPNET_PRE_TASKS,
        inputs: str = "by_name",
    ) -> None:
        """
        Args:
            num_epochs: the horizon T (epochs): the time factor reaches 1 at t = T (GUPNet and
                MonoSKD: 140, whatever the training length).
            window: K, the number of epoch means in the FIFO (≥ 3 for a two-epoch trend;
                ``loss.htl_window``).
            pre_tasks: task → names of its pre-tasks; every pre-task must itself be a task.
            inputs: one of :data:`HTL_INPUTS`: how :meth:`update` reads a task's epoch mean.
        """
        if window <= TREND_STEP:
            raise ValueError(f"HierarchicalTaskLearning: window must be > {TREND_STEP}, got {window}")
        if num_epochs < 1:
            raise ValueError(f"HierarchicalTaskLearning: num_epochs must be >= 1, got {num_epochs}")
        for task, pres in pre_tasks.items():
            unknown = [p for p in pres if p not in pre_tasks]
            if unknown:
                raise ValueError(f"HierarchicalTaskLearning: pre-tasks {unknown} of '{task}' are not tasks")
        if inputs not in HTL_INPUTS:
            raise ValueError(f"HierarchicalTaskLearning: inputs must be one of {HTL_INPUTS}, got {inputs!r}")
        if inputs == "monoskd_columns" and set(pre_tasks) != set(MONOSKD_READ_ORDER):
            raise ValueError("HierarchicalTaskLearning: monoskd_columns needs GUPNet's seven tasks")
        self.inputs = inputs
        self.num_epochs = num_epochs
        self.window = window
        self.pre_tasks = {task: tuple(pres) for task, pres in pre_tasks.items()}
        self.tasks: tuple[str, ...] = tuple(self.pre_tasks)
        self.history: list[dict[str, float]] = []  # the last K+1 epoch means, oldest first
        self.init_trend: dict[str, float] | None = None  # trend of the first window

    def _trend(self, window: list[dict[str, float]]) -> dict[str, float]:
        """Mean signed decrease over TREND_STEP epochs within K epoch means, per task."""
        pairs = range(self.window - TREND_STEP)
        return {
            task: sum(window[i][task] - window[i + TREND_STEP][task] for i in pairs) / len(pairs)
            for task in self.tasks
        }

    def _has_window(self) -> bool:
        """Whether K means exist before the latest one (GUPNet's full FIFO)."""
        return len(self.history) > self.window

    def update(self, epoch_mean_losses: Mapping[str, float]) -> None:
        """Push one epoch's mean losses (keys beyond the tasks are ignored; ``monoskd_columns``
        inputs: read as :func:`monoskd_columns` reads them).

        Raises:
            ValueError: a task's mean is missing or not finite.
        """
        if self.inputs == "monoskd_columns":
            epoch_mean_losses = monoskd_columns(epoch_mean_losses)
        entry = {}
        for task in self.tasks:
            if task not in epoch_mean_losses:
                raise ValueError(f"HierarchicalTaskLearning.update: no mean loss for task '{task}'")
            value = float(epoch_mean_losses[task])
            if not math.isfinite(value):
                raise ValueError(f"HierarchicalTaskLearning.update: mean loss of '{task}' is {value}")
            entry[task] = value
        self.history = [*self.history, entry][-(self.window + 1) :]
        if self.init_trend is None and self._has_window():
            self.init_trend = self._trend(self.history[:-1])

    def learning_situation(self) -> dict[str, float]:
        """ls_j = 1 - relu(trend_j / first trend_j) over the K means before the latest one; 1 if
        the first trend was 0."""
        if self.init_trend is None or not self._has_window():
            raise RuntimeError("HierarchicalTaskLearning: fewer than window + 1 epoch means so far")
        trend = self._trend(self.history[:-1])
        return {
            task: 1.0 - max(trend[task] / self.init_trend[task], 0.0) if self.init_trend[task] != 0 else 1.0
            for task in self.tasks
        }

    def compute_weights(self, epoch: int) -> dict[str, float]:
        """Weights for (0-based) ``epoch`` from the losses pushed so far.

        Returns:
            {task: weight}: 1 for tasks without pre-tasks; for the others 0 until K + 1 epoch
            means were pushed, then clip((epoch - K)/(T - K), 0, 1) ** max(1 - α, 0).
        """
        weights = {task: 1.0 if not pres else 0.0 for task, pres in self.pre_tasks.items()}
        if not self._has_window():
            return weights
        horizon = max(self.num_epochs - self.window, 1)
        time = min(max((epoch - self.window) / horizon, 0.0), 1.0)
        if time == 0.0:
            return weights
        ls = self.learning_situation()
        for task, pres in self.pre_tasks.items():
            if pres:
                alpha = math.prod(ls[p] for p in pres)
                weights[task] = time ** max(1.0 - alpha, 0.0)
        return weights

    def state_dict(self) -> dict[str, Any]:
        """Plain-Python state for checkpoints (loadable with ``torch.load(weights_only=True)``)."""
        return {
            "tasks": list(self.tasks),
            "window": self.window,
            "history": [dict(entry) for entry in self.history],
            "init_trend": None if self.init_trend is None else dict(self.init_trend),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; the tasks and window must match this instance."""
        if list(state["tasks"]) != list(self.tasks) or state["window"] != self.window:
            raise ValueError(
                f"HierarchicalTaskLearning.load_state_dict: checkpoint has tasks {list(state['tasks'])} "
                f"and window {state['window']}, this run {list(self.tasks)} and {self.window}"
            )
        self.history = [{task: float(entry[task]) for task in self.tasks} for entry in state["history"]]
        init = state["init_trend"]
        self.init_trend = None if init is None else {task: float(init[task]) for task in self.tasks}
