"""trainer.keep_checkpoints: only the newest periodic checkpoints stay; last/best are never removed,
and a run resumed after rotation still equals the uninterrupted one. Plus the trainer's small units
(LossMeter, MetricLogger on other ranks, the HTL initial pass, the trainer section's checks)."""

from __future__ import annotations

import os
from contextlib import nullcontext

import pytest
import torch
from engine_toy import fit_killed_in_epoch, make_trainer, trainer_settings
from torch import nn

from lib.config import ConfigError
from lib.engine.checkpoint import atomic_link, atomic_save, rotate_checkpoints
from lib.engine.metrics import LossMeter, MetricLogger
from lib.engine.trainer import evaluation_due, htl_initial_losses
from lib.models.checkpoint_io import load_checkpoint
from lib.utils.seed import seed_everything


def names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_rotation_keeps_the_newest_and_whatever_last_and_best_are(tmp_path):
    for epoch in (2, 4, 6, 8, 10):
        atomic_save({"epoch": epoch}, tmp_path / f"checkpoint_epoch_{epoch}.pth")
    atomic_link(tmp_path / "checkpoint_epoch_10.pth", tmp_path / "last.pth")
    atomic_link(tmp_path / "checkpoint_epoch_4.pth", tmp_path / "best.pth")  # same file as epoch 4
    for other in ("notes.txt", "checkpoint_epoch_x.pth", "checkpoint_epoch_1.pth.bak"):
        (tmp_path / other).write_text("not a periodic checkpoint")
    assert rotate_checkpoints(tmp_path, 0) == []  # 0 = keep all
    removed = rotate_checkpoints(tmp_path, 2)
    assert [p.name for p in removed] == ["checkpoint_epoch_2.pth", "checkpoint_epoch_6.pth"]
    assert names(tmp_path) == [
        "best.pth",
        "checkpoint_epoch_1.pth.bak",
        "checkpoint_epoch_10.pth",
        "checkpoint_epoch_4.pth",
        "checkpoint_epoch_8.pth",
        "checkpoint_epoch_x.pth",
        "last.pth",
        "notes.txt",
    ]
    assert load_checkpoint(tmp_path / "best.pth")["epoch"] == 4
    assert rotate_checkpoints(tmp_path, 2) == []  # idempotent


def test_rotation_spares_the_target_of_a_symbolic_link(tmp_path):
    for epoch in (1, 2, 3):
        atomic_save({"epoch": epoch}, tmp_path / f"checkpoint_epoch_{epoch}.pth")
    os.symlink("checkpoint_epoch_1.pth", tmp_path / "best.pth")
    assert [p.name for p in rotate_checkpoints(tmp_path, 1)] == ["checkpoint_epoch_2.pth"]
    assert names(tmp_path) == ["best.pth", "checkpoint_epoch_1.pth", "checkpoint_epoch_3.pth"]
    assert load_checkpoint(tmp_path / "best.pth")["epoch"] == 1


def test_training_keeps_the_two_newest_periodic_files_and_best(tmp_path):
    trainer = make_trainer(tmp_path, epochs=4, keep=2)
    trainer.settings = trainer_settings(max_epoch=4, eval_frequency=1, save_frequency=1, keep_checkpoints=2)
    scores = {1: 7.0, 2: 3.0, 3: 5.0, 4: 6.0}  # epoch 1 stays the best
    trainer.evaluate_fn = lambda task, epoch: (scores[epoch], {})
    trainer.fit()
    folder = tmp_path / "checkpoints"
    assert names(folder) == [
        "best.pth",
        "checkpoint_epoch_1.pth",  # the same file as best.pth
        "checkpoint_epoch_3.pth",
        "checkpoint_epoch_4.pth",
        "last.pth",
    ]
    assert load_checkpoint(folder / "best.pth")["epoch"] == 1
    assert load_checkpoint(folder / "last.pth")["epoch"] == 4


