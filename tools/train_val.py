"""Train a detector or a distiller from a config, or evaluate a checkpoint (``-e``).

Examples::

    python tools/train_val.py --config configs/teacher.yaml
    python tools/train_val.py --config configs/monommkd.yaml trainer.amp=bf16 dataset.batch_size=8
    python tools/train_val.py --config configs/student.yaml --resume            # run_dir/checkpoints/last.pth
    python tools/train_val.py --config configs/student.yaml -e                  # best.pth (else last.pth)
    python tools/train_val.py --config configs/student.yaml -e tester.checkpoint=gupnet.pth
    torchrun --nproc_per_node 4 tools/train_val.py --config configs/student.yaml

The run folder is ``<experiment.output_dir>/<experiment.name>`` (``--output-dir`` replaces the
former); it receives config.yaml (the resolved config), train.log, train.jsonl, eval.jsonl,
tensorboard/, checkpoints/ and results/<split>/ (KITTI files, ap.json, ap.md).
``dataset.batch_size`` is the global batch, split over the torchrun processes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from lib.config import Config, ConfigError, load_config, save_config
from lib.datasets.kitti import build_dataset
from lib.datasets.kitti_io import KittiFormatError
from lib.engine import dist as dist_utils
from lib.engine.checkpoint import CheckpointError, detector_state_from_checkpoint, load_checkpoint
from lib.engine.optim import build_lr_scheduler, build_optimizer
from lib.engine.task import build_task, uses_distiller
from lib.engine.tester import ap_summary, format_markdown, key_metric, run_test
from lib.engine.trainer import NonFiniteLossError, Trainer, TrainerSettings, build_train_loader
from lib.eval.report import format_table
from lib.losses.criterion import HTL_TASKS
from lib.losses.task_weighting import HierarchicalTaskLearning
from lib.models.build import build_detector
from lib.models.checkpoint_io import CheckpointMismatchError, load_model_state
from lib.utils.logging import setup_logging
from lib.utils.seed import seed_everything

logger = logging.getLogger("tools.train_val")

# Errors caused by the user's files or settings: reported as one message, no traceback
# (set MONOMMKD_DEBUG=1 to see it).
USER_ERRORS = (
    ConfigError,
    CheckpointError,
    CheckpointMismatchError,
    FileNotFoundError,
    KittiFormatError,
    NonFiniteLossError,
    ValueError,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="experiment YAML, e.g. configs/monommkd.yaml")
    parser.add_argument("-e", "--eval-only", action="store_true", help="evaluate a checkpoint, no training")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        help="continue training from CKPT (default: <run>/checkpoints/last.pth); with -e: the checkpoint",
    )
    parser.add_argument("--output-dir", default=None, help="replaces experiment.output_dir")
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    return parser.parse_intermixed_args(argv)  # overrides may come before and after the flags


def resolve_config(args: argparse.Namespace) -> Config:
    overrides = list(args.overrides)
    if args.output_dir is not None:
        overrides.append(f"experiment.output_dir={args.output_dir}")
    return load_config(args.config, overrides)


def run_dir_of(cfg: Config) -> Path:
    return Path(cfg.experiment.output_dir) / cfg.experiment.name


def build_eval_loader(dataset: torch.utils.data.Dataset, cfg: Config) -> DataLoader:
    """Frames in split order, every frame kept (no drop_last: REFERENCE §9.6)."""
    return DataLoader(
        dataset, batch_size=cfg.dataset.batch_size, shuffle=False, num_workers=cfg.dataset.num_workers
    )


def trainer_settings(cfg: Config) -> TrainerSettings:
    t = cfg.trainer
    return TrainerSettings(
        max_epoch=t.max_epoch,
        eval_start=t.eval_start,
        eval_frequency=t.eval_frequency,
        save_frequency=t.save_frequency,
        log_interval=t.log_interval,
        amp=t.amp,
        grad_clip=t.grad_clip,
        max_iters_per_epoch=t.max_iters_per_epoch,
        htl_init_pass=t.htl_init_pass,
        seed=cfg.experiment.seed,
        accumulate_steps=t.accumulate_steps,
    )


def train(cfg: Config, args: argparse.Namespace, info: dist_utils.DistInfo, device: torch.device) -> None:
    run_dir = run_dir_of(cfg)
    settings = trainer_settings(cfg)  # validates the trainer keys before anything heavy is built
    train_set = build_dataset(cfg, cfg.dataset.train_split, train=True)
    val_loader = None
    if info.is_main and cfg.trainer.eval_frequency > 0:
        val_loader = build_eval_loader(build_dataset(cfg, cfg.dataset.val_split, train=False), cfg)
    train_loader = build_train_loader(
        train_set,
        batch_size=cfg.dataset.batch_size,
        num_workers=cfg.dataset.num_workers,
        seed=cfg.experiment.seed,
        dist_info=info,
        drop_last=cfg.dataset.drop_last_train,
    )
    task, task_name = build_task(cfg)
    task.to(device)
    named = task.named_trainable_parameters() if hasattr(task, "named_trainable_parameters") else None
    o = cfg.optimizer
    optimizer = build_optimizer(
        named if named is not None else task.named_parameters(),
        name=o.type,
        lr=o.lr,
        weight_decay=o.weight_decay,
        momentum=o.momentum,
    )
    s = cfg.lr_scheduler
    scheduler = build_lr_scheduler(
        optimizer,
        warmup_epochs=s.warmup_epochs if s.warmup else 0,
        warmup_start_lr=s.warmup_start_lr,
        decay_rate=s.decay_rate,
        decay_list=s.decay_list,
    )
    htl = None
    if cfg.loss.htl:
        horizon = cfg.loss.htl_horizon if cfg.loss.htl_horizon is not None else cfg.trainer.max_epoch
        htl = HierarchicalTaskLearning(num_epochs=horizon, window=cfg.loss.htl_window)
    classes = list(cfg.dataset.writelist)

    def evaluate_fn(module: torch.nn.Module, epoch: int) -> tuple[float, dict[str, Any]]:
        out_dir = run_dir / "results" / cfg.dataset.val_split
        reports = run_test(
            module.inference_detector(),
            val_loader,
            out_dir=out_dir,
            device=device,
            classes=classes,
            topk=cfg.tester.topk,
            threshold=cfg.tester.threshold,
            backprojection=cfg.tester.backprojection,
            score_decimals=cfg.tester.score_decimals,
        )
        return key_metric(reports), ap_summary(reports)

    trainer = Trainer(
        task,
        optimizer=optimizer,
        scheduler=scheduler,
        train_loader=train_loader,
        settings=settings,
        run_dir=run_dir,
        device=device,
        dist_info=info,
        htl=htl,
        htl_tasks=HTL_TASKS,
        evaluate_fn=evaluate_fn if val_loader is not None else None,
        config=cfg.to_dict(),
        task_name=task_name,
    )
    if args.resume is not None:
        path = run_dir / "checkpoints" / "last.pth" if args.resume == "auto" else Path(args.resume)
        trainer.resume(path)
    try:
        trainer.fit()
    finally:
        trainer.close()
    if info.is_main:
        logger.info("training done: %s", run_dir)


def test(cfg: Config, args: argparse.Namespace, device: torch.device) -> None:
    run_dir = run_dir_of(cfg)
    path = args.resume if args.resume not in (None, "auto") else cfg.tester.checkpoint
    if path is None:
        ckpt_dir = run_dir / "checkpoints"
        path = ckpt_dir / "best.pth" if (ckpt_dir / "best.pth").is_file() else ckpt_dir / "last.pth"
    input_key = "rgb" if uses_distiller(cfg) else cfg.model.input  # a distillation run tests its student
    detector = build_detector(cfg, pretrained=False, input_key=input_key)
    state = detector_state_from_checkpoint(load_checkpoint(path), source=str(path))
    load_model_state(detector, {"model_state": state})
    detector.to(device)
    split = cfg.tester.split
    loader = build_eval_loader(build_dataset(cfg, split, train=False), cfg)
    out_dir = run_dir / "results" / split
    reports = run_test(
        detector,
        loader,
        out_dir=out_dir,
        device=device,
        classes=list(cfg.dataset.writelist),
        topk=cfg.tester.topk,
        threshold=cfg.tester.threshold,
        backprojection=cfg.tester.backprojection,
        score_decimals=cfg.tester.score_decimals,
    )
    logger.info("evaluated %s on %s; results in %s", path, split, out_dir)
    if reports is not None:
        print(format_table(reports), end="")
        print(format_markdown(reports), end="")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = dist_utils.env_dist_info()
    try:
        cfg = resolve_config(args)
        run_dir = run_dir_of(cfg)
        setup_logging(run_dir / ("test.log" if args.eval_only else "train.log"), main_process=info.is_main)
        device = dist_utils.select_device(info)
        dist_utils.init_distributed(info, device)
        seed_everything(cfg.experiment.seed + info.rank, deterministic=cfg.experiment.deterministic)
        if info.is_main:
            save_config(cfg, run_dir / "config.yaml")
            logger.info("run folder %s, device %s, %d process(es)", run_dir, device, info.world_size)
        if args.eval_only:
            if info.is_main:
                test(cfg, args, device)
        else:
            train(cfg, args, info, device)
    except USER_ERRORS as err:
        if os.environ.get("MONOMMKD_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        dist_utils.shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
