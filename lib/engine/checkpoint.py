"""Checkpoint files: atomic writes (the one reader: lib/models/checkpoint_io.py ``load_checkpoint``).

A training checkpoint (written by :class:`lib.engine.trainer.Trainer`) is a dict:
``{"model_state": the evaluated (student) detector's state_dict, "model": the unwrapped task's
state_dict (teacher, adapters; for ``--resume``), "task": "detector" | "distiller", "epoch":
epochs completed, "iteration", "optimizer", "scheduler", "scaler", "htl", "rng" (one entry per
rank), "best_metric", "config": resolved config dict, "git_sha"}``. The detector sits under
``model_state`` as in GUPNet's ``{"model_state", "optimizer_state", "epoch"}`` (docs/reference.md §7),
so GUPNet-style loaders read our files and we read theirs. (``torch.save`` stores tensors
that share storage once, so ``model_state`` costs no extra space.)

Files are written atomically (temporary file in the same folder, fsync, ``os.replace``), so a
process killed while writing leaves the previous file intact, and read with
``torch.load(weights_only=True)`` (no arbitrary code from a downloaded file).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

from lib.models.checkpoint_io import CheckpointError

TEMP_SUFFIX = ".tmp"


class CheckpointWriteError(CheckpointError):
    """A checkpoint that could not be written (permission, full disk); the old file is kept."""


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` so that readers only ever see a complete file.

    The data go to a temporary file in the same folder, are flushed to disk, and the temporary
    file then replaces ``path`` in one ``os.replace`` (atomic on POSIX). If the process dies
    before that, ``path`` still holds its previous content.

    Raises:
        CheckpointWriteError: the folder cannot be written or the write failed (a full disk:
            torch reports it as a ``RuntimeError`` of its zip writer); ``path`` is unchanged.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as err:
        raise CheckpointWriteError(f"{path}: cannot write here ({err.strerror or err})") from err
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        reason = getattr(err, "strerror", None) or "the write failed; is the disk full?"
        raise CheckpointWriteError(f"{path}: not written ({reason}); the previous file is unchanged") from err
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


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
    _fsync_dir(dst.parent)


def remove_temp_files(folder: str | Path) -> list[Path]:
    """Delete temporary files left by writers that were killed; returns what was removed."""
    removed = []
    for tmp in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        tmp.unlink()
        removed.append(tmp)
    return removed


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


def _fsync_dir(folder: Path) -> None:
    """Persist a rename in ``folder`` (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
