"""What the parity tests share: our network built as the reference builds it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lib.config import load_config
from lib.depth_bins import RpdSettings
from lib.models import Detector, ModelSettings, build_detector

BASE_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "base.yaml"


def reference_network(model_type: str) -> Detector:
    """configs/base.yaml's network as GUPNet / MonoSKD build it: no depth branch, random weights,
    DID-M3D's visual-depth scale from the RoI heights (``model.vis_depth_scale: box``)."""
    cfg = load_config(BASE_CONFIG)
    model = ModelSettings.from_config(cfg)
    model = replace(model, type=model_type, depth_branch=False, pretrained=False, vis_depth_scale="box")
    return build_detector(model, RpdSettings.from_config(cfg))
