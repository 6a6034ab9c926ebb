"""The training loop: epochs of weighted-loss steps, evaluation, checkpoints (docs/reference.md, 'Training
schedules and hyper-parameters').

Read top to bottom like nanoGPT's ``train.py``: :meth:`Trainer.fit` runs the epochs;
:meth:`Trainer.train_one_epoch` is the step loop. The *task* (``lib/engine/task.py``
``DetectorTask`` or ``lib/distiller.py`` ``Distiller``) turns a batch into a dict of named
losses; the trainer only weights, sums, back-propagates and logs them.
Its helpers live in units of their own: :class:`lib.engine.metrics.LossMeter` (epoch means over
all ranks) and :class:`~lib.engine.metrics.MetricLogger` (every log record),
:class:`lib.engine.checkpoint.Checkpointer` (files, RNG states, rotation), and
:func:`htl_initial_losses` (GUPNet's pass before training).

Per epoch ``t`` (0-based): HTL weights for ``t`` (the 7 detection tasks; every other loss term
weighs 1) → steps (one optimizer step per ``accumulate_steps`` batches,
:func:`accumulation_step`) → epoch-mean losses pushed to HTL → ``scheduler.step()`` (per-epoch
schedule, ``lib/engine/optim.py``) → evaluation every ``eval_frequency`` epochs from
``eval_start`` and at the last epoch → checkpoints (``last.pth`` always,
``checkpoint_epoch_<N>.pth`` every ``save_frequency`` epochs, the newest ``keep_checkpoints``
of them kept, ``best.pth`` on a new best Car 3D Moderate AP40), N = epochs done.

Only the main process (rank 0) logs, evaluates and saves; every process steps. RNG states of
all ranks go into the checkpoint so that ``--resume`` continues bit-exactly (with
``experiment.deterministic``). A non-finite loss stops every rank with
:class:`NonFiniteLossError`, naming the term, the epoch and the batch's image ids; the last
checkpoint on disk stays the last good one.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from lib.config import ConfigError, check_record_ranges, section_settings
from lib.engine import dist as dist_utils
from lib.engine.checkpoint import Checkpointer, periodic_due
from lib.engine.dist import DistInfo, move_to_device
from lib.engine.metrics import LossMeter, MetricLogger
from lib.models.loading import CheckpointFile, open_checkpoint
from lib.utils.seed import make_generator, worker_init_fn

logger = logging.getLogger(__name__)

AMP_MODES = ("none", "bf16", "fp16")
# evaluate_fn(task, epochs_done) -> (score for best.pth, metrics dict to log)
EvaluateFn = Callable[[nn.Module, int], tuple[float, dict[str, Any]]]
EPOCH_SEED_STRIDE = 1_000_003  # worker seeds of epoch e: seed + rank + e * this


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; the message names the term, epoch and batch."""


@dataclass(frozen=True)
class TrainerSettings:
    """The ``trainer:`` config section; every default and meaning is in configs/base.yaml."""

    max_epoch: int
    eval_start: int
    eval_frequency: int
    save_frequency: int
    last_frequency: int
    keep_checkpoints: int
    log_interval: int
    amp: str
    grad_clip: float
    max_iters_per_epoch: int
    accumulate_steps: int
    htl_init_pass: bool

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise ConfigError(f"trainer.amp: unknown mode {self.amp!r} (choose from {', '.join(AMP_MODES)})")
        check_record_ranges(self, "trainer")  # lib/config.py RANGES

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> TrainerSettings:
        return section_settings(cls, section, name="trainer")


@dataclass(frozen=True)
class RunContext:
    """Where a training run lives and what its checkpoints record."""

    run_dir: Path  # receives checkpoints/, train.jsonl, eval.jsonl, tensorboard/
    device: torch.device
    dist: DistInfo = field(default_factory=DistInfo)
    config: Mapping[str, Any] = field(default_factory=dict)  # the resolved config, stored in checkpoints
    task_name: str = "detector"  # "detector" | "distiller"; resume refuses the other


