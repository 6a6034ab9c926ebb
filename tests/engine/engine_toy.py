"""A toy task and data set for engine tests: the trainer needs only 'batch dict -> loss dict'."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from lib.config import load_config
from lib.engine.dist import DistInfo
from lib.engine.optim import LrSchedulerSettings, OptimizerSettings, build_lr_scheduler, build_optimizer
from lib.engine.trainer import RunContext, Trainer, TrainerSettings, build_train_loader
from lib.losses.task_weighting import HierarchicalTaskLearning

BASE_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "base.yaml"


def trainer_settings(**changes) -> TrainerSettings:
    """configs/base.yaml's ``trainer:`` section with ``changes`` (base.yaml holds the defaults)."""
    return dataclasses.replace(TrainerSettings.from_config(load_config(BASE_CONFIG).trainer), **changes)


class ToyDataset(torch.utils.data.Dataset):
    """y = x·w + noise, with KITTI-like ``info.img_id`` so that error messages can name frames."""

    def __init__(self, n: int = 32, *, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(n, 1, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i], "info": {"img_id": i}}


class ToyTask(nn.Module):
    """Two loss terms named like HTL tasks ('seg' weight 1, 'depth' HTL-gated) plus a free one."""

    def __init__(self, *, nan_at_step: int = -1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(0.1), nn.Linear(8, 1))
        self.nan_at_step = nan_at_step
        self.calls = 0

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        pred = self.net(batch["x"])  # (B, 1)
        self.calls += 1
        depth = (pred - batch["y"]).abs().mean()
        if self.calls - 1 == self.nan_at_step:
            depth = depth * float("nan")
        return {"seg": ((pred - batch["y"]) ** 2).mean(), "depth": depth, "extra": 0.01 * pred.pow(2).mean()}

    def student_state_dict(self) -> dict[str, torch.Tensor]:
        return self.net.state_dict()


def make_trainer(tmp_path: Path, *, epochs: int = 3, seed: int = 0, keep: int = 0) -> Trainer:
    """A CPU trainer of :class:`ToyTask`: Adam, warm-up 2 epochs, HTL (window 3), a checkpoint every
    epoch (the ``keep`` newest kept, 0 = all)."""
    torch.manual_seed(seed)
    task = ToyTask()
    optimizer = build_optimizer(
        task.named_parameters(), OptimizerSettings(type="adam", lr=1e-2, weight_decay=1e-4, momentum=0.9)
    )
    schedule = LrSchedulerSettings(
        warmup=True, warmup_epochs=2, warmup_start_lr=1e-3, decay_rate=0.1, decay_list=(2,)
    )
    scheduler = build_lr_scheduler(optimizer, schedule)
    loader = build_train_loader(ToyDataset(), batch_size=8, num_workers=0, seed=seed, dist_info=DistInfo())
    settings = trainer_settings(
        max_epoch=epochs, eval_frequency=0, save_frequency=1, htl_init_pass=True, keep_checkpoints=keep
    )
    htl = HierarchicalTaskLearning(num_epochs=epochs, window=3, pre_tasks={"seg": (), "depth": ("seg",)})
    return Trainer(
        task,
        optimizer=optimizer,
        scheduler=scheduler,
        train_loader=loader,
        settings=settings,
        run=RunContext(tmp_path, torch.device("cpu"), config={"experiment": {"name": "toy"}}),
        htl=htl,
    )


def fit_killed_in_epoch(trainer: Trainer, epoch: int) -> None:
    """Run ``trainer.fit()`` until it is interrupted at the start of 0-based ``epoch`` (a kill
    mid-run: the epochs before it are trained and checkpointed, that one is not)."""
    real_epoch = trainer.train_one_epoch

    def dies(current: int) -> dict[str, float]:
        if current == epoch:
            raise KeyboardInterrupt("killed mid-epoch")
        return real_epoch(current)

    trainer.train_one_epoch = dies
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
