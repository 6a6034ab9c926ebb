"""Reading model weights: THE reader of detector checkpoints (strict) and ImageNet backbone weights.

Every tool that reads a detector from a checkpoint file (``tools/train_val.py -e``,
``tools/inspect_model.py``, ``tools/export_student.py``, the distiller's teacher and student)
goes through :func:`load_checkpoint` and :func:`detector_state_from_checkpoint`, so a file
that one of them accepts, all accept (docs/reference.md, 'Checkpoint format', docs/parity.md "checkpoint
layouts"):

* ours: ``{"model_state": the (student) detector, "model": the whole task, ...}``;
* GUPNet and MonoSKD's RGB / depth baselines: ``{"model_state", "optimizer_state", "epoch"}``;
* MonoSKD's distillation wrapper: ``model_state`` keys ``centernet_rgb.*`` (the student, read),
  ``centernet_depth.*`` (teacher), ``rgb_fs.*``, ``adapt_layer*`` (dropped); any other key is
  an error;
* MonoDistill: every key prefixed ``module.`` (removed); a plain state_dict.

Loading is strict: every model key present with its shape and no extra key, except that the
training-only depth branch (docs/method.md, 'Framework') may be absent from the checkpoint (the model keeps
its initialisation) or present for a model built without it (ignored). Every such case is reported.
"""

from __future__ import annotations

import logging
import zipfile
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
# MonoSKD's distillation wrapper (docs/reference.md, 'Networks and weights'): the student, and the other
# parts.
SKD_STUDENT_PREFIX = "centernet_rgb."
SKD_OTHER_PREFIXES = ("centernet_depth.", "rgb_fs.", "adapt_layer")
CLASSIFIER_PREFIX = "fc."
BN_COUNTER_SUFFIX = ".num_batches_tracked"  # the backbone's ImageNet classifier, never used by the detector
NAMED_KEYS = 3  # keys a one-line message names as examples
CHECKPOINT_NAMES = ("checkpoints/last.pth", "last.pth")  # where a run folder keeps its last checkpoint


DLA34_URL = "http://dl.yf.io/dla/models/imagenet/dla34-ba72cf86.pth"  # configs/base.yaml's default


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that is missing, unreadable or of an unknown layout (the message names it)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No file at the checkpoint's path."""