def resolve_amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``trainer.amp`` on ``device`` (None = full fp32).

    "bf16" falls back to fp16 (with a GradScaler) on GPUs without bfloat16 support.
    """
    if amp == "none":
        return None
    if amp == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            logger.warning("trainer.amp=bf16: this GPU has no bfloat16 support; using fp16 with a GradScaler")
            return torch.float16
        return torch.bfloat16
    if amp == "fp16":
        if device.type == "cpu":
            logger.warning(
                "trainer.amp=fp16 on the CPU: float16 autocast is emulated there and ~20x slower than "
                "float32; use trainer.amp=bf16 (or none) on the CPU"
            )
        return torch.float16
    raise ValueError(f"trainer.amp: unknown mode {amp!r} (choose from {', '.join(AMP_MODES)})")


def accumulation_step(step: int, total: int, accumulate_steps: int) -> tuple[float, bool]:
    """Gradient accumulation: how loader batch ``step`` (0-based, of ``total``) enters an update.

    Batches are grouped in runs of ``accumulate_steps`` (the last run of an epoch may be shorter);
    each batch's loss is scaled by 1 / (its run's length), so the summed gradients are those of the
    mean loss over the run's samples: one update equals one step of a batch ``accumulate_steps``
    times larger (same per-epoch lr schedule). BatchNorm is the exception: it normalises with, and
    updates its running statistics from, each micro-batch, so a network with BatchNorm in train
    mode gets close to, not exactly, the full-batch step.

    Returns:
        (loss scale, whether the optimizer steps after this batch).
    """
    first = step - step % accumulate_steps
    size = min(accumulate_steps, total - first)
    return 1.0 / size, step == first + size - 1


def batch_image_ids(batch: Mapping[str, Any]) -> list[int]:
    """The KITTI frame ids of a batch (``batch["info"]["img_id"]``), or [] if it has none."""
    ids = batch.get("info", {}).get("img_id") if isinstance(batch.get("info"), Mapping) else None
    if ids is None:
        return []
    return [int(i) for i in torch.as_tensor(ids).flatten().tolist()]


class TrainLoader(DataLoader):
    """The shuffled train loader of one process; :meth:`set_epoch` prepares an epoch.

    The sample order and the worker seeds of epoch ``e`` follow (seed, rank, e) only, so a
    resumed run draws the same ones as an uninterrupted run.
    """

    def __init__(self, dataset: torch.utils.data.Dataset, *, seed: int, **kwargs: Any) -> None:
        super().__init__(dataset, generator=make_generator(seed), **kwargs)
        self.seed = seed  # seed + rank

    def set_epoch(self, epoch: int) -> None:
        """Sampler permutation, dataset epoch (if it has one) and worker seeds of ``epoch``."""
        self.sampler.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self.generator.manual_seed(self.seed + EPOCH_SEED_STRIDE * epoch)


def build_train_loader(
    dataset: torch.utils.data.Dataset,
    *,
    batch_size: int,
    num_workers: int,
    seed: int,
    dist_info: DistInfo,
    drop_last: bool = True,
    collate_fn: Callable | None = None,
) -> TrainLoader:
    """The shuffled train loader of this process.

    ``batch_size`` is the GLOBAL batch (config ``dataset.batch_size``): each of the
    ``world_size`` processes loads ``batch_size / world_size`` samples. A DistributedSampler is
    used even for one process, so the sample order depends only on (seed, epoch): process r of
    a DDP run gets positions r, r + world, ... of the same permutation, and the union of one
    step's batches equals the single-process batch (DDP == one process, up to BatchNorm).
    """
    if batch_size % dist_info.world_size != 0:
        raise ValueError(
            f"dataset.batch_size {batch_size} is the global batch and must be divisible by the "
            f"{dist_info.world_size} processes"
        )
    rank, world = dist_info.rank, dist_info.world_size
    sampler = DistributedSampler(
        dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=drop_last
    )
    return TrainLoader(
        dataset,
        seed=seed + rank,
        batch_size=batch_size // world,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        collate_fn=collate_fn,
        worker_init_fn=worker_init_fn,
        persistent_workers=False,
        pin_memory=False,
    )


def epoch_batches(loader: Iterable, epoch: int, max_iters: int) -> tuple[Iterable, int]:
    """(batches of ``epoch``, their number): the loader prepared for the epoch, capped at
    ``max_iters`` batches when that is > 0 (``trainer.max_iters_per_epoch``)."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    total = len(loader)
    if 0 < max_iters < total:
        return itertools.islice(loader, max_iters), max_iters
    return loader, total


@torch.no_grad()
def htl_initial_losses(
    task: nn.Module, batches: Iterable, total: int, *, device: torch.device, autocast: Callable, show: bool
) -> dict[str, float]:
    """GUPNet's "epoch 0" pass for HTL: mean losses of one pass before training (docs/reference.md,
    'Hierarchical Task Learning').

    Runs in train mode as GUPNet does (the task's train-time forward), but the BatchNorm
    running statistics are restored afterwards, so the pass leaves the model unchanged
    (docs/reference.md, 'Known bugs and quirks: Train-mode e0 pass' lists the drift as a GUPNet quirk).
    ``autocast()`` gives the AMP context; ``show``: draw a progress bar (main process). Returns the means over
    all ranks.
    """
    parameters = {name for name, _ in task.named_parameters()}
    buffers = {k: v.clone() for k, v in task.state_dict().items() if k not in parameters}
    task.train()
    meter = LossMeter()
    for batch in tqdm(batches, total=total, desc="HTL initial losses", disable=not show):
        batch = move_to_device(batch, device)
        with autocast():
            losses = task(batch)
        meter.add(losses)
    task.load_state_dict(buffers, strict=False)
    return meter.means()