def test_last_frequency_writes_last_every_n_epochs_and_whenever_best_or_the_end_is_due(tmp_path):
    trainer = make_trainer(tmp_path, epochs=7)
    trainer.settings = trainer_settings(max_epoch=7, eval_frequency=1, save_frequency=0, last_frequency=3)
    scores = {1: 1.0, 2: 0.5, 3: 0.5, 4: 0.5, 5: 2.0, 6: 0.5, 7: 0.5}  # new bests at epochs 1 and 5
    trainer.evaluate_fn = lambda task, epoch: (scores[epoch], {})
    written = []
    real_save = trainer.checkpointer.save
    trainer.checkpointer.save = lambda state, **kw: written.append(kw["epoch"]) or real_save(state, **kw)
    fit_killed_in_epoch(trainer, 4)  # epochs 1-4 trained; epoch 4 is neither due nor best
    assert written == [1, 3]
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pth")["epoch"] == 3
    del trainer.train_one_epoch  # the class method again
    trainer.fit()  # the toy trainer goes on from its epoch counter: 5 (best), 6 (due), 7 (the end)
    assert written == [1, 3, 5, 6, 7]
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pth")["epoch"] == 5
    with pytest.raises(ConfigError, match=r"^trainer\.last_frequency must be >= 1, got 0$"):
        trainer_settings(last_frequency=0)


def test_resume_after_rotation_equals_the_uninterrupted_run(tmp_path):
    seed_everything(0)
    full = make_trainer(tmp_path / "full", epochs=3)
    full.fit()

    seed_everything(0)
    broken = make_trainer(tmp_path / "run", epochs=3, keep=1)
    fit_killed_in_epoch(broken, 2)
    folder = tmp_path / "run" / "checkpoints"
    assert names(folder) == ["checkpoint_epoch_2.pth", "last.pth"]  # epoch 1's rotated away

    seed_everything(123)
    resumed = make_trainer(tmp_path / "run", epochs=3, keep=1)  # the same run folder (--resume)
    resumed.resume(folder / "last.pth")
    resumed.fit()
    assert names(folder) == ["checkpoint_epoch_3.pth", "last.pth"]
    for a, b in zip(resumed.task.parameters(), full.task.parameters(), strict=True):
        assert torch.equal(a, b)


def test_loss_meter_means_by_hand():
    meter = LossMeter()
    meter.add({"seg": torch.tensor(1.0), "depth": torch.tensor(2.0, dtype=torch.bfloat16)})
    meter.add({"seg": torch.tensor(4.0), "depth": torch.tensor(3.0)})
    assert meter.means() == {"depth": 2.5, "seg": 2.5}
    with pytest.raises(RuntimeError, match="yielded no batches"):
        LossMeter().means()


def test_metric_logger_of_another_rank_writes_nothing(tmp_path):
    logger = MetricLogger(tmp_path, enabled=False)
    logger.epoch_start(0, 2, 0.1, {"seg": 1.0})
    logger.step(epoch=0, step=0, iteration=1, lr=0.1, losses={"loss": 1.0, "seg": 1.0})
    logger.epoch_end(epoch=0, lr=0.1, seconds=1.0, means={"seg": 1.0})
    logger.evaluation(epoch=1, iteration=1, score=3.0, result={})
    logger.close()
    assert names(tmp_path) == []


class BatchNormTask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(2)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return {"seg": self.bn(batch["x"]).sum() + batch["x"].sum()}


def test_htl_initial_pass_means_and_leaves_batchnorm_statistics_alone():
    task = BatchNormTask()
    batches = [{"x": torch.tensor([[1.0, 2.0], [3.0, 4.0]])}, {"x": torch.tensor([[0.0, 0.0], [4.0, 6.0]])}]
    means = htl_initial_losses(task, batches, 2, device=torch.device("cpu"), autocast=nullcontext, show=False)
    # batch-normalised values sum to 0 per channel, so each loss is the sum of x: 10 and 10
    assert means == {"seg": pytest.approx(10.0)}
    assert torch.equal(task.bn.running_mean, torch.zeros(2)) and int(task.bn.num_batches_tracked) == 0


def test_evaluation_schedule_and_trainer_checks():
    s = trainer_settings(max_epoch=10, eval_start=4, eval_frequency=3)
    assert [e for e in range(1, 11) if evaluation_due(s, e)] == [6, 9, 10]
    assert not any(evaluation_due(trainer_settings(max_epoch=10, eval_frequency=0), e) for e in range(1, 11))
    with pytest.raises(ConfigError, match=r"^trainer\.keep_checkpoints must be >= 0, got -1$"):
        trainer_settings(keep_checkpoints=-1)
    with pytest.raises(ConfigError, match=r"^trainer\.log_interval must be >= 1, got 0$"):
        trainer_settings(log_interval=0)
