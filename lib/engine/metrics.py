"""A training run's numbers: epoch-mean losses over all ranks, and the one writer of its metrics.

:class:`LossMeter` sums named loss terms batch by batch and gives their mean over every batch of
every process (one all-reduce), for HTL and the epoch log. :class:`MetricLogger` is the only
place that writes metrics: each record goes, from the main process, to the log file (through
``logging``), ``train.jsonl`` / ``eval.jsonl`` (:class:`lib.utils.logging.JsonlWriter`),
TensorBoard and the progress bar's postfix. On the other ranks every method is a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from lib.engine import dist as dist_utils
from lib.utils.logging import JsonlWriter

logger = logging.getLogger(__name__)


class LossMeter:
    """Running sums of named () loss tensors; :meth:`means` averages them over batches and ranks."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, losses: Mapping[str, torch.Tensor]) -> None:
        """Add one batch's loss terms (detached, float32; they stay on their device)."""
        for name, value in losses.items():
            self.sums[name] = self.sums.get(name, 0.0) + value.detach().float()
        self.count += 1

    def means(self) -> dict[str, float]:
        """{name: mean over this process's batches, averaged over all processes}, names sorted.

        Every process must have seen the same names (one collective for all of them).
        """
        if self.count == 0:
            raise RuntimeError("the train loader yielded no batches (dataset smaller than one batch?)")
        names = sorted(self.sums)
        means = dist_utils.all_reduce_mean(torch.stack([self.sums[n] / self.count for n in names]))
        return {n: float(v) for n, v in zip(names, means.tolist(), strict=True)}


class MetricLogger:
    """Fans each metric record out to the log, the JSONL files, TensorBoard and the progress bar."""

    def __init__(self, run_dir: str | Path, *, enabled: bool) -> None:
        """``enabled``: this is the main process (the others write nothing)."""
        self.enabled = enabled
        self.bar: tqdm | None = None
        self.train_log = self.eval_log = self.tensorboard = None
        if enabled:
            run_dir = Path(run_dir)
            self.train_log = JsonlWriter(run_dir / "train.jsonl")
            self.eval_log = JsonlWriter(run_dir / "eval.jsonl")
            from torch.utils.tensorboard import SummaryWriter  # slow import, main process only

            self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"))

    def progress(self, batches: Iterable, total: int, desc: str) -> Iterable:
        """``batches`` wrapped in the progress bar that :meth:`step` annotates."""
        self.bar = tqdm(batches, total=total, desc=desc, disable=not self.enabled)
        return self.bar

    def epoch_start(self, epoch: int, max_epoch: int, lr: float, weights: Mapping[str, float]) -> None:
        """Log line at the start of 0-based ``epoch``: lr and HTL weights."""
        if self.enabled:
            logger.info("epoch %d/%d  lr %.3g  weights %s", epoch + 1, max_epoch, lr, _fmt(weights))

    def step(self, *, epoch: int, step: int, iteration: int, lr: float, losses: Mapping[str, float]) -> None:
        """One step record: ``losses`` holds the weighted total under "loss" and every term."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{losses['loss']:.3f}")
        record = {"type": "step", "epoch": epoch + 1, "step": step, "iteration": iteration, "lr": lr}
        self.train_log.write({**record, **losses})
        self.tensorboard.add_scalar("train/loss", losses["loss"], iteration)
        self.tensorboard.add_scalar("train/lr", lr, iteration)
        for name, value in losses.items():
            if name != "loss":
                self.tensorboard.add_scalar(f"train/{name}", value, iteration)

    def epoch_end(self, *, epoch: int, lr: float, seconds: float, means: Mapping[str, float]) -> None:
        """The epoch's mean (unweighted) loss terms."""
        if self.enabled:
            logger.info("epoch %d done in %.0f s: %s", epoch + 1, seconds, _fmt(means))
            self.train_log.write({"type": "epoch", "epoch": epoch + 1, "lr": lr, "seconds": seconds, **means})

    def evaluation(self, *, epoch: int, iteration: int, score: float, result: Mapping[str, Any]) -> None:
        """An evaluation after ``epoch`` epochs: Car 3D Moderate AP40 and the full result."""
        if self.enabled:
            logger.info("epoch %d: Car 3D Moderate AP40 %.2f", epoch, score)
            record = {"epoch": epoch, "iteration": iteration, "car_3d_moderate_ap40": score}
            self.eval_log.write({**record, **result})
            self.tensorboard.add_scalar("eval/car_3d_moderate_ap40", score, epoch)

    def flush(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.flush()

    def close(self) -> None:
        """Flush and close TensorBoard (the JSONL files are closed after every record)."""
        if self.tensorboard is not None:
            self.tensorboard.close()


def _fmt(values: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in values.items()) or "-"
