"""Fake batches in the dataset's batch layout, and configs/base.yaml's detector, for model tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lib.config import load_config
from lib.constants import MEAN_SIZES, NUM_HEADING_BIN
from lib.depth_bins import RpdSettings
from lib.models import Detector, ModelSettings, build_detector

BASE_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "base.yaml"

# KITTI frame 000000's P2 (rounded): fu = fv = 721.54, cu = 609.56, cv = 172.85.
KITTI_P2 = torch.tensor(
    [[721.5377, 0.0, 609.5593, 44.85728], [0.0, 721.5377, 172.854, 0.2163791], [0.0, 0.0, 1.0, 0.002745884]]
)
MAX_OBJS = 50
NUM_BINS = 80


def make_batch(
    batch_size: int = 2,
    height: int = 96,
    width: int = 320,
    *,
    num_objects: tuple[int, ...] = (3, 1),
    seed: int = 0,
) -> dict:
    """A sample batch in the layout of lib/datasets/kitti.py: rgb, depth, calib, coord_range, info, targets.

    Object j of image i sits at a random cell with a random class; ``num_objects[i]`` slots of
    image i are valid (``mask_2d``), the rest zero-filled as the dataset pads them.
    """
    g = torch.Generator().manual_seed(seed)
    hf, wf = height // 4, width // 4
    m = MAX_OBJS
    mask = torch.zeros(batch_size, m, dtype=torch.bool)
    for i, n in enumerate(num_objects[:batch_size]):
        mask[i, :n] = True
    indices = torch.randint(0, hf * wf, (batch_size, m), generator=g) * mask
    cls_ids = torch.randint(0, 3, (batch_size, m), generator=g) * mask
    src_size = torch.from_numpy(MEAN_SIZES)[cls_ids] * mask[..., None]
    targets = {
        "heatmap": torch.zeros(batch_size, 3, hf, wf),
        "indices": indices,
        "cls_ids": cls_ids,
        "mask_2d": mask,
        "size_2d": torch.rand(batch_size, m, 2, generator=g) * 20 * mask[..., None],
        "offset_2d": torch.rand(batch_size, m, 2, generator=g) * mask[..., None],
        "offset_3d": torch.rand(batch_size, m, 2, generator=g) * mask[..., None],
        "depth": (5 + 50 * torch.rand(batch_size, m, 1, generator=g)) * mask[..., None],
        "size_3d": torch.zeros(batch_size, m, 3),
        "src_size_3d": src_size,
        "heading_bin": torch.randint(0, NUM_HEADING_BIN, (batch_size, m, 1), generator=g) * mask[..., None],
        "heading_res": torch.zeros(batch_size, m, 1),
        "vis_depth": torch.zeros(batch_size, m, 7, 7),
        "att_depth": torch.zeros(batch_size, m, 7, 7),
        "depth_mask": torch.zeros(batch_size, m, 7, 7, dtype=torch.bool),
        "rpd_depth": torch.zeros(batch_size, hf, wf),
        "rpd_mask": torch.zeros(batch_size, hf, wf, dtype=torch.bool),
        "fg_mask": torch.zeros(batch_size, hf, wf, dtype=torch.bool),
        "box2d": torch.zeros(batch_size, m, 4),
    }
    return {
        "rgb": torch.randn(batch_size, 3, height, width, generator=g),
        "depth": torch.rand(batch_size, 3, height, width, generator=g),
        "calib": KITTI_P2.repeat(batch_size, 1, 1),
        "coord_range": torch.tensor([[0.0, 0.0], [1242.0, 375.0]]).repeat(batch_size, 1, 1),
        "info": {
            "img_id": torch.arange(batch_size),
            "img_size": torch.tensor([1242, 375]).repeat(batch_size, 1),
            "bbox_downsample_ratio": torch.tensor([1242.0 / wf, 375.0 / hf]).repeat(batch_size, 1),
        },
        "targets": targets,
    }


@pytest.fixture
def fake_batch() -> Callable[..., dict]:
    """The ``make_batch`` factory (keyword arguments as in its signature)."""
    return make_batch


def base_detector(*, num_bins: int | None = None, **changes: object) -> Detector:
    """configs/base.yaml's detector with ``changes`` to its ``model`` section (``rpd.num_bins`` =
    ``num_bins`` when given), never with ImageNet weights."""
    cfg = load_config(BASE_CONFIG)
    model = replace(ModelSettings.from_config(cfg), pretrained=False, **changes)
    rpd = RpdSettings.from_config(cfg)
    return build_detector(model, rpd if num_bins is None else replace(rpd, num_bins=num_bins))


@pytest.fixture(scope="session")
def make_detector() -> Callable[..., Detector]:
    """The ``base_detector`` factory (keyword arguments as in its signature)."""
    return base_detector