class CheckpointMismatchError(UserError, RuntimeError):
    """The checkpoint does not fit the model; ``report`` lists the offending keys.

    With ``network`` (e.g. "detector"), weights of which most of the network's are missing are
    summed up in one line: ``<source> is not a checkpoint of this <network>: N of its M weights
    are missing (e.g. a, b, c)``; otherwise every key is listed.
    """

    def __init__(self, report: LoadReport, source: str, *, hint: str = "", network: str = "") -> None:
        if network and report.foreign:
            text = f"{source} is not a checkpoint of this {network}: {report.summary()}"
        else:
            text = f"{source} does not fit the model:\n{report.describe()}"
        super().__init__(text + (f"\n{hint}" if hint else ""))
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
    compared: int = 0  # the model's keys that must be in the checkpoint (neither optional nor counters)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    @property
    def foreign(self) -> bool:
        """Weights of another network: more than half of the model's weights are missing."""
        return 2 * len(self.missing) > self.compared

    def summary(self) -> str:
        """One line: how many of the model's weights are missing, and of the file's are unknown."""
        missing = len(self.missing)
        count = f"all {missing} of its" if missing == self.compared else f"{missing} of its {self.compared}"
        text = f"{count} weights are missing (e.g. {_first(self.missing)})"
        if self.unexpected:
            count = len(self.unexpected)
            foreign = f"{count} weight{'s' * (count != 1)} it has not (e.g. {_first(self.unexpected)})"
            text += f"; the file holds {foreign}"
        return text

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


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint dict with ``torch.load(weights_only=True)`` (no code from the file runs).

    Raises:
        CheckpointNotFoundError: no such file.
        CheckpointError: a folder (named with its :data:`CHECKPOINT_NAMES` file when it holds
            one), a file that is not a dict, or holds objects that ``weights_only`` refuses
            (a legacy pickle).
    """
    path = Path(path)
    if path.is_dir():
        inside = next((path / name for name in CHECKPOINT_NAMES if (path / name).is_file()), None)
        hint = f"did you mean {inside}?" if inside else "give the .pth file"
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file; {hint}")
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError or EOFError here
        not_torch = _not_torch_file(path)
        if not_torch:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint ({not_torch})") from None
        reason = _load_reason(err)
        raise CheckpointError(f"{path}: cannot be read as a weights-only checkpoint ({reason})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict, got {type(ckpt).__name__}")
    return ckpt


# torch.save's legacy (pre-zip) format starts with this magic number, pickled (protocol 2, a long).
LEGACY_TORCH_HEAD = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def _not_torch_file(path: Path) -> str | None:
    """Why a file that torch could not read is no torch.save file at all (None when it is one):
    torch.save writes a zip archive, or before PyTorch 1.6 a pickle that starts with a magic number."""
    with path.open("rb") as f:
        head = f.read(len(LEGACY_TORCH_HEAD))
    if head.startswith(LEGACY_TORCH_HEAD) or zipfile.is_zipfile(path):
        return None
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive cut short, e.g. by an interrupted download or copy"
    if not head:
        return "the file is empty"
    kind = "a plain Python pickle" if head[:1] == b"\x80" else "neither a zip archive nor a pickle"
    return f"{kind}, not written by torch.save: a checkpoint is a zip archive of tensors"


def _load_reason(err: Exception) -> str:
    """torch's reason in one line, without its advice to turn weights-only loading off (that would
    run arbitrary code from the file; no CLI here offers it)."""
    text = str(err)
    for line in text.splitlines():
        if "WeightsUnpickler error:" in line:  # "Unsupported global: GLOBAL argparse.Namespace ..."
            what = line.split("WeightsUnpickler error:", 1)[1].split(" was not an allowed global")[0].strip()
            return f"it holds Python objects, not only tensors: {what}"
    return text.splitlines()[0].strip() if text.strip() else type(err).__name__


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and all(isinstance(v, torch.Tensor) for v in value.values())


def detector_state_from_checkpoint(ckpt: Mapping[str, Any], *, source: str = "checkpoint") -> dict:
    """The (student) detector's state_dict inside a checkpoint of any supported layout (module
    docstring): ``model_state`` or a plain state_dict, ``module.`` removed, and of a MonoSKD
    distillation wrapper the ``centernet_rgb.`` part with that prefix removed.

    Raises:
        CheckpointError: neither ``model_state`` nor a plain state_dict, or a wrapper file with
            keys outside the known wrapper parts.
    """
    state = ckpt.get(MODEL_STATE_KEY, ckpt)
    if not _is_state_dict(state):
        keys = ", ".join(map(str, ckpt)) or "none"
        raise CheckpointError(
            f"{source}: unknown checkpoint layout (top-level keys: {keys}); "
            f"expected a '{MODEL_STATE_KEY}' state_dict or a plain state_dict"
        )
    if state and all(k.startswith(DATA_PARALLEL_PREFIX) for k in state):
        state = {k[len(DATA_PARALLEL_PREFIX) :]: v for k, v in state.items()}
    if not any(k.startswith(SKD_STUDENT_PREFIX) for k in state):
        return dict(state)
    unknown = [k for k in state if not k.startswith((SKD_STUDENT_PREFIX, *SKD_OTHER_PREFIXES))]
    if unknown:
        raise CheckpointError(
            f"{source}: a MonoSKD distillation layout ('{SKD_STUDENT_PREFIX}*') with unknown keys "
            f"({len(unknown)}): {', '.join(unknown[:5])}"
        )
    return {k[len(SKD_STUDENT_PREFIX) :]: v for k, v in state.items() if k.startswith(SKD_STUDENT_PREFIX)}


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The detector state_dict of a checkpoint file, on CPU (:func:`detector_state_from_checkpoint`)."""
    return detector_state_from_checkpoint(load_checkpoint(path), source=str(path))


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
        report.compared += not optional(key) and not key.endswith(BN_COUNTER_SUFFIX)
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


