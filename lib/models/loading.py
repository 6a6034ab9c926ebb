"""The one way to get a detector: built from a config and, optionally, a checkpoint's weights.

Every tool and the distiller load a network through :func:`load_detector` (``train_val.py -e``,
``infer.py``, ``export_onnx.py``, ``inspect_model.py``, ``distill.*_checkpoint``), and read a
checkpoint through :func:`open_checkpoint` (also ``--resume`` and ``export_student.py``). The
file is read once; any layout that lib/models/checkpoint_io.py accepts is read; what the
checkpoint was trained for is checked against where it is used (lib/models/checkpoint_role.py).
Our checkpoints store the resolved config of their run (lib/engine/checkpoint.py), so the config
is optional wherever the checkpoint holds one (also a student exported by export_student.py);
reference checkpoints hold none.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from lib.config import Config, ConfigError, config_from_dict, load_config
from lib.depth_bins import RpdSettings
from lib.models.build import ModelSettings, build_detector
from lib.models.checkpoint_io import (
    CheckpointNotFoundError,
    LoadReport,
    check_finite_state,
    detector_state_from_checkpoint,
    load_checkpoint,
    load_model_state,
)
from lib.models.checkpoint_role import (
    RGB_ROLES,
    ROLES,
    STUDENT_INPUT,
    TEACHER_INPUT,
    check_checkpoint_role,
    detector_role,
)
from lib.models.detector import Detector

logger = logging.getLogger(__name__)

# The input a role's network reads; the other roles read the config's model.input.
ROLE_INPUTS = {"teacher": TEACHER_INPUT, "student": STUDENT_INPUT} | dict.fromkeys(RGB_ROLES, STUDENT_INPUT)
LOADER_ROLES = (*ROLES, "train")  # RGB_ROLES: an RGB network run or exported; train: no checkpoint


@dataclass(frozen=True)
class CheckpointFile:
    """A checkpoint read once: its path and its dict (any layout of lib/models/checkpoint_io.py)."""

    path: Path
    data: dict[str, Any]

    @property
    def config(self) -> dict[str, Any] | None:
        """The resolved config its run stored (our training checkpoints), else None."""
        config = self.data.get("config")
        return config if isinstance(config, Mapping) else None

    @property
    def task(self) -> str | None:
        """``"detector"`` | ``"distiller"`` for our training checkpoints, else None."""
        return self.data.get("task")

    def detector_state(self) -> dict[str, torch.Tensor]:
        """The (student) detector's state_dict (``detector_state_from_checkpoint``)."""
        return detector_state_from_checkpoint(self.data, source=str(self.path))

    def check_role(self, run_cfg: Mapping[str, Any], role: str, *, run_task: str | None = None) -> None:
        """``check_checkpoint_role`` of this file (raises CheckpointRoleError naming each difference)."""
        check_checkpoint_role(self.data, run_cfg, self.path, role, run_task=run_task)


def open_checkpoint(path: str | Path, *, role: str | None = None) -> CheckpointFile:
    """Read the checkpoint at ``path`` once, on the CPU, ``weights_only``.

    Raises:
        CheckpointNotFoundError: no such file (for ``teacher`` / ``student`` the message starts
            with the config key that names the file).
        CheckpointError: unreadable, not a dict, or a legacy pickle.
    """
    try:
        return CheckpointFile(Path(path), load_checkpoint(path))
    except CheckpointNotFoundError as err:
        if role in ("teacher", "student"):
            hint = "train that stage first, or let tools/reproduce.py (make demo: configs/demo) chain them"
            raise CheckpointNotFoundError(f"{ROLES[role]}: {err}; {hint}") from None
        raise


def run_config(
    config: Mapping[str, Any] | str | Path | None,
    checkpoint: CheckpointFile | None = None,
    overrides: Sequence[str] = (),
) -> Config:
    """The config of a run: ``config`` (a resolved config, or a YAML file with ``overrides``),
    else the config stored in ``checkpoint`` with ``overrides``.

    Raises:
        ConfigError: no config given and the checkpoint stores none (an exported or reference
            checkpoint: its config must be given with ``--config``), overrides given with a
            resolved config, or the config's own errors.
    """
    if isinstance(config, Mapping):
        if overrides:
            raise ConfigError(f"overrides {list(overrides)} given with an already resolved config")
        return config if isinstance(config, Config) else Config(config)
    if config is not None:
        return load_config(config, overrides)
    if checkpoint is None or checkpoint.config is None:
        what = f"{checkpoint.path} stores no config" if checkpoint else "no checkpoint given"
        raise ConfigError(
            f"{what}: pass the model's config with --config (reference checkpoints hold only weights; "
            "this project's training checkpoints and exported students store their config)"
        )
    return config_from_dict(checkpoint.config, overrides, source=f"{checkpoint.path} (its stored config)")


@dataclass(frozen=True)
class LoadedDetector:
    """What :func:`load_detector` gives: the network, the run config it was built from, the
    checkpoint read (None without one) and how its weights fitted (None without one)."""

    detector: Detector
    config: Config
    checkpoint: CheckpointFile | None
    report: LoadReport | None


