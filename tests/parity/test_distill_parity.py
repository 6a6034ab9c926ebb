"""Distillation terms against the reference code (docs/parity.md, "Data, network, losses and distillation").

Fixtures (tools/parity/network_losses.py), on given features, head outputs and GT boxes:

* distill_monoskd.npz: MonoSKD's affinity (``compute_backbone_resize_affinity_loss``), Spearman
  (``lib/losses/myloss.py``, torchsort) and head distillation (``compute_head_distill_loss``) with
  its gaussian-disc mask, on 4 levels [s4, s8, s16, s32] of a 64x160 input.
* distill_monodistill.npz: MonoDistill's foreground feature loss (``compute_backbone_l1_loss``)
  with its box masks and its affinity (relation) loss, on 3 levels [s8, s16, s32].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lib.config import load_config
from lib.distiller import DistillSettings, feature_box_masks
from lib.losses.distill import (
    affinity_loss,
    foreground_feature_loss,
    gaussian_disc_mask,
    response_loss,
    spearman_loss,
)
from tools.parity.net_common import load_npz

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "parity"
RTOL, ATOL = 1e-5, 1e-6
HEAD_TERMS = ("offset2d", "size2d", "offset3d", "size3d", "heading", "depth")  # fixture order
FEATURE_STRIDE = 4  # our targets['box2d'] are in stride-4 feature px; the fixture boxes in input px


@pytest.fixture(scope="module")
def skd() -> dict:
    return load_npz(FIXTURES / "distill_monoskd.npz")


@pytest.fixture(scope="module")
def md() -> dict:
    return load_npz(FIXTURES / "distill_monodistill.npz")


def _feats(fixture: dict, side: str, levels: tuple[str, ...]) -> list[torch.Tensor]:
    return [torch.from_numpy(fixture[f"{side}/{level}"]) for level in levels]


def _head(fixture: dict, side: str) -> dict[str, torch.Tensor]:
    start = f"{side}/head/"
    return {k[len(start) :]: torch.from_numpy(v) for k, v in fixture.items() if k.startswith(start)}


def _box2d(fixture: dict) -> torch.Tensor:
    return torch.from_numpy(fixture["box2d_input_px"]) / FEATURE_STRIDE


SKD_LEVELS = ("s4", "s8", "s16", "s32")
MD_LEVELS = ("s8", "s16", "s32")


def test_skd_affinity(skd: dict) -> None:
    ours = affinity_loss(_feats(skd, "student", SKD_LEVELS), _feats(skd, "teacher", SKD_LEVELS))
    np.testing.assert_allclose(float(ours), skd["affinity"], rtol=RTOL)


def test_skd_spearman(skd: dict) -> None:
    """MonoSKD's argument order ranks the teacher only (docs/reference.md, 'Known bugs and quirks: Spearman
    loss'): mode ``skd``."""
    student, teacher = _feats(skd, "student", SKD_LEVELS), _feats(skd, "teacher", SKD_LEVELS)
    ours = spearman_loss(student, teacher, strength=1.0, mode="skd")
    np.testing.assert_allclose(float(ours), skd["spearman"], rtol=RTOL)
    # the true Spearman correlation (our ``rank_both``) is another number
    rank_both = spearman_loss(student, teacher, strength=1.0, mode="rank_both")
    assert abs(float(rank_both) - float(skd["spearman"])) > 1e-2


def test_skd_head_terms_on_the_reference_mask(skd: dict) -> None:
    mask = torch.from_numpy(skd["head_mask"])
    heading_bin = torch.from_numpy(skd["heading_bin"])[torch.from_numpy(skd["mask_2d"])].reshape(-1)
    terms = response_loss(
        _head(skd, "student"), _head(skd, "teacher"), head_mask=mask, heading_bin=heading_bin
    )
    ours = np.array([float(terms[name]) for name in HEAD_TERMS])
    np.testing.assert_allclose(ours, skd["head_terms"], rtol=RTOL, atol=ATOL)


def test_skd_head_mask_differs_only_by_the_skipped_label_cell(skd: dict) -> None:
    """Documented difference: MonoSKD draws a disc for every label line below ``obj_num``,
    so a skipped line (an all-zero box) marks cell (0, 0) (docs/reference.md, 'Known bugs and quirks: Heading
    KL and empty slots'); we draw the kept objects (mask_2d) only. Everything else is the same set of
    cells."""
    ref = skd["head_mask"]
    valid = torch.from_numpy(skd["mask_2d"])
    ours = gaussian_disc_mask(_box2d(skd), height=ref.shape[1], width=ref.shape[2], valid=valid).numpy()
    diff = np.argwhere(ours != ref)
    np.testing.assert_array_equal(diff, [[0, 0, 0]])  # image 0 has the skipped line
    assert ref[0, 0, 0] and not ours[0, 0, 0]


def test_md_affinity(md: dict) -> None:
    ours = affinity_loss(_feats(md, "student", MD_LEVELS), _feats(md, "teacher", MD_LEVELS))
    np.testing.assert_allclose(float(ours), md["affinity"], rtol=RTOL)


def test_md_foreground_feature_loss_on_the_reference_masks(md: dict) -> None:
    masks = [torch.from_numpy(md[f"box_mask/{level}"]) for level in MD_LEVELS]
    ours = foreground_feature_loss(_feats(md, "student", MD_LEVELS), _feats(md, "teacher", MD_LEVELS), masks)
    np.testing.assert_allclose(float(ours), md["feature"], rtol=RTOL)


def _md_masks(md: dict, cells: str) -> list[np.ndarray]:
    sizes = [md[f"box_mask/{level}"].shape[1:] for level in MD_LEVELS]
    grid_width = sizes[0][1] * 2  # the stride-4 grid of the boxes; the first level is s8
    valid = torch.from_numpy(md["mask_2d"])
    return [
        m.numpy() for m in feature_box_masks(_box2d(md), valid, sizes, grid_width=grid_width, cells=cells)
    ]


def test_md_box_masks_truncate_equals_the_reference(md: dict) -> None:
    """``distill.feature_cells: truncate`` restores MonoDistill's masks and so its loss."""
    ours = _md_masks(md, "truncate")
    for level, mask in zip(MD_LEVELS, ours, strict=True):
        np.testing.assert_array_equal(mask, md[f"box_mask/{level}"], err_msg=level)
    student, teacher = _feats(md, "student", MD_LEVELS), _feats(md, "teacher", MD_LEVELS)
    loss = foreground_feature_loss(student, teacher, [torch.from_numpy(m) for m in ours])
    np.testing.assert_allclose(float(loss), md["feature"], rtol=RTOL)


def test_md_box_masks_cover_the_reference_masks(md: dict) -> None:
    """Documented difference (default ``feature_cells: cover``): MonoDistill truncates each box
    to cells [int(x1/s), int(x2/s)), which drops the partly covered last row / column and can
    mark nothing for a small box; ours marks every cell a box overlaps. Ours is a superset."""
    base = load_config(Path(__file__).resolve().parents[2] / "configs" / "base.yaml")
    assert DistillSettings.from_config(base).feature_cells == "cover"
    extra = 0
    for level, mask in zip(MD_LEVELS, _md_masks(md, "cover"), strict=True):
        ref = md[f"box_mask/{level}"]
        assert not (ref & ~mask).any(), level
        extra += int((mask & ~ref).sum())
    assert extra > 0