def check_finite_state(state: Mapping[str, Any], source: str | Path) -> None:
    """Refuse weights holding NaN or infinite values: the run that wrote them had diverged, and
    such a network detects nothing (or NaN boxes) without saying why.

    Raises:
        CheckpointError: names ``source``, how many tensors are affected and the first
            :data:`NAMED_KEYS` of them.
    """
    bad = [
        key
        for key, value in state.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all()
    ]
    if bad:
        raise CheckpointError(
            f"{source}: {len(bad)} of its {len(state)} weight tensors hold NaN or infinite values "
            f"(first: {_first(bad)}); the training that wrote it had diverged: use an earlier checkpoint"
        )


def _first(keys: list[str]) -> str:
    """The first :data:`NAMED_KEYS` keys, comma-separated, with ", ..." when there are more."""
    return ", ".join(keys[:NAMED_KEYS]) + (", ..." if len(keys) > NAMED_KEYS else "")


def load_model_state(
    model: nn.Module,
    source: str | Path | Mapping[str, Any],
    *,
    optional_prefixes: tuple[str, ...] = OPTIONAL_PREFIXES,
    name: str | None = None,
) -> LoadReport:
    """Load a checkpoint (file, checkpoint dict or state_dict) into ``model`` strictly; ``name``
    (default: the file, else "checkpoint") names the source in messages.

    Returns:
        The report (also logged when the depth branch is missing or ignored).

    Raises:
        CheckpointMismatchError: missing, unexpected or mis-shaped keys (all listed).
        CheckpointError: weights that are NaN or infinite (:func:`check_finite_state`).
    """
    name = name or (str(source) if isinstance(source, (str, Path)) else "checkpoint")
    if isinstance(source, (str, Path)):
        state = read_checkpoint(source)
    else:
        state = detector_state_from_checkpoint(source, source=name)
    check_finite_state(state, name)
    report = compare_state_dict(model, state, optional_prefixes=optional_prefixes)
    if not report.ok:
        raise CheckpointMismatchError(report, name, network="detector")
    model.load_state_dict({k: v for k, v in state.items() if k not in report.optional_ignored}, strict=False)
    if report.optional_missing or report.optional_ignored or report.counters_missing:
        logger.info("%s: %s", name, report.describe())
    return report


class BackboneWeightsError(UserError, RuntimeError):
    """ImageNet backbone weights that are absent and cannot be downloaded (the message says from
    where, to which path and with which command)."""


def _fetch_hint(url: str, path: Path) -> str:
    """How to put the file of ``url`` at ``path`` by hand: the command, and the two other ways."""
    return (
        f"fetch it with `mkdir -p {path.parent} && curl -L -o {path} {url}` (any machine with network, "
        f"then copy the file), or point model.backbone_weights=/path/to/{path.name} at a copy; "
        "model.pretrained=false trains from scratch"
    )


def _read_backbone_weights(path_or_url: str) -> dict[str, torch.Tensor]:
    if "://" not in path_or_url:
        path = Path(path_or_url)
        if not path.is_file():
            raise BackboneWeightsError(
                f"model.backbone_weights: no file at {path}; " + _fetch_hint(DLA34_URL, path)
            )
        return detector_state_from_checkpoint(load_checkpoint(path), source=str(path))
    cache = Path(torch.hub.get_dir()) / "checkpoints" / path_or_url.rsplit("/", 1)[-1]
    try:
        state = torch.hub.load_state_dict_from_url(
            path_or_url, map_location="cpu", progress=False, weights_only=True
        )
    except (URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise BackboneWeightsError(
            f"model.backbone_weights: {cache} is absent and {path_or_url} could not be downloaded "
            f"({reason}); " + _fetch_hint(path_or_url, cache)
        ) from err
    return detector_state_from_checkpoint(state, source=path_or_url)


def load_pretrained_backbone(model: nn.Module, path_or_url: str) -> None:
    """Load ImageNet weights into ``model.backbone`` (docs/reference.md, 'Backbone: DLA-34'); called by the
    builder only.

    The file is a local path or a URL (downloaded once to the torch hub cache). Every backbone
    key must be present with its shape, except the ImageNet classifier ``fc.*``: it is skipped,
    which leaves the model's own randomly initialised ``fc`` in place, the outcome of GUPNet's
    swap-load-restore of ``fc``.

    Raises:
        BackboneWeightsError: file absent or download failed (one line: the URL, the path where
            the file is expected and the command that fetches it).
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
