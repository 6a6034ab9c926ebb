"""Checkpoint files: atomic writes (the one reader: lib/models/checkpoint_io.py ``load_checkpoint``).

A training checkpoint (written by :class:`lib.engine.trainer.Trainer`) is a dict:
``{"model_state": the evaluated (student) detector's state_dict, "model": the unwrapped task's
state_dict (teacher, adapters; for ``--resume``), "task": "detector" | "distiller", "epoch":
epochs completed, "iteration", "optimizer", "scheduler", "scaler", "htl", "rng" (one entry per
rank), "best_metric", "config": resolved config dict, "git_sha"}``. The detector sits under
``model_state`` as in GUPNet's ``{"model_state", "optimizer_state", "epoch"}`` (docs/reference.md, 'Checkpoint
format'), so GUPNet-style loaders read our files and we read theirs. (``torch.save`` stores tensors
that share storage once, so ``model_state`` costs no extra space.)

Files are written atomically (temporary file in the same folder, fsync, ``os.replace``), so a
process killed while writing leaves the previous file intact, and read with
``torch.load(weights_only=True)`` (no arbitrary code from a downloaded file).

:class:`Checkpointer` is the training run's side of this: it adds the run's metadata and every
rank's RNG state to the trainer's state, writes ``last.pth`` and its second names
(``checkpoint_epoch_<N>.pth``, ``best.pth``), keeps only the newest periodic files
(:func:`rotate_checkpoints`), and reads a checkpoint back for ``--resume``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from lib.config import ConfigError, config_differences
from lib.engine.dist import DistInfo, barrier
from lib.models.checkpoint_io import CheckpointError
from lib.models.checkpoint_role import CheckpointRoleError
from lib.models.loading import CheckpointFile
from lib.utils.files import atomic_path, fsync_dir
from lib.utils.seed import capture_rng_state, restore_rng_state

logger = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"
PERIODIC = re.compile(r"checkpoint_epoch_(\d+)\.pth")  # the files rotate_checkpoints may remove
KEPT_NAMES = ("last.pth", "best.pth")  # never removed, nor a periodic file that is the same file


# Settings that --resume may change (each a dotted key, or a section ending in "."): when and how
# often the run evaluates, saves and logs, how long it runs, where its files are. Every other key
# fixes what the optimizer, the schedule, the data or the network do, and must stay as stored.
RESUME_MAY_CHANGE = (
    "trainer.max_epoch",
    "trainer.eval_start",
    "trainer.eval_frequency",
    "trainer.save_frequency",
    "trainer.last_frequency",
    "trainer.keep_checkpoints",
    "trainer.log_interval",
    "tester.",
    "dataset.num_workers",
    "dataset.check_on_start",
    "dataset.check_split_sizes",
    "dataset.root_dir",
    "experiment.output_dir",
    "experiment.name",
)


class ResumeConfigError(ConfigError):
    """``--resume`` with settings that cannot change mid-run; the message lists each difference."""


RESUME_ADVICE = (
    "Put them back, or start a new run (--overwrite, or another experiment.name); only when and how "
    "often it evaluates, saves and logs, max_epoch and paths may change"
)


def split_resume_changes(
    stored: Mapping[str, Any] | None, current: Mapping[str, Any]
) -> tuple[list[str], list[tuple[str, str]]]:
    """The differences between a checkpoint's stored config and the resumed run's: (the changes
    that apply, as ``key: old -> new`` lines; the refused ones, as (key, line)). A checkpoint
    without a stored config has none."""
    if not isinstance(stored, Mapping):
        return [], []
    applied, refused = [], []
    for key, old, new in config_differences(stored, current):
        line = f"{key}: {old!r} -> {new!r}"
        if any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUME_MAY_CHANGE):
            applied.append(line)
        else:
            refused.append((key, line))
    return applied, refused


def resume_config_changes(
    stored: Mapping[str, Any] | None, current: Mapping[str, Any], path: str | Path
) -> list[str]:
    """Compare a checkpoint's stored config with the resumed run's: the changes that apply.

    Changes of :data:`RESUME_MAY_CHANGE` keys are returned as ``key: old -> new`` lines (the run
    uses the new values, and its ``config.yaml`` records them); a checkpoint without a stored
    config returns none.

    Raises:
        ResumeConfigError: any other key differs; names the checkpoint and every such key.
    """
    applied, refused = split_resume_changes(stored, current)
    if refused:
        raise ResumeConfigError(
            f"{path}: --resume cannot change these settings of the run (checkpoint -> now): "
            f"{'; '.join(line for _, line in refused)}. {RESUME_ADVICE}"
        )
    return applied


def check_resume_checkpoint(
    checkpoint: CheckpointFile, current: Mapping[str, Any], run_task: str
) -> list[str]:
    """``--resume``: the checkpoint's role (lib/models/checkpoint_role.py: task, model, input,
    classes, network shape) and then :func:`resume_config_changes`, every difference in one message.

    Returns:
        The changes that apply (``key: old -> new`` lines).

    Raises:
        CheckpointRoleError: the role differs and no other setting does.
        ResumeConfigError: settings differ that --resume cannot change (with the role's
            differences first, when there are any).
    """
    applied, refused = split_resume_changes(checkpoint.config, current)
    try:
        checkpoint.check_role(current, "resume", run_task=run_task)
    except CheckpointRoleError as err:
        others = [line for key, line in refused if f"{key} is " not in str(err)]  # not named twice
        if not others:
            raise
        raise ResumeConfigError(
            f"{err}; nor can --resume change these settings of the run (checkpoint -> now): "
            f"{'; '.join(others)}. {RESUME_ADVICE}"
        ) from err
    return resume_config_changes(checkpoint.config, current, checkpoint.path)


class CheckpointWriteError(CheckpointError):
    """A checkpoint that could not be written (permission, full disk); the old file is kept."""


def periodic_due(epoch: int, every: int) -> bool:
    """Whether ``checkpoint_epoch_<epoch>.pth`` is written after 1-based ``epoch`` (``every`` 0: never)."""
    return every > 0 and epoch % every == 0


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` so that readers only ever see a complete file.

    The data go to a temporary file in the same folder, are flushed to disk, and the temporary
    file then replaces ``path`` in one ``os.replace`` (atomic on POSIX; lib/utils/files.py
    ``atomic_path``). If the process dies before that, ``path`` still holds its previous content.

    Raises:
        CheckpointWriteError: the folder cannot be written or the write failed (a full disk:
            torch reports it as a ``RuntimeError`` of its zip writer); ``path`` is unchanged.
    """
    path = Path(path)
    opened = False
    try:
        with atomic_path(path, suffix=TEMP_SUFFIX) as tmp, open(tmp, "wb") as f:
            opened = True
            torch.save(obj, f)
    except (OSError, RuntimeError) as err:
        if not opened:
            raise CheckpointWriteError(f"{path}: cannot write here ({err.strerror or err})") from err
        reason = getattr(err, "strerror", None) or "the write failed; is the disk full?"
        raise CheckpointWriteError(f"{path}: not written ({reason}); the previous file is unchanged") from err


