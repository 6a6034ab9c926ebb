"""Detectors (GUPNet, DID-M3D), their backbones, heads and checkpoint loading (docs/reference.md, 'The GUPNet
network')."""

from lib.models.build import DETECTORS, ModelSettings, build_detector
from lib.models.checkpoint_io import (
    CheckpointMismatchError,
    LoadReport,
    load_model_state,
    load_pretrained_backbone,
    read_checkpoint,
)
from lib.models.detector import Detector
from lib.models.did import DIDM3D
from lib.models.gupnet import GUPNet

__all__ = [
    "DETECTORS",
    "DIDM3D",
    "CheckpointMismatchError",
    "Detector",
    "GUPNet",
    "LoadReport",
    "ModelSettings",
    "build_detector",
    "load_model_state",
    "load_pretrained_backbone",
    "read_checkpoint",
]
