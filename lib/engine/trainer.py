"""The training loop: epochs of weighted-loss steps, evaluation, checkpoints (docs/reference.md §5).

Read top to bottom like nanoGPT's ``train.py``: :meth:`Trainer.fit` runs the epochs;
:meth:`Trainer.train_one_epoch` is the step loop. The *task* (``lib/engine/task.py``
``DetectorTask`` or ``lib/distiller.py`` ``Distiller``) turns a batch into a dict of named
losses; the trainer only weights, sums, back-propagates and logs them (STYLE "Models, losses").

Per epoch ``t`` (0-based): HTL weights for ``t`` (the 7 detection tasks; every other loss term
weighs 1) → steps (one optimizer step per ``accumulate_steps`` batches,
:func:`accumulation_step`) → epoch-mean losses pushed to HTL → ``scheduler.step()`` (per-epoch schedule,
``lib/engine/optim.py``) → evaluation every ``eval_frequency`` epochs from ``eval_start`` and
at the last epoch → checkpoints (``last.pth`` always, ``checkpoint_epoch_<N>.pth`` every
``save_frequency`` epochs, ``best.pth`` on a new best Car 3D Moderate AP40), N = epochs done.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from lib.engine import dist as dist_utils
from lib.engine.checkpoint import atomic_link, atomic_save, git_sha, remove_temp_files
from lib.engine.dist import move_to_device
from lib.models.checkpoint_io import load_checkpoint
from lib.utils.logging import JsonlWriter
from lib.utils.seed import capture_rng_state, make_generator, restore_rng_state, worker_init_fn

logger = logging.getLogger(__name__)

AMP_MODES = ("none", "bf16", "fp16")
# evaluate_fn(task, epochs_done) -> (score for best.pth, metrics dict to log)
EvaluateFn = Callable[[nn.Module, int], tuple[float, dict[str, Any]]]


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; the message names the term, epoch and batch."""


