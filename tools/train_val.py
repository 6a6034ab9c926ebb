"""Train a detector or a distiller from a config, or evaluate a checkpoint (``-e``).

Examples::

    python tools/train_val.py --config configs/teacher.yaml
    python tools/train_val.py --config configs/monommkd.yaml trainer.amp=bf16 dataset.batch_size=8
    python tools/train_val.py --config configs/student.yaml --resume            # run_dir/checkpoints/last.pth
    python tools/train_val.py --config configs/student.yaml -e                  # best.pth (else last.pth)
    python tools/train_val.py --config configs/student.yaml -e tester.checkpoint=gupnet.pth
    python tools/train_val.py -e --resume outputs/student/checkpoints/last.pth   # its stored config
    torchrun --nproc_per_node 4 tools/train_val.py --config configs/student.yaml

The run folder is ``<experiment.output_dir>/<experiment.name>`` (``--output-dir`` replaces the
former); ``--resume CKPT`` and ``-e --resume CKPT`` use the run folder that holds CKPT
(``<run>/checkpoints/CKPT``: a copied run folder is its own run) unless the command line sets
``--output-dir``, ``experiment.output_dir`` or ``experiment.name``, and a checkpoint outside any
run folder then needs ``--output-dir``. The run folder receives config.yaml (the resolved config;
test_config.yaml for ``-e``), train.log, train.jsonl, eval.jsonl, tensorboard/, checkpoints/ and
results/<split>/ (KITTI files, ap.json, ap.md, report.md with its precision-recall curves and error
plots); a run that evaluates during training also gets epochs.md, its last and its best epoch
side by side (lib/eval/report.py).
A new run refuses a run folder that holds checkpoints: continue it with ``--resume``,
or start afresh with ``--overwrite``, which first moves the old folder to
``<run>.old-<YYYYmmdd-HHMMSS>``. Checkpoints given to ``-e``, ``--resume`` and ``distill.*``
must have been trained for that role (lib/models/checkpoint_role.py). User errors print one line
``error: ...`` and exit with status 2 (lib/errors.py). ``--config`` may be left out when
``--resume`` names a checkpoint of this project: its stored config is used, with the overrides.
``dataset.batch_size`` is the global batch, split over the torchrun processes.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lib.config import Config, ConfigError, ExperimentSettings, ignored_file_values, save_config
from lib.errors import UserError, run_cli
from lib.utils.logging import setup_logging
from lib.utils.outputs import check_outputs
from lib.utils.run_lock import run_folder_lock


def import_heavy_modules() -> None:
    """Bind this module's names that load torch or numba (seconds); main() calls it after parsing
    the arguments, so that ``--help`` and usage errors answer at once."""
    global torch, DataLoader, check_splits, warn_split_overlap, build_dataset, dist_utils
    global check_resume_checkpoint
    global LrSchedulerSettings, OptimizerSettings, build_lr_scheduler, build_optimizer
    global append_evaluation, evaluation_record, record_command, write_model_card, build_task, uses_distiller
    global TesterSettings, run_test, NonFiniteLossError, RunContext, Trainer, TrainerSettings
    global build_train_loader, checkpoint_result_dir, mark_latest, run_result_dir, ap_summary, key_metric
    global write_epoch_summary, LossSettings, build_htl, check_finite_state, CheckpointFile, load_detector
    global open_checkpoint, run_config, seed_everything
    import torch
    from torch.utils.data import DataLoader

    from lib.datasets.dataset_check import check_splits, warn_split_overlap
    from lib.datasets.kitti import build_dataset
    from lib.engine import dist as dist_utils
    from lib.engine.checkpoint import check_resume_checkpoint
    from lib.engine.optim import LrSchedulerSettings, OptimizerSettings, build_lr_scheduler, build_optimizer
    from lib.engine.run_record import append_evaluation, evaluation_record, record_command, write_model_card
    from lib.engine.task import build_task, uses_distiller
    from lib.engine.tester import TesterSettings, run_test
    from lib.engine.trainer import (
        NonFiniteLossError,
        RunContext,
        Trainer,
        TrainerSettings,
        build_train_loader,
    )
    from lib.eval.kitti_format import checkpoint_result_dir, mark_latest, run_result_dir
    from lib.eval.report import ap_summary, key_metric, write_epoch_summary
    from lib.losses.criterion import LossSettings, build_htl
    from lib.models.checkpoint_io import check_finite_state
    from lib.models.loading import CheckpointFile, load_detector, open_checkpoint, run_config
    from lib.utils.seed import seed_everything


logger = logging.getLogger("tools.train_val")

# One DLA-34 training step at 1280x384 on a 2-core CPU, seconds per image (BENCHMARKS.md,
# 'Training throughput and the demo': 2.84 s for a batch of 2); warn_cpu_time scales it.
CPU_SECONDS_PER_IMAGE = 1.42
CPU_REFERENCE_PIXELS = 1280 * 384
CPU_REFERENCE_CORES = 2
CPU_WARN_HOURS = 1.0  # a CPU training estimated to take longer is announced with a warning
OLD_RUN_SUFFIX = ".old-"  # --overwrite moves <run> to <run>.old-<YYYYmmdd-HHMMSS>


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config", help="experiment YAML, e.g. configs/monommkd.yaml (default: the --resume checkpoint's)"
    )
    parser.add_argument("-e", "--eval-only", action="store_true", help="evaluate a checkpoint, no training")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        help="continue training from CKPT (default: <run>/checkpoints/last.pth); with -e: the checkpoint",
    )
    parser.add_argument("--output-dir", default=None, help="replaces experiment.output_dir")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in a run folder holding checkpoints: it is first moved to <run>.old-<time>",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    return parser.parse_intermixed_args(argv)  # overrides may come before and after the flags


def resolve_config(args: argparse.Namespace) -> tuple[Config, CheckpointFile | None]:
    """The run's config (``--config``, else the one the ``--resume`` checkpoint stores) with the
    overrides, and the checkpoint ``--resume`` reads (given, else the run's last.pth), read once."""
    overrides = list(args.overrides)
    if args.output_dir is not None:
        overrides.append(f"experiment.output_dir={args.output_dir}")
    checkpoint = None
    if args.resume not in (None, "auto"):
        check_resume_argument(args.resume)
        checkpoint = open_checkpoint(args.resume, role="eval" if args.eval_only else "resume")
    elif args.config is None:
        raise UserError("--config is required unless --resume names a checkpoint (it stores its config)")
    holder = None
    if checkpoint is not None and not places_the_run(args):
        holder = checkpoint_run_dir(checkpoint.path)
        if holder is not None:
            overrides += [
                f"experiment.output_dir={yaml_string(holder.parent)}",
                f"experiment.name={yaml_string(holder.name)}",
            ]
    cfg = run_config(args.config, checkpoint, overrides)
    if checkpoint is not None and not places_the_run(args) and holder is None:
        raise UserError(
            f"{checkpoint.path}: lies in no run folder (<run>/checkpoints/), so the run's files have no "
            "home: pass --output-dir (the run folder is <output-dir>/<experiment.name>)"
        )
    if args.resume == "auto" and not args.eval_only:
        checkpoint = open_checkpoint(run_dir_of(cfg) / "checkpoints" / "last.pth", role="resume")
    return cfg, checkpoint


def run_dir_of(cfg: Config) -> Path:
    return ExperimentSettings.from_config(cfg).run_dir


def check_resume_argument(value: str) -> None:
    """``--resume [CKPT]`` takes the next word: refuse a config override taken for the checkpoint."""
    key, sep, _ = value.partition("=")
    if sep and not Path(value).exists() and key and all(part.isidentifier() for part in key.split(".")):
        raise UserError(
            f"--resume took the override {value!r} for its checkpoint: put the overrides before --resume, "
            "or give --resume the checkpoint (--resume alone continues <run>/checkpoints/last.pth)"
        )


def places_the_run(args: argparse.Namespace) -> bool:
    """Whether the command line says where the run folder is (--output-dir, experiment.output_dir
    or experiment.name)."""
    keys = {text.partition("=")[0].strip() for text in args.overrides}
    return args.output_dir is not None or bool(keys & {"experiment.output_dir", "experiment.name"})


def checkpoint_run_dir(path: Path) -> Path | None:
    """The run folder that holds the checkpoint ``<run>/checkpoints/<file>``, else None.

    ``--resume CKPT`` and ``-e --resume CKPT`` write into it when the command line places the run
    nowhere else (a copied run folder is its own run, not the one its checkpoint's config names).
    """
    folder = path.resolve().parent
    return folder.parent if folder.name == "checkpoints" else None


def yaml_string(value: object) -> str:
    """``value`` as a YAML single-quoted string, for an override (a folder named 2024 stays a name)."""
    return "'" + str(value).replace("'", "''") + "'"


@contextlib.contextmanager
def config_values(config_path: str) -> Iterator[None]:
    """Report a ``ValueError`` of the builders (a config value they refuse) as a ConfigError.

    Only the building of data, task, optimizer and schedule from the config runs inside this;
    a ``ValueError`` of training or evaluation is a bug and keeps its traceback.
    """
    try:
        yield
    except UserError:  # already names its file (a KittiFormatError is a ValueError too)
        raise
    except ValueError as err:
        raise ConfigError(f"{config_path}: {err}") from err


def prepare_run_dir(run_dir: Path, args: argparse.Namespace, info: dist_utils.DistInfo) -> None:
    """Refuse to start a new training run over an earlier run's checkpoints, or to resume a
    checkpoint into a run folder holding another run's (nothing is lost).

    With ``--overwrite`` the main process moves the old run folder aside, whole.
    """
    if args.overwrite and (args.resume is not None or args.eval_only):
        raise UserError("--overwrite starts a new training run: it cannot go with --resume or -e")
    ckpt_dir = run_dir / "checkpoints"
    if args.eval_only or not ckpt_dir.is_dir():
        return
    found = sorted(p.name for p in ckpt_dir.glob("*.pth"))
    shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
    if (
        found
        and args.resume not in (None, "auto")
        and checkpoint_run_dir(Path(args.resume)) != run_dir.resolve()
    ):
        raise UserError(
            f"{run_dir}: holds the checkpoints of another run ({shown}); resuming {args.resume} there would "
            "replace them: leave out --output-dir / experiment.name (the run folder holding the checkpoint) "
            "or choose a new run folder"
        )
    if args.resume is not None or not found:
        return
    if not args.overwrite:
        raise UserError(
            f"{run_dir}: holds the checkpoints of an earlier run ({shown}); continue it with --resume, "
            f"or start afresh with --overwrite (moves it to {run_dir.name}{OLD_RUN_SUFFIX}<time>)"
        )
    if info.is_main:
        old = run_dir.with_name(f"{run_dir.name}{OLD_RUN_SUFFIX}{time.strftime('%Y%m%d-%H%M%S')}")
        if old.exists():
            raise UserError(f"{old}: exists already; move it away or retry in a second")
        run_dir.rename(old)
        print(f"moved the earlier run {run_dir} to {old}", file=sys.stderr)


def check_run_inputs(cfg: Config, run_dir: Path, args: argparse.Namespace) -> None:
    """The run folder may not be, lie inside or hold the dataset, nor (training) a checkpoint the
    run reads for distillation: ``--overwrite`` would move them aside (lib/utils/outputs.py)."""
    inputs = {"dataset.root_dir": cfg.dataset.root_dir}
    if not args.eval_only:
        inputs |= {f"distill.{k}": cfg.distill[k] for k in ("teacher_checkpoint", "student_checkpoint")}
    check_outputs({"the run folder (experiment.output_dir/experiment.name)": run_dir}, inputs)


def check_resume(
    cfg: Config, args: argparse.Namespace, checkpoint: CheckpointFile | None, info: dist_utils.DistInfo
) -> None:
    """``--resume``, before config.yaml is written: the checkpoint's role, then its stored config
    against this run's; the changes that may apply are logged, any other change is refused
    (lib/engine/checkpoint.py ``resume_config_changes``)."""
    if checkpoint is None or args.eval_only:
        return
    task_name = "distiller" if uses_distiller(cfg) else "detector"
    changes = check_resume_checkpoint(checkpoint, cfg.to_dict(), task_name)  # every difference at once
    check_finite_state(checkpoint.data.get("model") or {}, checkpoint.path)  # a diverged run's last.pth
    for change in changes:
        if info.is_main:
            logger.info("--resume applies the changed setting %s", change)


def warn_ignored_run_config(cfg: Config, args: argparse.Namespace, checkpoint: CheckpointFile | None) -> None:
    """Log where a ``--resume CKPT`` run writes when it is the folder holding CKPT. Without
    ``--config`` the run uses the checkpoint's config (with the overrides): warn about values of
    the run folder's config.yaml, edited since the checkpoint, that it does not use."""
    written = run_dir_of(cfg) / "config.yaml"
    named = args.resume not in (None, "auto")  # a path given, not the run's own last.pth
    if checkpoint is not None and named and checkpoint_run_dir(checkpoint.path) == written.parent.resolve():
        logger.info(
            "the run folder is %s, which holds %s (--output-dir: elsewhere)", written.parent, checkpoint.path
        )
    if checkpoint is None or args.config is not None or checkpoint.config is None or not written.is_file():
        return
    ignored = ignored_file_values(written, checkpoint.config, cfg.to_dict())
    if ignored:
        logger.warning(
            "%s differs from the config stored in %s (%s): the checkpoint's config is used, with the "
            "command line's overrides%s; pass changes as overrides, or the config with --config",
            written, checkpoint.path, "; ".join(ignored),
            "" if args.eval_only else ", and config.yaml is rewritten to record it",
        )  # fmt: skip


def check_not_larger_than_data(dataset: torch.utils.data.Dataset, loader: DataLoader, cfg: Config) -> None:
    """A train loader that yields no batch (batch larger than the split with drop_last)."""
    if len(loader) == 0:
        raise ConfigError(
            f"dataset.batch_size {cfg.dataset.batch_size} is larger than the {len(dataset)} frames of "
            f"split '{cfg.dataset.train_split}' (with dataset.drop_last_train: no batch would be trained)"
        )


def build_eval_loader(dataset: torch.utils.data.Dataset, cfg: Config) -> DataLoader:
    """Frames in split order, every frame kept (no drop_last: docs/reference.md, 'Known bugs and quirks:
    Dropped val frames')."""
    return DataLoader(
        dataset, batch_size=cfg.dataset.batch_size, shuffle=False, num_workers=cfg.dataset.num_workers
    )


def train(
    cfg: Config,
    args: argparse.Namespace,
    info: dist_utils.DistInfo,
    device: torch.device,
    checkpoint: CheckpointFile | None,
) -> None:
    with config_values(args.config or args.resume):
        trainer = build_training(cfg, args, info, device, checkpoint)
    if info.is_main:
        warn_cpu_time(cfg, trainer, device)
    try:
        trainer.fit()
    finally:
        trainer.close()
    if info.is_main:
        logger.info("training done: %s; model card %s", run_dir_of(cfg), write_model_card(run_dir_of(cfg)))
        summary = write_epoch_summary(run_dir_of(cfg))  # last vs best epoch, when it evaluated
        if summary is not None:
            logger.info("%s", summary.read_text().rstrip())


def warn_cpu_time(cfg: Config, trainer: Trainer, device: torch.device) -> None:
    """Warn, with an estimate of the time, when a training that takes hours starts on a CPU.

    The estimate scales :data:`CPU_SECONDS_PER_IMAGE` by the input pixels and the CPU cores; it
    is rough (a ResNet-18 is faster than DLA-34, a busy machine slower), the order of magnitude
    is the point."""
    if device.type != "cpu":
        return
    s = trainer.settings
    per_epoch = len(trainer.train_loader)
    if s.max_iters_per_epoch > 0:
        per_epoch = min(per_epoch, s.max_iters_per_epoch)
    steps = per_epoch * max(0, s.max_epoch - trainer.epoch)  # loader batches of dataset.batch_size
    width, height = cfg.dataset.resolution
    scale = width * height / CPU_REFERENCE_PIXELS * CPU_REFERENCE_CORES / (os.cpu_count() or 1)
    hours = steps * cfg.dataset.batch_size * CPU_SECONDS_PER_IMAGE * scale / 3600
    if hours >= CPU_WARN_HOURS:
        logger.warning(
            "training on the CPU: %d steps of %d images at %dx%d, roughly %.0f h (%.0f days) here; "
            "on GPUs: tools/reproduce.py --gpus N, or torchrun (README 'Reproduction on GPUs')",
            steps, cfg.dataset.batch_size, width, height, hours, hours / 24,
        )  # fmt: skip


def build_loaders(
    cfg: Config, settings: TrainerSettings, *, seed: int, info: dist_utils.DistInfo
) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader | None]:
    """The train loader and, on the main process when training evaluates, the val loader; with
    ``dataset.check_on_start`` every listed frame is read once first."""
    train_set = build_dataset(cfg, cfg.dataset.train_split, train=True)  # checks the folder layout
    val_loader = None
    if info.is_main and settings.eval_frequency > 0:
        val_loader = build_eval_loader(build_dataset(cfg, cfg.dataset.val_split, train=False), cfg)
    val_splits = [cfg.dataset.val_split] if settings.eval_frequency > 0 else []
    if cfg.dataset.check_on_start:  # every process: one that stopped alone would hang the others
        check_splits(cfg, [cfg.dataset.train_split, *val_splits])
    if info.is_main and not (cfg.dataset.check_on_start and val_splits):  # else check_splits warned
        warn_split_overlap(cfg.dataset.root_dir, [cfg.dataset.train_split, cfg.dataset.val_split])
    train_loader = build_train_loader(
        train_set,
        batch_size=cfg.dataset.batch_size,
        num_workers=cfg.dataset.num_workers,
        seed=seed,
        dist_info=info,
        drop_last=cfg.dataset.drop_last_train,
    )
    check_not_larger_than_data(train_set, train_loader, cfg)
    return train_loader, val_loader


