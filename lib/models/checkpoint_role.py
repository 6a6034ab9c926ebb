"""Checkpoints know their role: compare the config a checkpoint stores with the run's.

Every training checkpoint stores the resolved config of its run and its task ("detector" |
"distiller", lib/engine/checkpoint.py). A teacher (``model.input: depth``) and a student
(``rgb``) have the same weights' layout, so a strict load accepts one where the other belongs;
so do checkpoints trained for other classes. :func:`check_checkpoint_role` compares what the
checkpoint's detector is (model type, input, classes; for ``--resume`` also the task) with
what the call site needs and stops with a message that names the file and each difference.
Files without a stored config (bare weights, GUPNet / MonoSKD downloads) pass unchecked:
nothing says what they are.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lib.models.checkpoint_io import CheckpointError

logger = logging.getLogger(__name__)

# Where a checkpoint is used, and what the run needs there (docs/architecture.md).
ROLES = {
    "eval": "evaluation (-e)",
    "resume": "--resume",
    "teacher": "distill.teacher_checkpoint",
    "student": "distill.student_checkpoint",
    "infer": "inference (tools/infer.py)",
    "onnx": "ONNX export (tools/export_onnx.py)",
    "export": "student export (tools/export_student.py)",
}
TEACHER_INPUT = "depth"
STUDENT_INPUT = "rgb"
# Uses that take an RGB network only (a depth-input teacher is refused): the role's words above
# name the command.
RGB_ROLES = ("infer", "onnx", "export")
# --resume restores the whole task, so the network's shape must match too (else torch's strict
# load fails with a list of tensors instead of the setting that differs).
RESUME_KEYS = (
    "model.backbone",
    "model.head_conv",
    "model.depth_branch",
    "model.depth_branch_channels",
    "rpd.num_bins",
)


class CheckpointRoleError(CheckpointError):
    """A checkpoint trained for another role (teacher / student, model, classes, task)."""


def detector_role(cfg: Mapping[str, Any], task: str | None) -> dict[str, Any]:
    """What the detector of a run is: ``model.type``, its input, its classes.

    A distillation run's evaluated detector (its checkpoint's ``model_state``) is the RGB student,
    whatever the teacher sees.
    """
    model = cfg.get("model") or {}
    dataset = cfg.get("dataset") or {}
    writelist = dataset.get("writelist")
    return {
        "model.type": model.get("type"),
        "model.input": STUDENT_INPUT if task == "distiller" else model.get("input"),
        "dataset.writelist": list(writelist) if writelist is not None else None,
    }


def _lookup(cfg: Mapping[str, Any], dotted: str) -> Any:
    value: Any = cfg
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _differences(stored: Mapping[str, Any], needed: Mapping[str, Any], keys: tuple[str, ...]) -> list[str]:
    return [
        f"{key} is {stored[key]!r} in the checkpoint, the run needs {needed[key]!r}"
        for key in keys
        if stored.get(key) is not None and needed.get(key) is not None and stored[key] != needed[key]
    ]


def check_checkpoint_role(
    ckpt: Mapping[str, Any],
    run_cfg: Mapping[str, Any],
    path: str | Path,
    role: str,
    *,
    run_task: str | None = None,
) -> None:
    """Stop when the checkpoint at ``path`` was trained for another role than ``role``.

    Args:
        ckpt: the loaded checkpoint dict (its ``config`` and ``task`` entries are read).
        run_cfg: the resolved config of this run.
        path: the checkpoint file, for the message.
        role: ``eval`` (-e: model type, input, classes), ``resume`` (the same plus the task and
            the network's shape, :data:`RESUME_KEYS`), :data:`RGB_ROLES` (as ``eval``, with
            an RGB input whatever the run's config says),
            ``teacher`` / ``student`` (``distill.*_checkpoint``: model type and a depth / RGB
            input; other classes only warn: the distilled terms are class-agnostic).
        run_task: the run's task ("detector" | "distiller"), for ``eval`` and ``resume``.

    Raises:
        CheckpointRoleError: names the file and every difference.
    """
    if role not in ROLES:
        raise ValueError(f"unknown checkpoint role {role!r} (known: {', '.join(ROLES)})")
    stored_cfg = ckpt.get("config")
    if not isinstance(stored_cfg, Mapping):
        logger.debug("%s stores no config: its role is not checked", path)
        return
    stored_task = ckpt.get("task")
    stored = detector_role(stored_cfg, stored_task)
    if role in ("eval", "resume", *RGB_ROLES):
        needed = detector_role(run_cfg, run_task)
        if role in RGB_ROLES:
            needed["model.input"] = STUDENT_INPUT
        diffs = _differences(stored, needed, ("model.type", "model.input", "dataset.writelist"))
        if role == "resume":
            shapes = ({k: _lookup(c, k) for k in RESUME_KEYS} for c in (stored_cfg, run_cfg))
            diffs += _differences(*shapes, RESUME_KEYS)
            if stored_task and run_task and stored_task != run_task:
                diffs.insert(0, f"task is {stored_task!r} in the checkpoint, the run needs {run_task!r}")
    else:
        needed = detector_role(run_cfg, None)
        needed["model.input"] = TEACHER_INPUT if role == "teacher" else STUDENT_INPUT
        diffs = _differences(stored, needed, ("model.type", "model.input"))
        other_classes = _differences(stored, needed, ("dataset.writelist",))
        if other_classes and not diffs:
            logger.warning("%s (%s): %s", path, ROLES[role], other_classes[0])
    if diffs:
        raise CheckpointRoleError(f"{path}: not a checkpoint for {ROLES[role]}: " + "; ".join(diffs))