@dataclass(frozen=True)
class TrainerSettings:
    """The ``trainer:`` config section as typed values (see configs/base.yaml)."""

    max_epoch: int
    eval_start: int = 0
    eval_frequency: int = 10
    save_frequency: int = 10
    log_interval: int = 20
    amp: str = "none"
    grad_clip: float = 0.0
    max_iters_per_epoch: int = 0
    htl_init_pass: bool = True
    seed: int = 444
    accumulate_steps: int = 1

    def __post_init__(self) -> None:
        if self.accumulate_steps < 1:
            raise ValueError(f"trainer.accumulate_steps must be >= 1, got {self.accumulate_steps}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"trainer.amp: unknown mode {self.amp!r} (choose from {', '.join(AMP_MODES)})")
        if self.max_epoch < 1:
            raise ValueError(f"trainer.max_epoch must be >= 1, got {self.max_epoch}")


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


def build_train_loader(
    dataset: torch.utils.data.Dataset,
    *,
    batch_size: int,
    num_workers: int,
    seed: int,
    dist_info: dist_utils.DistInfo,
    drop_last: bool = True,
    collate_fn: Callable | None = None,
) -> DataLoader:
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
    sampler = DistributedSampler(
        dataset,
        num_replicas=dist_info.world_size,
        rank=dist_info.rank,
        shuffle=True,
        seed=seed,
        drop_last=drop_last,
    )
    return DataLoader(
        dataset,
        batch_size=batch_size // dist_info.world_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        collate_fn=collate_fn,
        worker_init_fn=worker_init_fn,
        generator=make_generator(seed + dist_info.rank),
        persistent_workers=False,
        pin_memory=False,
    )


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
        run_dir: str | Path,
        device: torch.device,
        dist_info: dist_utils.DistInfo | None = None,
        htl: Any = None,
        htl_tasks: tuple[str, ...] = (),
        evaluate_fn: EvaluateFn | None = None,
        config: Mapping[str, Any] | None = None,
        task_name: str = "detector",
    ) -> None:
        """
        Args:
            task: module whose ``forward(batch)`` returns {loss name: () tensor}; already on
                ``device``. Wrapped in DistributedDataParallel here when ``dist_info`` says so.
            optimizer, scheduler: over the task's trainable parameters; the scheduler is
                stepped once per epoch.
            train_loader: batches (dicts); its sampler's / dataset's ``set_epoch`` are called.
            settings: the trainer config; run_dir: the run folder (checkpoints/, logs).
            htl: a ``HierarchicalTaskLearning`` (``compute_weights``/``update``/state) or None.
            htl_tasks: the loss names HTL weighs (``lib.losses.detection.HTL_TASKS``).
            evaluate_fn: called on the main process with the unwrapped task and the number of
                epochs done; returns (Car 3D Moderate AP40, metrics). None: no evaluation.
            config: the resolved config (a plain dict), stored in checkpoints.
            task_name: "detector" | "distiller", stored in checkpoints; ``resume`` refuses a
                checkpoint of the other task.
        """
        self.task = task
        self.dist = dist_info or dist_utils.DistInfo()
        self.model: nn.Module = task
        if self.dist.distributed:
            device_ids = [device.index] if device.type == "cuda" else None
            # Unused parameters happen legitimately (loss terms with weight 0, empty RoI batches).
            self.model = DistributedDataParallel(task, device_ids=device_ids, find_unused_parameters=True)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_loader = train_loader
        self.settings = settings
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.device = device
        self.htl = htl
        self.htl_tasks = tuple(htl_tasks)
        self.evaluate_fn = evaluate_fn
        self.config = dict(config) if config is not None else {}
        self.task_name = task_name
        self.amp_dtype = resolve_amp_dtype(settings.amp, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.epoch = 0  # epochs done = the 0-based epoch to train next
        self.iteration = 0
        self.best_metric = -math.inf
        self.git_sha = git_sha()
        self.train_log = self.eval_log = self.tensorboard = None
        if self.dist.is_main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            remove_temp_files(self.ckpt_dir)
            self.train_log = JsonlWriter(self.run_dir / "train.jsonl")
            self.eval_log = JsonlWriter(self.run_dir / "eval.jsonl")
            from torch.utils.tensorboard import SummaryWriter  # slow import, main process only

            self.tensorboard = SummaryWriter(str(self.run_dir / "tensorboard"))

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict[str, Any]:
        """Train from ``self.epoch`` to ``max_epoch``; returns the last evaluation's metrics."""
        last_metrics: dict[str, Any] = {}
        if self.htl is not None and self.epoch == 0 and self.settings.htl_init_pass:
            self.htl.update(self.measure_initial_losses())
        while self.epoch < self.settings.max_epoch:
            epoch = self.epoch
            means = self.train_one_epoch(epoch)
            if self.htl is not None:
                self.htl.update(means)
            self.scheduler.step()
            self.epoch = epoch + 1
            metrics = self.maybe_evaluate()
            last_metrics = metrics or last_metrics
            self.save_checkpoints(
                improved=bool(metrics) and metrics["score"] > self.best_metric, metrics=metrics
            )
        if self.tensorboard is not None:
            self.tensorboard.flush()
        return last_metrics

    def loss_weights(self, epoch: int) -> dict[str, float]:
        """HTL weights of ``epoch`` for the detection tasks (others weigh 1 by default)."""
        if self.htl is None:
            return {}
        weights = self.htl.compute_weights(epoch)
        return {name: float(weights[name]) for name in self.htl_tasks if name in weights}

    def _epoch_batches(self, epoch: int) -> tuple[Iterable, int]:
        """Prepare the loader for ``epoch`` (sampler/dataset epoch, worker seeds); (batches, count)."""
        loader = self.train_loader
        for obj in (getattr(loader, "sampler", None), getattr(loader, "dataset", None)):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)
        generator = getattr(loader, "generator", None)
        if generator is not None:
            # Worker seeds follow (seed, rank, epoch) only, so a resumed run draws the same ones.
            generator.manual_seed(self.settings.seed + self.dist.rank + 1_000_003 * epoch)
        total = len(loader)
        cap = self.settings.max_iters_per_epoch
        if cap > 0 and cap < total:
            return itertools.islice(loader, cap), cap
        return loader, total

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the train loader; returns the epoch-mean (unweighted) loss terms."""
        self.model.train()
        weights = self.loss_weights(epoch)
        batches, total = self._epoch_batches(epoch)
        sums: dict[str, torch.Tensor] = {}
        count = 0
        lr = self.optimizer.param_groups[0]["lr"]
        if self.dist.is_main:
            logger.info(
                "epoch %d/%d  lr %.3g  weights %s", epoch + 1, self.settings.max_epoch, lr, _fmt(weights)
            )
        bar = tqdm(
            batches,
            total=total,
            desc=f"epoch {epoch + 1}/{self.settings.max_epoch}",
            disable=not self.dist.is_main,
        )
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        for step, batch in enumerate(bar):
            batch = move_to_device(batch, self.device)
            loss_scale, update = accumulation_step(step, total, self.settings.accumulate_steps)
            with self._sync_gradients(update):
                with self._autocast():
                    losses = self.model(batch)
                losses = {name: value.float() for name, value in losses.items()}  # weighted sum in fp32
                total_loss = sum(weights.get(name, 1.0) * value for name, value in losses.items())
                self._check_finite(losses, total_loss, epoch=epoch, step=step, batch=batch)
                self.scaler.scale(total_loss * loss_scale).backward()
            if update:
                self._optimizer_step()

            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value.detach()
            count += 1
            if self.dist.is_main and (step % self.settings.log_interval == 0 or step == total - 1):
                record = {name: float(v.detach()) for name, v in losses.items()}
                bar.set_postfix(loss=f"{float(total_loss.detach()):.3f}")
                self._log_train(epoch, step, lr, float(total_loss.detach()), record)
        if count == 0:
            raise RuntimeError("the train loader yielded no batches (dataset smaller than one batch?)")
        names = sorted(sums)
        means = dist_utils.all_reduce_mean(torch.stack([sums[n] / count for n in names]))
        epoch_means = {n: float(v) for n, v in zip(names, means.tolist(), strict=True)}
        if self.dist.is_main:
            seconds = time.perf_counter() - start
            logger.info("epoch %d done in %.0f s: %s", epoch + 1, seconds, _fmt(epoch_means))
            self.train_log.write(
                {"type": "epoch", "epoch": epoch + 1, "lr": lr, "seconds": seconds, **epoch_means}
            )
        return epoch_means

    @torch.no_grad()
    def measure_initial_losses(self) -> dict[str, float]:
        """GUPNet's "epoch 0" pass for HTL: mean losses of one pass before training (docs/reference.md §2.1).

        Runs in train mode as GUPNet does (the task's train-time forward), but the BatchNorm
        running statistics are restored afterwards, so the pass leaves the model unchanged
        (docs/reference.md §9.8 lists the drift as a GUPNet quirk).
        """
        parameters = {name for name, _ in self.task.named_parameters()}
        buffers = {k: v.clone() for k, v in self.task.state_dict().items() if k not in parameters}
        self.task.train()
        batches, total = self._epoch_batches(0)
        sums: dict[str, torch.Tensor] = {}
        count = 0
        for batch in tqdm(batches, total=total, desc="HTL initial losses", disable=not self.dist.is_main):
            batch = move_to_device(batch, self.device)
            with self._autocast():
                losses = self.task(batch)
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float()
            count += 1
        self.task.load_state_dict(buffers, strict=False)
        names = sorted(sums)
        means = dist_utils.all_reduce_mean(torch.stack([sums[n] / max(count, 1) for n in names]))
        return {n: float(v) for n, v in zip(names, means.tolist(), strict=True)}

    def _sync_gradients(self, update: bool) -> contextlib.AbstractContextManager:
        """DDP all-reduces gradients only on the micro-step that ends an update (``no_sync`` before)."""
        if update or not isinstance(self.model, DistributedDataParallel):
            return contextlib.nullcontext()
        return self.model.no_sync()

    def _optimizer_step(self) -> None:
        """Clip (if set), step the optimizer on the accumulated gradients, then clear them."""
        if self.settings.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.task.parameters(), self.settings.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.iteration += 1

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _check_finite(
        self, losses: Mapping[str, torch.Tensor], total: torch.Tensor, *, epoch: int, step: int, batch: Any
    ) -> None:
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
            f"{message}; training stopped, the last good checkpoint is in {self.ckpt_dir} "
            "(lower the lr, set trainer.grad_clip, or check these frames' labels)"
        )

    # ------------------------------------------------------------------ evaluation
    def maybe_evaluate(self) -> dict[str, Any]:
        """Evaluate on the main process when the schedule says so; {} otherwise."""
        s = self.settings
        done = self.epoch
        due = (
            s.eval_frequency > 0
            and done >= s.eval_start
            and (done % s.eval_frequency == 0 or done == s.max_epoch)
        )
        if not due:
            return {}
        metrics: dict[str, Any] = {}
        if self.dist.is_main and self.evaluate_fn is not None:  # other ranks wait at the barrier
            score, result = self.evaluate_fn(self.task, done)
            metrics = {"score": float(score), "result": result}
            logger.info("epoch %d: Car 3D Moderate AP40 %.2f", done, score)
            record = {"epoch": done, "iteration": self.iteration, "car_3d_moderate_ap40": score}
            self.eval_log.write({**record, **result})
            self.tensorboard.add_scalar("eval/car_3d_moderate_ap40", score, done)
        dist_utils.barrier()
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly (see lib/engine/checkpoint.py)."""
        rng = capture_rng_state()
        if self.dist.distributed:
            states: list[Any] = [None] * self.dist.world_size
            dist.all_gather_object(states, rng)
        else:
            states = [rng]
        return {
            "epoch": self.epoch,
            "iteration": self.iteration,
            "task": self.task_name,
            "model_state": self.task.student_state_dict(),
            "model": self.task.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "htl": self.htl.state_dict() if self.htl is not None else None,
            "rng": states,
            "best_metric": self.best_metric,
            "config": self.config,
            "git_sha": self.git_sha,
        }

    def save_checkpoints(self, *, improved: bool, metrics: Mapping[str, Any]) -> None:
        """Write last.pth (and the periodic / best files) atomically on the main process."""
        if improved:
            self.best_metric = float(metrics["score"])
        state = self.checkpoint_state()  # every rank takes part (RNG gather)
        if self.dist.is_main:
            last = self.ckpt_dir / "last.pth"
            atomic_save(state, last)
            if self.settings.save_frequency > 0 and self.epoch % self.settings.save_frequency == 0:
                atomic_link(last, self.ckpt_dir / f"checkpoint_epoch_{self.epoch}.pth")
            if improved:
                atomic_link(last, self.ckpt_dir / "best.pth")
            logger.info("saved %s%s", last, " (new best)" if improved else "")
        dist_utils.barrier()

    def resume(self, path: str | Path) -> None:
        """Restore model, optimizer, scheduler, scaler, HTL, counters and RNG states from ``path``."""
        ckpt = load_checkpoint(path, map_location=self.device)
        if ckpt.get("task") != self.task_name:
            raise ValueError(
                f"{path}: a '{ckpt.get('task')}' checkpoint cannot resume a '{self.task_name}' run"
            )
        self.task.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.htl is not None and ckpt["htl"] is not None:
            self.htl.load_state_dict(ckpt["htl"])
        self.epoch = int(ckpt["epoch"])
        self.iteration = int(ckpt["iteration"])
        self.best_metric = float(ckpt["best_metric"])
        states = ckpt["rng"]
        if len(states) == self.dist.world_size:
            restore_rng_state(states[self.dist.rank])
        else:
            logger.warning(
                "%s was written by %d process(es), this run has %d: RNG states not restored",
                path,
                len(states),
                self.dist.world_size,
            )
        if self.dist.is_main:
            logger.info("resumed from %s at epoch %d (iteration %d)", path, self.epoch, self.iteration)

    # ------------------------------------------------------------------ logging
    def _log_train(self, epoch: int, step: int, lr: float, total: float, losses: Mapping[str, float]) -> None:
        record = {"type": "step", "epoch": epoch + 1, "step": step, "iteration": self.iteration, "lr": lr}
        self.train_log.write({**record, "loss": total, **losses})
        self.tensorboard.add_scalar("train/loss", total, self.iteration)
        self.tensorboard.add_scalar("train/lr", lr, self.iteration)
        for name, value in losses.items():
            self.tensorboard.add_scalar(f"train/{name}", value, self.iteration)

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self.tensorboard is not None:
            self.tensorboard.close()


def _fmt(values: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in values.items()) or "-"