def build_training(
    cfg: Config,
    args: argparse.Namespace,
    info: dist_utils.DistInfo,
    device: torch.device,
    checkpoint: CheckpointFile | None = None,
) -> Trainer:
    """Data, task, optimizer, schedule and trainer of a config (resumed from ``checkpoint``)."""
    experiment = ExperimentSettings.from_config(cfg)
    run_dir = experiment.run_dir
    settings = TrainerSettings.from_config(cfg.trainer)  # sections parsed once, before heavy work
    optimizer_settings = OptimizerSettings.from_config(cfg.optimizer)
    schedule = LrSchedulerSettings.from_config(cfg.lr_scheduler)
    tester = TesterSettings.from_config(cfg)  # checks the tester keys before a long run
    train_loader, val_loader = build_loaders(cfg, settings, seed=experiment.seed, info=info)
    task, task_name = build_task(cfg)
    task.to(device)
    named = task.named_trainable_parameters() if hasattr(task, "named_trainable_parameters") else None
    optimizer = build_optimizer(named if named is not None else task.named_parameters(), optimizer_settings)
    scheduler = build_lr_scheduler(optimizer, schedule)
    htl = build_htl(LossSettings.from_config(cfg), max_epoch=settings.max_epoch)
    classes = list(cfg.dataset.writelist)

    def evaluate_fn(module: torch.nn.Module, epoch: int) -> tuple[float, dict[str, Any]]:
        out_dir = run_result_dir(run_dir, cfg.dataset.val_split)
        reports = run_test(
            module.inference_detector(),
            val_loader,
            out_dir=out_dir,
            device=device,
            classes=classes,
            settings=tester,
        )
        return key_metric(reports), ap_summary(reports)

    trainer = Trainer(
        task,
        optimizer=optimizer,
        scheduler=scheduler,
        train_loader=train_loader,
        settings=settings,
        run=RunContext(run_dir, device, info, cfg.to_dict(), task_name),
        htl=htl,
        evaluate_fn=evaluate_fn if val_loader is not None else None,
    )
    if checkpoint is not None:  # --resume: read and checked before (resolve_config, check_resume)
        trainer.resume(checkpoint)
    return trainer