def atomic_link(src: str | Path, dst: str | Path) -> None:
    """Make ``dst`` a second name of the complete file ``src`` (hard link, else copy), atomically."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.link{TEMP_SUFFIX}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        os.link(src, tmp)
    except OSError:  # file systems without hard links
        atomic_save(torch.load(src, map_location="cpu", weights_only=True), dst)
        return
    os.replace(tmp, dst)
    fsync_dir(dst.parent)


def remove_temp_files(folder: str | Path) -> list[Path]:
    """Delete temporary files left by writers that were killed; returns what was removed."""
    removed = []
    for tmp in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        tmp.unlink()
        removed.append(tmp)
    return removed


def rotate_checkpoints(folder: str | Path, keep: int) -> list[Path]:
    """Remove all but the ``keep`` newest ``checkpoint_epoch_<N>.pth`` of ``folder`` (0 = keep all).

    "Newest" is the largest N. ``last.pth`` and ``best.pth`` are never touched, and neither is
    a periodic file that is the same file as one of them (a hard link made by :func:`atomic_link`,
    or the target of a symbolic link): removing it would free no space. Other files are ignored.

    Returns:
        The removed files, oldest first.
    """
    if keep <= 0:
        return []
    folder = Path(folder)
    periodic = sorted(
        (int(m.group(1)), p) for p in folder.iterdir() if (m := PERIODIC.fullmatch(p.name)) and p.is_file()
    )
    kept = [folder / name for name in KEPT_NAMES if (folder / name).exists()]
    removed = []
    for _, path in periodic[: max(len(periodic) - keep, 0)]:
        if any(os.path.samefile(path, other) for other in kept):
            continue
        path.unlink()
        removed.append(path)
    return removed


class Checkpointer:
    """Writes and reads the checkpoints of one training run (``<run>/checkpoints/``).

    Every rank calls :meth:`save` (the RNG states are gathered from all of them); only the main
    process writes. A stale temporary file of a killed writer is removed on start.
    """

    def __init__(self, folder: str | Path, *, dist_info: DistInfo, task_name: str, config: Mapping) -> None:
        """``task_name`` ("detector" | "distiller") and ``config`` (the resolved config as a plain
        dict) are stored in every checkpoint; ``task_name`` must match on resume."""
        self.folder = Path(folder)
        self.dist = dist_info
        self.task_name = task_name
        self.config = dict(config)
        self.git_sha = git_sha()
        if dist_info.is_main:
            self.folder.mkdir(parents=True, exist_ok=True)
            remove_temp_files(self.folder)

    def save(self, state: Mapping[str, Any], *, epoch: int, every: int, keep: int, best: bool) -> Path:
        """Write ``state`` (+ task, config, git sha, the RNG state of every rank) as last.pth.

        ``last.pth`` gets the second names ``checkpoint_epoch_<epoch>.pth`` when ``every`` > 0
        divides ``epoch`` (then only the ``keep`` newest of those stay, 0 = all) and ``best.pth``
        when ``best``. Returns the path of ``last.pth``.
        """
        rng = capture_rng_state()
        states: list[Any] = [rng]
        if self.dist.distributed:
            states = [None] * self.dist.world_size
            dist.all_gather_object(states, rng)
        last = self.folder / "last.pth"
        if self.dist.is_main:
            full = {
                **state,
                "task": self.task_name,
                "rng": states,
                "config": self.config,
                "git_sha": self.git_sha,
            }
            atomic_save(full, last)
            if periodic_due(epoch, every):
                atomic_link(last, self.folder / f"checkpoint_epoch_{epoch}.pth")
            if best:
                atomic_link(last, self.folder / "best.pth")
            for path in rotate_checkpoints(self.folder, keep):
                logger.info("removed %s (trainer.keep_checkpoints=%d)", path.name, keep)
            logger.info("saved %s%s", last, " (new best)" if best else "")
        barrier()
        return last

    def load(self, checkpoint: CheckpointFile) -> dict[str, Any]:
        """Take a checkpoint read for ``--resume``: its task must be this run's; this rank's RNG
        state is restored (when the process counts match). Returns the checkpoint dict (on the CPU:
        ``load_state_dict`` moves each tensor to its parameter's device)."""
        ckpt, path = checkpoint.data, checkpoint.path
        if ckpt.get("task") != self.task_name:
            raise ValueError(
                f"{path}: a '{ckpt.get('task')}' checkpoint cannot resume a '{self.task_name}' run"
            )
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
        return ckpt


def git_sha(repo_dir: str | Path | None = None) -> str | None:
    """The current commit of the source tree (``None`` outside git), recorded in checkpoints."""
    folder = Path(repo_dir) if repo_dir is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
