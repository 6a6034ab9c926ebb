"""The ``model:`` section (:class:`ModelSettings`) and ``build_detector``, one builder for both roles.

The teacher and the student are the same class; only ``model.input`` (the batch key the network
reads) differs (docs/method.md, 'Framework'). ``DETECTORS`` is the explicit name -> class table of
``model.type``. ImageNet backbone weights are loaded here, never in a constructor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lib.config import ConfigError, section_settings
from lib.depth_bins import RpdSettings
from lib.models.backbones import BACKBONES
from lib.models.checkpoint_io import load_pretrained_backbone
from lib.models.detector import INPUT_KEYS, Detector
from lib.models.did import DIDM3D, VIS_DEPTH_SCALES
from lib.models.gupnet import GUPNet

DETECTORS: dict[str, type[Detector]] = {"gupnet": GUPNet, "did": DIDM3D}


@dataclass(frozen=True)
class ModelSettings:
    """The ``model:`` config section, checked; configs/base.yaml documents each key and its default.

    A caller that builds a network for a role changes ``input`` / ``pretrained`` with
    ``dataclasses.replace`` (the distiller's teacher reads ``depth`` and never loads ImageNet
    weights).

    Raises:
        ConfigError: an unknown ``model.type`` / ``input`` / ``backbone`` or a width below 1.
    """

    type: str
    input: str
    backbone: str
    pretrained: bool
    backbone_weights: str | None
    head_conv: int
    depth_branch: bool
    depth_branch_channels: int
    vis_depth_scale: str

    def __post_init__(self) -> None:
        if self.type not in DETECTORS:
            raise ConfigError(f"model.type: unknown detector {self.type!r} (known: {', '.join(DETECTORS)})")
        if self.backbone not in BACKBONES:
            raise ConfigError(
                f"model.backbone: unknown backbone {self.backbone!r} (known: {', '.join(BACKBONES)})"
            )
        if self.input not in INPUT_KEYS:
            raise ConfigError(f"model.input must be one of {INPUT_KEYS}, got {self.input!r}")
        if self.vis_depth_scale not in VIS_DEPTH_SCALES:
            raise ConfigError(
                f"model.vis_depth_scale must be one of {VIS_DEPTH_SCALES}, got {self.vis_depth_scale!r}"
            )
        for key in ("head_conv", "depth_branch_channels"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"model.{key} must be an integer >= 1, got {value!r}")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ModelSettings:
        """The ``model`` section of a resolved config (:func:`lib.config.load_config`)."""
        return section_settings(cls, cfg["model"], name="model")


def build_detector(model: ModelSettings, rpd: RpdSettings) -> Detector:
    """The detector ``model`` describes, with ``rpd.num_bins`` + 1 depth-branch logits.

    Example:
        ``cfg = load_config("configs/teacher.yaml")``;
        ``build_detector(ModelSettings.from_config(cfg), RpdSettings.from_config(cfg))``.

    Raises:
        ConfigError: ``model.pretrained`` is true and ``model.backbone_weights`` is empty.
        OSError / RuntimeError: the backbone weights cannot be read or do not fit.
    """
    only_did = {"vis_depth_scale": model.vis_depth_scale} if model.type == DIDM3D.model_type else {}
    detector = DETECTORS[model.type](
        **only_did,
        backbone=model.backbone,
        head_conv=model.head_conv,
        depth_branch=model.depth_branch,
        num_depth_bins=rpd.num_bins,
        depth_branch_channels=model.depth_branch_channels,
        input_key=model.input,
    )
    if model.pretrained:
        if not model.backbone_weights:
            raise ConfigError("model.pretrained is true but model.backbone_weights is empty")
        load_pretrained_backbone(detector, model.backbone_weights)
    return detector
