"""The training loop on a toy task: exact resume, HTL weighting, NaN stop, evaluation, DDP parity."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from engine_toy import ToyDataset, ToyTask, fit_killed_in_epoch, make_trainer, trainer_settings

from lib.engine.dist import DistInfo
from lib.engine.optim import LrSchedulerSettings, OptimizerSettings, build_lr_scheduler, build_optimizer
from lib.engine.trainer import NonFiniteLossError, RunContext, Trainer, build_train_loader
from lib.models.checkpoint_io import load_checkpoint
from lib.utils.seed import seed_everything


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def test_interrupted_then_resumed_run_equals_uninterrupted(tmp_path):
    seed_everything(0)
    full = make_trainer(tmp_path / "full", epochs=3)
    full.fit()

    seed_everything(0)
    broken = make_trainer(tmp_path / "broken", epochs=3)
    fit_killed_in_epoch(broken, 2)

    seed_everything(123)  # a fresh process: different RNG until the checkpoint restores it
    resumed = make_trainer(tmp_path / "resumed", epochs=3, seed=0)
    resumed.resume(tmp_path / "broken" / "checkpoints" / "last.pth")
    assert resumed.epoch == 2
    resumed.fit()
    for a, b in zip(params(resumed.task), params(full.task), strict=True):
        assert torch.equal(a, b)


def test_htl_weights_reach_the_loss_and_logs(tmp_path):
    trainer = make_trainer(tmp_path, epochs=2)
    trainer.fit()
    epochs = [json.loads(line) for line in open(tmp_path / "train.jsonl") if '"epoch"' in line]
    steps = [r for r in epochs if r["type"] == "step"]
    # window 3, T = 2: the dependent task 'depth' has weight 0, so loss = seg + extra only.
    assert steps and all(r["loss"] == pytest.approx(r["seg"] + r["extra"], rel=1e-5) for r in steps)
    assert (tmp_path / "tensorboard").is_dir()


def test_nan_loss_stops_with_term_epoch_and_image_ids(tmp_path):
    trainer = make_trainer(tmp_path, epochs=2)
    trainer.settings = trainer_settings(max_epoch=2, eval_frequency=0, save_frequency=1, htl_init_pass=False)
    trainer.task.nan_at_step = 6  # epoch 2, batch 2 (4 batches per epoch)
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit()
    message = str(info.value)
    assert "loss term(s) 'depth' at epoch 2, batch 2" in message
    assert "image ids [" in message and "last good checkpoint" in message
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pth")["epoch"] == 1  # epoch 1 kept


def test_evaluation_schedule_and_best_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, epochs=4)
    trainer.settings = trainer_settings(max_epoch=4, eval_start=2, eval_frequency=3, save_frequency=0)
    scores = {2: 0.0, 3: 5.0, 4: 4.0}
    seen = []

    def evaluate(task, epoch):
        seen.append(epoch)
        return scores[epoch], {"ap40": {"Car": epoch}}

    trainer.evaluate_fn = evaluate
    trainer.fit()
    assert seen == [3, 4]  # every 3 epochs from epoch 2, and the last epoch
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pth")
    assert best["epoch"] == 3 and best["best_metric"] == 5.0
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pth")["epoch"] == 4
    assert not list((tmp_path / "checkpoints").glob("checkpoint_epoch_*"))  # save_frequency 0
    lines = [json.loads(line) for line in open(tmp_path / "eval.jsonl")]
    assert [r["car_3d_moderate_ap40"] for r in lines] == [5.0, 4.0]


def _ddp_worker(rank: int, world: int, init_file: str, out: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    try:
        info = DistInfo(rank=rank, world_size=world)
        final = _train_toy(info, out)
        if rank == 0:
            torch.save(final, f"{out}/ddp.pt")
    finally:
        torch.distributed.destroy_process_group()


def _train_toy(info: DistInfo, out: str) -> list[torch.Tensor]:
    torch.manual_seed(0)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    task = ToyTask()
    task.net[2].p = 0.0  # no dropout: different ranks draw different masks
    sgd = OptimizerSettings(type="sgd", lr=0.05, weight_decay=1e-3, momentum=0.9)
    optimizer = build_optimizer(task.named_parameters(), sgd)
    schedule = LrSchedulerSettings(
        warmup=False, warmup_epochs=0, warmup_start_lr=0.0, decay_rate=0.5, decay_list=(1,)
    )
    scheduler = build_lr_scheduler(optimizer, schedule)
    loader = build_train_loader(ToyDataset(), batch_size=8, num_workers=0, seed=3, dist_info=info)
    trainer = Trainer(
        task,
        optimizer=optimizer,
        scheduler=scheduler,
        train_loader=loader,
        settings=trainer_settings(max_epoch=2, eval_frequency=1, save_frequency=0),  # seed: the loader's
        run=RunContext(Path(f"{out}/run{info.world_size}"), torch.device("cpu"), info),
        # only the main process evaluates (tools/train_val.py): the others must not deadlock
        evaluate_fn=(lambda task, epoch: (float(epoch), {})) if info.is_main else None,
    )
    trainer.fit()
    trainer.close()
    return params(task)


def test_two_process_ddp_equals_one_process_with_the_same_global_batch(tmp_path):
    context = mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 300  # a collective mismatch between ranks hangs: fail instead
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("DDP workers did not finish (deadlock between ranks?)")
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    single = _train_toy(DistInfo(), str(tmp_path))
    for a, b in zip(ddp, single, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert len(load_checkpoint(tmp_path / "run2" / "checkpoints" / "last.pth")["rng"]) == 2
    assert [json.loads(line)["epoch"] for line in open(tmp_path / "run2" / "eval.jsonl")] == [1, 2]


def _one_epoch_update(tmp_path: Path, amp: str) -> tuple[list[torch.Tensor], dict]:
    """The parameter change of one toy epoch (4 steps) under ``amp`` and the saved scaler state."""
    trainer = make_trainer(tmp_path, epochs=1)
    trainer.settings = trainer_settings(max_epoch=1, eval_frequency=0, save_frequency=0, amp=amp)
    if amp != "none":
        trainer.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        trainer.scaler = torch.amp.GradScaler("cpu", enabled=amp == "fp16")
    before = params(trainer.task)
    trainer.fit()
    update = [a - b for a, b in zip(params(trainer.task), before, strict=True)]
    return update, load_checkpoint(tmp_path / "checkpoints" / "last.pth")["scaler"]


def test_amp_bf16_update_equals_float32_update(tmp_path):
    """bf16 autocast changes the epoch's update by its rounding only (measured 0.16 %), not its steps."""
    reference, _ = _one_epoch_update(tmp_path / "fp32", "none")
    update, scaler_state = _one_epoch_update(tmp_path / "bf16", "bf16")
    error = sum(float(((u - r) ** 2).sum()) for u, r in zip(update, reference, strict=True)) ** 0.5
    norm = sum(float((r**2).sum()) for r in reference) ** 0.5
    assert norm > 0 and error < 0.01 * norm, (error, norm)
    assert scaler_state == {}  # a disabled scaler has an empty state


def test_amp_fp16_scaler_skips_overflowing_steps_and_halves_its_scale(tmp_path):
    """fp16 with GradScaler (initial scale 2^16, growth after 2000 steps): the first steps overflow
    and are skipped, each halving the scale, until it is small enough; the rest are taken (the
    growth tracker counts them), so scale = 2^16 / 2^(4 - taken) after the epoch's 4 steps."""
    update, scaler_state = _one_epoch_update(tmp_path, "fp16")
    taken = scaler_state["_growth_tracker"]
    assert 1 <= taken <= 4
    assert scaler_state["scale"] == 2.0**16 / 2 ** (4 - taken)
    assert all(torch.isfinite(u).all() for u in update) and any(u.abs().sum() > 0 for u in update)