def test(
    cfg: Config, args: argparse.Namespace, device: torch.device, checkpoint: CheckpointFile | None
) -> None:
    """Evaluate ``checkpoint`` (``-e --resume CKPT``), else ``tester.checkpoint``, else the run's
    best.pth (else last.pth); a distillation run's evaluated detector is its RGB student."""
    run_dir = run_dir_of(cfg)
    tester = TesterSettings.from_config(cfg)
    path = checkpoint or tester.checkpoint
    if path is None:
        ckpt_dir = run_dir / "checkpoints"
        path = ckpt_dir / "best.pth" if (ckpt_dir / "best.pth").is_file() else ckpt_dir / "last.pth"
    split = tester.split
    with config_values(args.config or args.resume):
        run_task = "distiller" if uses_distiller(cfg) else "detector"
        loaded = load_detector(cfg, path, role="eval", run_task=run_task)
        # inference reads depth maps only as the teacher's input (DID targets are not needed):
        # a DID-M3D checkpoint is evaluated without training/depth_dense
        load_depth = loaded.detector.input_key == "depth"
        loader = build_eval_loader(build_dataset(cfg, split, train=False, load_depth=load_depth), cfg)
        if cfg.dataset.check_on_start:
            check_splits(cfg, [split], load_depth=load_depth)
    path, detector = loaded.checkpoint.path, loaded.detector.to(device)
    out_dir = checkpoint_result_dir(run_dir, split, path)  # earlier -e results stay
    save_config(cfg, out_dir / "config.yaml")
    reports = run_test(
        detector,
        loader,
        out_dir=out_dir,
        device=device,
        classes=list(cfg.dataset.writelist),
        settings=tester,
    )
    mark_latest(out_dir)
    logger.info("evaluated %s on %s; results in %s", path, split, out_dir)
    if reports is not None:
        epoch = loaded.checkpoint.data.get("epoch")
        record = evaluation_record(
            epoch=epoch if isinstance(epoch, int) else None, checkpoint=path, split=split,
            result_dir=out_dir, score=key_metric(reports), aps=ap_summary(reports),
        )  # fmt: skip
        append_evaluation(run_dir, record)
    logger.info("model card: %s", write_model_card(run_dir))