def load_detector(
    config: Mapping[str, Any] | str | Path | None,
    checkpoint: CheckpointFile | str | Path | None = None,
    *,
    overrides: Sequence[str] = (),
    role: str = "eval",
    run_task: str | None = None,
    pretrained: bool | None = None,
) -> LoadedDetector:
    """The detector of a config, with a checkpoint's weights loaded strictly when one is given.

    Args:
        config: a resolved config, a YAML file (with ``overrides``), or None for the config the
            checkpoint stores (:func:`run_config`).
        checkpoint: a file or a :class:`CheckpointFile` already read; None builds the network only.
        role: where the network is used; it sets the input and the role check:
            ``eval`` (the run's evaluated detector: the RGB student of a distillation run, else
            ``model.input``), ``infer`` / ``onnx`` / ``export`` (an RGB network run on images or
            exported, lib/models/checkpoint_role.py ``RGB_ROLES``; a teacher is refused, naming
            the command and where the depth input came from: checkpoint, --config or override),
            ``teacher`` (depth input) / ``student`` (RGB) of ``distill.*_checkpoint``, ``train``
            (the configured network, no checkpoint).
        run_task: ``"detector"`` | ``"distiller"``, the task of the run the network serves
            (default: the checkpoint's own).
        pretrained: load ``model.backbone_weights``; default: as configured when no checkpoint
            is given, else not.

    Returns:
        The network (in eval mode except for ``teacher`` / ``student`` / ``train``), its config,
        checkpoint and load report.

    Raises:
        ConfigError: bad or missing config (see :func:`run_config`), or a depth input for an RGB
        role; CheckpointError: missing, unreadable file, unknown layout or non-finite weights;
        CheckpointRoleError: trained for another role;
        CheckpointMismatchError: weights of another network (``.report`` lists the keys).
    """
    if role not in LOADER_ROLES:
        raise ValueError(f"unknown role {role!r} (known: {', '.join(LOADER_ROLES)})")
    if isinstance(checkpoint, (str, Path)):
        checkpoint = open_checkpoint(checkpoint, role=role)
    cfg = run_config(config, checkpoint, overrides)
    if run_task is None and checkpoint is not None:
        run_task = checkpoint.task
    if checkpoint is not None:
        if role == "train":
            raise ValueError("role 'train' builds a network without a checkpoint")
        checkpoint.check_role(cfg, role, run_task=run_task)
    model = ModelSettings.from_config(cfg)
    evaluated = STUDENT_INPUT if run_task == "distiller" else model.input
    override = _input_override(overrides)
    if role in RGB_ROLES and override is not None:  # also for a distillation run's student
        evaluated = override.partition("=")[2].strip()
    if role in RGB_ROLES and evaluated != STUDENT_INPUT:
        raise ConfigError(_not_rgb(evaluated, role, config, overrides, checkpoint))
    if pretrained is None:
        pretrained = model.pretrained and checkpoint is None
    model = replace(model, input=ROLE_INPUTS.get(role, evaluated), pretrained=pretrained)
    detector = build_detector(model, RpdSettings.from_config(cfg))
    report = None
    if checkpoint is not None:
        report = load_model_state(detector, checkpoint.detector_state(), name=str(checkpoint.path))
        logger.info("loaded the %s network from %s", role, checkpoint.path)
    if role in ("eval", *RGB_ROLES):
        detector.eval()
    return LoadedDetector(detector, cfg, checkpoint, report)


def _not_rgb(
    value: str,
    role: str,
    config: Mapping[str, Any] | str | Path | None,
    overrides: Sequence[str],
    checkpoint: CheckpointFile | None,
) -> str:
    """Why an RGB-only role refuses the run config's ``model.input``: the message names where the
    value came from (an override, the ``--config`` file, the checkpoint's stored config) and the
    checkpoint's own input when it says one."""
    override = _input_override(overrides)
    stored = None
    if checkpoint is not None and checkpoint.config is not None:
        stored = detector_role(checkpoint.config, checkpoint.task)["model.input"]
    needs = f"{ROLES[role]} runs RGB networks only"
    if override is not None:
        clash = f" conflicts with {checkpoint.path} (model.input {stored!r})" if stored else ""
        return f"the override {override}{clash}: {needs}"
    where = config if isinstance(config, (str, Path)) else checkpoint.path if checkpoint else "config"
    return f"{where}: model.input is {value!r} (a teacher's input): {needs}"


def _input_override(overrides: Sequence[str]) -> str | None:
    """The last ``model.input=...`` override, or None."""
    return next((o for o in reversed(overrides) if o.partition("=")[0].strip() == "model.input"), None)


def export_state(checkpoint: CheckpointFile, role: str = "export") -> dict[str, torch.Tensor]:
    """The detector weights of ``checkpoint`` for an RGB-only ``role`` that writes them elsewhere
    (tools/export_student.py), without building the network: what :func:`load_detector` refuses
    is refused here too.

    Raises:
        CheckpointRoleError: its stored config says it is not an RGB detector (a depth-input
            teacher: :func:`check_checkpoint_role` with ``role``); files without a config pass.
        CheckpointError: unknown layout, or weights that are NaN or infinite (``check_finite_state``).
    """
    if role not in RGB_ROLES:
        raise ValueError(f"role {role!r} is not an RGB role ({', '.join(RGB_ROLES)})")
    if checkpoint.config is not None:
        checkpoint.check_role(checkpoint.config, role)
    state = checkpoint.detector_state()
    check_finite_state(state, checkpoint.path)
    return state