def evaluation_due(settings: TrainerSettings, done: int) -> bool:
    """Whether to evaluate after ``done`` epochs: every ``eval_frequency`` epochs once
    ``eval_start`` are done, and after the last epoch (never when ``eval_frequency`` is 0)."""
    if settings.eval_frequency <= 0 or done < settings.eval_start:
        return False
    return done % settings.eval_frequency == 0 or done == settings.max_epoch


class Trainer:
    """Runs training epochs for one task on one device (a DDP replica under torchrun)."""

    def __init__(
        self,
        task: nn.Module,
        *,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        train_loader: Iterable,
        settings: TrainerSettings,
        run: RunContext,
        htl: Any = None,
        evaluate_fn: EvaluateFn | None = None,
    ) -> None:
        """
        Args:
            task: module whose ``forward(batch)`` returns {loss name: () tensor}; already on
                ``run.device``. Wrapped in DistributedDataParallel here when ``run.dist`` says so.
            optimizer, scheduler: over the task's trainable parameters; the scheduler is
                stepped once per epoch.
            train_loader: batches (dicts), e.g. :func:`build_train_loader`'s (its ``set_epoch``
                is called before each epoch).
            settings: the ``trainer:`` section; run: run folder, device, ranks, checkpoint metadata.
            htl: a ``HierarchicalTaskLearning`` (weights for the loss terms it names) or None.
            evaluate_fn: called on the main process with the unwrapped task and the number of
                epochs done; returns (Car 3D Moderate AP40, metrics). None: no evaluation.
        """
        self.task, self.optimizer, self.scheduler = task, optimizer, scheduler
        self.train_loader, self.settings, self.run = train_loader, settings, run
        self.htl, self.evaluate_fn = htl, evaluate_fn
        self.device, self.dist = run.device, run.dist
        self.model: nn.Module = task
        if self.dist.distributed:
            device_ids = [run.device.index] if run.device.type == "cuda" else None
            # Unused parameters happen legitimately (loss terms with weight 0, empty RoI batches).
            self.model = DistributedDataParallel(task, device_ids=device_ids, find_unused_parameters=True)
        self.amp_dtype = resolve_amp_dtype(settings.amp, run.device)
        self.scaler = torch.amp.GradScaler(run.device.type, enabled=self.amp_dtype == torch.float16)
        self.epoch = 0  # epochs done = the 0-based epoch to train next
        self.iteration = 0  # optimizer steps done
        self.best_metric = -math.inf
        ckpt_dir = Path(run.run_dir) / "checkpoints"
        self.checkpointer = Checkpointer(
            ckpt_dir, dist_info=run.dist, task_name=run.task_name, config=run.config
        )
        self.metrics = MetricLogger(run.run_dir, enabled=self.dist.is_main)

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict[str, Any]:
        """Train from ``self.epoch`` to ``max_epoch``; returns the last evaluation's metrics."""
        last_metrics: dict[str, Any] = {}
        if self.htl is not None and self.epoch == 0 and self.settings.htl_init_pass:
            batches = epoch_batches(self.train_loader, 0, self.settings.max_iters_per_epoch)
            means = htl_initial_losses(
                self.task, *batches, device=self.device, autocast=self._autocast, show=self.dist.is_main
            )
            self.htl.update(means)
        while self.epoch < self.settings.max_epoch:
            means = self.train_one_epoch(self.epoch)
            if self.htl is not None:
                self.htl.update(means)
            self.scheduler.step()
            self.epoch += 1
            metrics = self.maybe_evaluate()
            last_metrics = metrics or last_metrics
            self.save_checkpoints(
                improved=bool(metrics) and metrics["score"] > self.best_metric, metrics=metrics
            )
        self.metrics.flush()
        return last_metrics

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the train loader; returns the epoch-mean (unweighted) loss terms."""
        self.model.train()
        weights = self.htl.compute_weights(epoch) if self.htl is not None else {}
        batches, total = epoch_batches(self.train_loader, epoch, self.settings.max_iters_per_epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        self.metrics.epoch_start(epoch, self.settings.max_epoch, lr, weights)
        meter = LossMeter()
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        batches = self.metrics.progress(batches, total, f"epoch {epoch + 1}/{self.settings.max_epoch}")
        for step, batch in enumerate(batches):
            batch = move_to_device(batch, self.device)
            loss_scale, update = accumulation_step(step, total, self.settings.accumulate_steps)
            with self._sync_gradients(update):
                with self._autocast():
                    losses = self.model(batch)
                losses = {name: value.float() for name, value in losses.items()}  # weighted sum in fp32
                loss = sum(weights.get(name, 1.0) * value for name, value in losses.items())
                self._check_finite(losses, loss, epoch=epoch, step=step, batch=batch)
                self.scaler.scale(loss * loss_scale).backward()
            if update:
                self._optimizer_step()
            meter.add(losses)
            if self.metrics.enabled and (step % self.settings.log_interval == 0 or step == total - 1):
                record = {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in losses.items()}}
                self.metrics.step(epoch=epoch, step=step, iteration=self.iteration, lr=lr, losses=record)
        means = meter.means()
        self.metrics.epoch_end(epoch=epoch, lr=lr, seconds=time.perf_counter() - start, means=means)
        return means

    def _sync_gradients(self, update: bool) -> contextlib.AbstractContextManager:
        """DDP all-reduces gradients only on the micro-step that ends an update (``no_sync`` before)."""
        if update or not isinstance(self.model, DistributedDataParallel):
            return contextlib.nullcontext()
        return self.model.no_sync()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _optimizer_step(self) -> None:
        """Clip (if set), step the optimizer on the accumulated gradients, then clear them."""
        if self.settings.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.task.parameters(), self.settings.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.iteration += 1

    def _check_finite(
        self, losses: Mapping[str, torch.Tensor], total: torch.Tensor, *, epoch: int, step: int, batch: Any
    ) -> None:
        """Stop every rank with :class:`NonFiniteLossError` when any rank's loss is NaN/inf."""
        finite = bool(torch.isfinite(total))
        if dist_utils.all_true(finite, self.device):
            return
        bad = [name for name, value in losses.items() if not torch.isfinite(value)]
        where = f"epoch {epoch + 1}, batch {step} (image ids {batch_image_ids(batch)})"
        if finite:
            message = f"non-finite loss on another rank at {where}"
        else:
            message = f"non-finite loss term(s) {', '.join(map(repr, bad)) or 'total'} at {where}"
        raise NonFiniteLossError(
            f"{message}; training stopped, the last good checkpoint is in {self.checkpointer.folder} "
            "(lower the lr, set trainer.grad_clip, or check these frames' labels)"
        )

    # ------------------------------------------------------------------ evaluation
    def maybe_evaluate(self) -> dict[str, Any]:
        """Evaluate on the main process when the schedule says so; {} otherwise."""
        if not evaluation_due(self.settings, self.epoch):
            return {}
        metrics: dict[str, Any] = {}
        if self.dist.is_main and self.evaluate_fn is not None:  # other ranks wait at the barrier
            score, result = self.evaluate_fn(self.task, self.epoch)
            metrics = {"score": float(score), "result": result}
            self.metrics.evaluation(epoch=self.epoch, iteration=self.iteration, score=score, result=result)
        dist_utils.barrier()
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        """The trainer's part of a checkpoint (the Checkpointer adds RNG states and metadata)."""
        return {
            "epoch": self.epoch,
            "iteration": self.iteration,
            "model_state": self.task.student_state_dict(),
            "model": self.task.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "htl": self.htl.state_dict() if self.htl is not None else None,
            "best_metric": self.best_metric,
        }

    def save_checkpoints(self, *, improved: bool, metrics: Mapping[str, Any]) -> None:
        """last.pth (and the periodic / best files); every rank calls this (RNG gather).

        last.pth is written every ``trainer.last_frequency`` epochs, after the final one, and
        whenever a periodic or best file is due: on a few frames an epoch is a few steps, and
        writing a checkpoint can take a good share of such an epoch (BENCHMARKS.md, '2026-12-01
        (b): side-by-side training').
        """
        if improved:
            self.best_metric = float(metrics["score"])
        s = self.settings
        due = self.epoch % s.last_frequency == 0 or self.epoch == s.max_epoch
        if not (due or improved or periodic_due(self.epoch, s.save_frequency)):
            return
        state = self.checkpoint_state()
        self.checkpointer.save(
            state, epoch=self.epoch, every=s.save_frequency, keep=s.keep_checkpoints, best=improved
        )

    def resume(self, checkpoint: CheckpointFile | str | Path) -> None:
        """Restore model, optimizer, scheduler, scaler, HTL, counters and RNG states from a
        checkpoint already read (lib/models/loading.py ``open_checkpoint``) or a file."""
        if not isinstance(checkpoint, CheckpointFile):
            checkpoint = open_checkpoint(checkpoint, role="resume")
        ckpt, path = self.checkpointer.load(checkpoint), checkpoint.path
        self.task.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.htl is not None and ckpt["htl"] is not None:
            self.htl.load_state_dict(ckpt["htl"])
        self.epoch, self.iteration = int(ckpt["epoch"]), int(ckpt["iteration"])
        self.best_metric = float(ckpt["best_metric"])
        if self.dist.is_main:
            logger.info("resumed from %s at epoch %d (iteration %d)", path, self.epoch, self.iteration)

    def close(self) -> None:
        """Flush and close the metric writers."""
        self.metrics.close()
