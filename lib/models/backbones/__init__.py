"""Backbones by name. Each returns a list of maps and exposes ``channels`` and ``strides``."""

from __future__ import annotations

from torch import nn

from lib.models.backbones.dla import DLA34
from lib.models.backbones.dlaup import DLAUp
from lib.models.backbones.resnet import ResNet18

BACKBONES: dict[str, type[nn.Module]] = {"dla34": DLA34, "resnet18": ResNet18}


def build_backbone(name: str) -> nn.Module:
    """A randomly initialised backbone (``model.backbone``); pretrained weights load separately."""
    if name not in BACKBONES:
        raise ValueError(f"model.backbone: unknown backbone {name!r} (known: {', '.join(BACKBONES)})")
    return BACKBONES[name]()


__all__ = ["BACKBONES", "DLA34", "DLAUp", "ResNet18", "build_backbone"]