def main(argv: list[str] | None = None) -> int:
    """Train or evaluate; user errors propagate to :func:`lib.errors.run_cli` (one line, exit 2)."""
    args = parse_args(argv)
    import_heavy_modules()
    info = dist_utils.env_dist_info()
    held = contextlib.ExitStack()  # the run folder's lock (main process), released on any exit
    try:
        cfg, checkpoint = resolve_config(args)
        experiment = ExperimentSettings.from_config(cfg)
        run_dir = experiment.run_dir
        check_run_inputs(cfg, run_dir, args)
        held.enter_context(run_folder_lock(run_dir, enabled=info.is_main))
        prepare_run_dir(run_dir, args, info)
        setup_logging(run_dir / ("test.log" if args.eval_only else "train.log"), main_process=info.is_main)
        if info.is_main:
            warn_ignored_run_config(cfg, args, checkpoint)
        check_resume(cfg, args, checkpoint, info)
        device = dist_utils.select_device(info)
        dist_utils.init_distributed(info, device)
        seed_everything(experiment.seed + info.rank, deterministic=experiment.deterministic)
        if info.is_main:
            save_config(cfg, run_dir / ("test_config.yaml" if args.eval_only else "config.yaml"))
            record_command(run_dir, sys.argv if argv is None else ["tools/train_val.py", *argv])
            logger.info("run folder %s, device %s, %d process(es)", run_dir, device, info.world_size)
        if args.eval_only:
            if info.is_main:
                test(cfg, args, device, checkpoint)
        else:
            train(cfg, args, info, device, checkpoint)
    except NonFiniteLossError as err:  # diverged: the settings (lr, data) are the user's to change
        raise UserError(str(err)) from err
    finally:
        dist_utils.shutdown_distributed()
        held.close()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
