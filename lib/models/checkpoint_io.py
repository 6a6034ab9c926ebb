"""Reading model weights: detector checkpoints (strict) and ImageNet backbone weights.

Detector checkpoints come in three layouts (REFERENCE §7): GUPNet / MonoSKD ``{"model_state": sd,
"optimizer_state": ..., "epoch": ...}``, ours (also ``{"model_state": sd, ...}``) and a plain
state_dict. Loading is strict: every model key present with its shape and no extra key, except
that the training-only depth branch (METHOD §1) may be absent from the checkpoint (the model keeps
its initialisation) or present for a model built without it (ignored). Every such case is reported.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.error import URLError

import torch
from torch import nn

from lib.errors import UserError
from lib.models.depth_branch import DEPTH_BRANCH_NAME

logger = logging.getLogger(__name__)

OPTIONAL_PREFIXES = (f"{DEPTH_BRANCH_NAME}.",)
MODEL_STATE_KEY = "model_state"
DATA_PARALLEL_PREFIX = "module."
CLASSIFIER_PREFIX = "fc."
BN_COUNTER_SUFFIX = ".num_batches_tracked"  # the backbone's ImageNet classifier, never used by the detector


class CheckpointMismatchError(UserError, RuntimeError):
    """The checkpoint does not fit the model; ``report`` lists the offending keys."""

    def __init__(self, report: LoadReport, source: str, *, hint: str = "") -> None:
        super().__init__(
            f"{source} does not fit the model:\n{report.describe()}" + (f"\n{hint}" if hint else "")
        )
        self.report = report


@dataclass
class LoadReport:
    """How a state_dict compares with a model's.

    Attributes:
        missing: model keys absent from the checkpoint (an error).
        unexpected: checkpoint keys the model lacks (an error).
        mismatched: (key, checkpoint shape, model shape) for keys whose shapes differ (an error).
        optional_missing: depth-branch keys absent from the checkpoint (allowed; kept as initialised).
        optional_ignored: depth-branch keys in the checkpoint for a model without the branch (allowed).
        counters_missing: BatchNorm ``num_batches_tracked`` counters absent from the checkpoint
            (allowed: files from PyTorch < 0.4.1, such as the 2018 DLA ImageNet weights, lack them;
            they only matter for BN momentum=None, which no model here uses).
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    optional_missing: list[str] = field(default_factory=list)
    optional_ignored: list[str] = field(default_factory=list)
    counters_missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        """Human-readable multi-line summary (all keys listed)."""
        lines = []
        for title, keys in (("missing", self.missing), ("unexpected", self.unexpected)):
            if keys:
                lines.append(f"{title} keys ({len(keys)}): " + ", ".join(keys))
        if self.mismatched:
            shapes = ", ".join(
                f"{k} (checkpoint {list(c)} vs model {list(m)})" for k, c, m in self.mismatched
            )
            lines.append(f"mis-shaped keys ({len(self.mismatched)}): {shapes}")
        notes = (
            (self.optional_missing, "depth branch absent from the checkpoint, kept as initialised"),
            (self.counters_missing, "BatchNorm counters absent (pre-0.4.1 file), kept as initialised"),
            (self.optional_ignored, "depth branch in the checkpoint ignored: the model has none"),
        )
        lines += [f"{note} ({len(keys)} keys)" for keys, note in notes if keys]
        return "\n".join(lines) if lines else "all keys match"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "missing": self.missing,
            "unexpected": self.unexpected,
            "mismatched": [
                {"key": k, "checkpoint": list(c), "model": list(m)} for k, c, m in self.mismatched
            ],
            "optional_missing": self.optional_missing,
            "optional_ignored": self.optional_ignored,
            "counters_missing": self.counters_missing,
        }


