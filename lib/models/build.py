"""``build_detector``: one builder for teacher and student, with an explicit name -> class table.

The teacher and the student are the same class; only ``model.input`` (the batch key the network
reads) differs (docs/method.md §1). ImageNet backbone weights are loaded here, never in a constructor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lib.models.checkpoint_io import load_pretrained_backbone
from lib.models.detector import Detector
from lib.models.did import DIDM3D
from lib.models.gupnet import GUPNet

DETECTORS: dict[str, type[Detector]] = {"gupnet": GUPNet, "did": DIDM3D}


def detector_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``build_detector`` from a resolved config (its ``model`` and ``rpd``)."""
    model = cfg["model"]
    return {
        "model_type": model["type"],
        "backbone": model["backbone"],
        "num_classes": model["num_classes"],
        "head_conv": model["head_conv"],
        "depth_branch": model["depth_branch"],
        "num_depth_bins": cfg["rpd"]["num_bins"],
        "depth_branch_channels": model["depth_branch_channels"],
        "input_key": model["input"],
        "pretrained": model["pretrained"],
        "backbone_weights": model["backbone_weights"],
    }


def build_detector(
    cfg: Mapping[str, Any] | None = None,
    /,
    *,
    model_type: str | None = None,
    pretrained: bool | None = None,
    backbone_weights: str | None = None,
    **kwargs: Any,
) -> Detector:
    """Build a detector from a config, from keyword arguments, or a config with overrides.

    Args:
        cfg: a resolved config (``load_config``); its ``model`` / ``rpd`` sections give the defaults.
        model_type: ``gupnet`` or ``did`` (default ``did``, as in configs/base.yaml).
        pretrained: load ImageNet backbone weights from ``backbone_weights`` (default False
            without a config, so tests never download).
        backbone_weights: local path or URL of the backbone weights.
        **kwargs: ``Detector`` arguments (backbone, num_classes, head_conv, depth_branch,
            num_depth_bins, depth_branch_channels, input_key, mean_size).

    Example:
        ``build_detector(load_config("configs/teacher.yaml"))`` or
        ``build_detector(model_type="gupnet", backbone="resnet18", depth_branch=False)``.
    """
    options = detector_kwargs(cfg) if cfg is not None else {}
    options.update(kwargs)
    explicit = {"model_type": model_type, "pretrained": pretrained, "backbone_weights": backbone_weights}
    options.update({k: v for k, v in explicit.items() if v is not None})
    name = options.pop("model_type", "did")
    load_weights = options.pop("pretrained", False)
    weights = options.pop("backbone_weights", None)
    if name not in DETECTORS:
        raise ValueError(f"model.type: unknown detector {name!r} (known: {', '.join(DETECTORS)})")
    model = DETECTORS[name](**options)
    if load_weights:
        if not weights:
            raise ValueError("model.pretrained is true but model.backbone_weights is empty")
        load_pretrained_backbone(model, weights)
    return model
