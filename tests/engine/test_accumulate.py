"""Gradient accumulation: N accumulated batches make the same update as one batch N times larger."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from engine_toy import trainer_settings
from torch import nn

from lib.engine.dist import DistInfo
from lib.engine.trainer import RunContext, Trainer, accumulation_step


class LinearTask(nn.Module):
    """A model without BatchNorm or Dropout: its loss is a mean over samples, so accumulation is exact."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        pred = self.net(batch["x"])  # (B, 1)
        return {"seg": ((pred - batch["y"]) ** 2).mean(), "depth": (pred - batch["y"]).abs().mean()}

    def student_state_dict(self) -> dict[str, torch.Tensor]:
        return self.net.state_dict()


def _batches(sizes: list[int]) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(sum(sizes), 4, generator=g)
    y = x.sum(1, keepdim=True) + 0.1 * torch.randn(sum(sizes), 1, generator=g)
    out, start = [], 0
    for n in sizes:
        out.append({"x": x[start : start + n], "y": y[start : start + n]})
        start += n
    return out


def _merge(batches: list[dict]) -> dict:
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


def _train(
    tmp_path, batches: list[dict], accumulate_steps: int, *, grad_clip: float = 0.0
) -> tuple[list[torch.Tensor], int]:
    """One epoch on ``batches`` with SGD (momentum, weight decay: sensitive to the loss scale)."""
    task = LinearTask()
    optimizer = torch.optim.SGD(task.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    settings = trainer_settings(
        max_epoch=1,
        eval_frequency=0,
        save_frequency=0,
        accumulate_steps=accumulate_steps,
        grad_clip=grad_clip,
    )
    trainer = Trainer(
        task,
        optimizer=optimizer,
        scheduler=scheduler,
        train_loader=batches,
        settings=settings,
        run=RunContext(tmp_path, torch.device("cpu")),
    )
    trainer.train_one_epoch(0)
    trainer.close()
    return [p.detach().clone() for p in task.parameters()], trainer.iteration


def test_two_accumulated_batches_equal_one_full_batch_step(tmp_path):
    small = _batches([8, 8])
    accumulated, updates = _train(tmp_path / "acc", small, accumulate_steps=2)
    full, full_updates = _train(tmp_path / "full", [_merge(small)], accumulate_steps=1)
    assert updates == full_updates == 1
    for a, b in zip(accumulated, full, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # Without accumulation the same two batches make two different steps.
    plain, plain_updates = _train(tmp_path / "plain", small, accumulate_steps=1)
    assert plain_updates == 2
    assert not all(torch.allclose(a, b, atol=1e-4) for a, b in zip(plain, full, strict=True))


def test_short_last_group_and_clipping_equal_the_matching_full_batches(tmp_path):
    # 5 batches with N = 2: updates from batches {0,1}, {2,3}, {4}; the last is averaged over itself.
    small = _batches([4, 4, 4, 4, 4])
    accumulated, updates = _train(tmp_path / "acc", small, accumulate_steps=2, grad_clip=0.5)
    merged = [_merge(small[0:2]), _merge(small[2:4]), small[4]]
    full, _ = _train(tmp_path / "full", merged, accumulate_steps=1, grad_clip=0.5)
    assert updates == 3
    for a, b in zip(accumulated, full, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("total", "n", "expected"),
    [
        (4, 1, [(1.0, True)] * 4),
        (4, 2, [(0.5, False), (0.5, True)] * 2),
        (5, 2, [(0.5, False), (0.5, True), (0.5, False), (0.5, True), (1.0, True)]),
        (2, 4, [(0.5, False), (0.5, True)]),  # an epoch shorter than N: one update of everything
    ],
)
def test_accumulation_step_scales_and_update_points(total, n, expected):
    assert [accumulation_step(s, total, n) for s in range(total)] == expected


def test_accumulate_steps_must_be_positive():
    with pytest.raises(ValueError, match="accumulate_steps"):
        trainer_settings(max_epoch=1, accumulate_steps=0)


def _ddp_worker(rank: int, world: int, init_file: str, out: str) -> None:
    """Rank r trains on micro-batches 2r and 2r + 1 of four (4 samples each), accumulating 2."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    try:
        task = LinearTask()
        optimizer = torch.optim.SGD(task.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        trainer = Trainer(
            task,
            optimizer=optimizer,
            scheduler=torch.optim.lr_scheduler.StepLR(optimizer, step_size=1),
            train_loader=_batches([4, 4, 4, 4])[2 * rank : 2 * rank + 2],
            settings=trainer_settings(max_epoch=1, eval_frequency=0, save_frequency=0, accumulate_steps=2),
            run=RunContext(
                Path(f"{out}/rank{rank}"), torch.device("cpu"), DistInfo(rank=rank, world_size=world)
            ),
        )
        trainer.train_one_epoch(0)
        trainer.close()
        if rank == 0:
            torch.save([p.detach() for p in task.parameters()], f"{out}/ddp.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_two_process_ddp_accumulation_equals_one_full_batch_step(tmp_path):
    """2 processes x 2 accumulated micro-batches of 4 = one step of 16 (no_sync on the first)."""
    context = mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 300  # a collective mismatch between ranks hangs: fail instead
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("DDP workers did not finish (deadlock between ranks?)")
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    full, _ = _train(tmp_path / "full", [_merge(_batches([4, 4, 4, 4]))], accumulate_steps=1)
    for a, b in zip(ddp, full, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