def extract_state_dict(checkpoint: Mapping[str, Any], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The model state_dict inside a loaded checkpoint (``model_state`` or plain), ``module.`` stripped.

    MonoDistill saves DataParallel-wrapped models whose keys all start with ``module.`` (REFERENCE §7).
    """
    state = checkpoint.get(MODEL_STATE_KEY, checkpoint)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source}: expected a state_dict or a dict with '{MODEL_STATE_KEY}' holding one")
    if state and all(k.startswith(DATA_PARALLEL_PREFIX) for k in state):
        state = {k[len(DATA_PARALLEL_PREFIX) :]: v for k, v in state.items()}
    return dict(state)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint file on CPU (``weights_only=True``) and return its model state_dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return extract_state_dict(_torch_load(path), str(path))


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise ValueError(f"{path}: not a readable torch checkpoint ({err})") from err


def compare_state_dict(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    optional_prefixes: tuple[str, ...] = OPTIONAL_PREFIXES,
) -> LoadReport:
    """Compare ``state`` with ``model.state_dict()`` key by key and shape by shape."""
    expected = model.state_dict()
    report = LoadReport()

    def optional(key: str) -> bool:
        return key.startswith(optional_prefixes)

    for key, value in expected.items():
        if key not in state and key.endswith(BN_COUNTER_SUFFIX) and not optional(key):
            report.counters_missing.append(key)
        elif key not in state:
            (report.optional_missing if optional(key) else report.missing).append(key)
        elif tuple(state[key].shape) != tuple(value.shape):
            report.mismatched.append((key, tuple(state[key].shape), tuple(value.shape)))
    for key in state:
        if key not in expected:
            (report.optional_ignored if optional(key) else report.unexpected).append(key)
    # A partly present depth branch is a broken checkpoint, not an older one.
    if report.optional_missing and any(optional(k) for k in state):
        report.missing += report.optional_missing
        report.optional_missing = []
    return report


def load_model_state(
    model: nn.Module,
    source: str | Path | Mapping[str, Any],
    *,
    optional_prefixes: tuple[str, ...] = OPTIONAL_PREFIXES,
) -> LoadReport:
    """Load a checkpoint (file, checkpoint dict or state_dict) into ``model`` strictly.

    Returns:
        The report (also logged when the depth branch is missing or ignored).

    Raises:
        CheckpointMismatchError: missing, unexpected or mis-shaped keys (all listed).
    """
    name = str(source) if isinstance(source, (str, Path)) else "checkpoint"
    state = read_checkpoint(source) if isinstance(source, (str, Path)) else extract_state_dict(source, name)
    report = compare_state_dict(model, state, optional_prefixes=optional_prefixes)
    if not report.ok:
        raise CheckpointMismatchError(report, name)
    model.load_state_dict({k: v for k, v in state.items() if k not in report.optional_ignored}, strict=False)
    if report.optional_missing or report.optional_ignored or report.counters_missing:
        logger.info("%s: %s", name, report.describe())
    return report


def _read_backbone_weights(path_or_url: str) -> dict[str, torch.Tensor]:
    if "://" not in path_or_url:
        path = Path(path_or_url)
        if not path.is_file():
            raise FileNotFoundError(
                f"model.backbone_weights: no file at {path}. Download the ImageNet weights (DLA-34: "
                "http://dl.yf.io/dla/models/imagenet/dla34-ba72cf86.pth) to that path, point "
                "model.backbone_weights at the file, or set model.pretrained=false."
            )
        return extract_state_dict(_torch_load(path), str(path))
    file_name = path_or_url.rsplit("/", 1)[-1]
    try:
        state = torch.hub.load_state_dict_from_url(
            path_or_url, map_location="cpu", progress=False, weights_only=True
        )
    except (URLError, OSError) as err:
        cache = Path(torch.hub.get_dir()) / "checkpoints" / file_name
        raise RuntimeError(
            f"model.backbone_weights: could not download {path_or_url} ({err}). Download it by hand "
            f"and either put it at {cache} (the torch hub cache) or anywhere and set "
            f"model.backbone_weights=/path/to/{file_name}; model.pretrained=false trains from scratch."
        ) from err
    return extract_state_dict(state, path_or_url)


def load_pretrained_backbone(model: nn.Module, path_or_url: str) -> None:
    """Load ImageNet weights into ``model.backbone`` (REFERENCE §1.1); called by the builder only.

    The file is a local path or a URL (downloaded once to the torch hub cache). Every backbone
    key must be present with its shape, except the ImageNet classifier ``fc.*``: it is skipped,
    which leaves the model's own randomly initialised ``fc`` in place, the outcome of GUPNet's
    swap-load-restore of ``fc``.

    Raises:
        FileNotFoundError / RuntimeError: file absent or download failed (the message says what to
            download, where to put it and which config key to set).
        CheckpointMismatchError: the file is not weights for this backbone.
    """
    state = _read_backbone_weights(path_or_url)
    state = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIX)}
    backbone = model.backbone
    report = compare_state_dict(backbone, state, optional_prefixes=(CLASSIFIER_PREFIX,))
    if not report.ok:
        hint = (
            f"model.backbone_weights must hold ImageNet weights of this backbone "
            f"({type(backbone).__name__}); set model.pretrained=false to start from random weights."
        )
        raise CheckpointMismatchError(report, f"backbone weights {path_or_url}", hint=hint)
    backbone.load_state_dict(state, strict=False)
    logger.info("loaded backbone weights from %s (classifier fc left as initialised)", path_or_url)
