"""Heatmaps of far, narrow objects against GUPNet's dataset: the minimum Gaussian radius is 0.

Fixture tests/fixtures/parity/targets_far_gupnet.npz (tools/parity/far_targets.py): GUPNet's
``lib/datasets/kitti.py`` targets of one frame (sample frame 0's image and calibration) with
pedestrians and cyclists 5-7 px wide (radius ``max(0, int(r))`` = 0: one cell) beside objects of
radius 1 and 2, under the four augmentations of tools/parity/data_targets.py. Ours runs with the
reference switches of tests/parity/test_targets_parity.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_targets_parity import GUPNET_SWITCHES, ours

from tools.parity.far_targets import FRAME, build_tree, cases

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "targets_far_gupnet.npz"
KEYS = ("heatmap", "indices", "cls_ids", "mask_2d", "size_2d")


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def kitti(kitti_sample_dir: Path, reference: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tree(kitti_sample_dir, tmp_path_factory.mktemp("far_targets"), str(reference["labels"]))


def _single_cell_peaks(heatmap: np.ndarray) -> int:
    """Peaks (value 1) whose 8 neighbours are all 0: objects drawn with radius 0."""
    padded = np.pad(heatmap, ((0, 0), (1, 1), (1, 1)))
    count = 0
    for c, y, x in zip(*np.nonzero(heatmap == 1.0), strict=True):
        window = padded[c, y : y + 3, x : x + 3]
        count += int((window > 0).sum() == 1)
    return count


@pytest.mark.parametrize("case", cases(), ids=[c["name"] for c in cases()])
def test_far_object_heatmaps_equal_gupnet(kitti: Path, reference: dict, case: dict) -> None:
    """Every heatmap cell and the 2D slots equal GUPNet's; at least 4 objects are single cells."""
    assert FRAME == 0
    ref = {k: reference[f"{case['name']}/{k}"] for k in KEYS}
    assert _single_cell_peaks(ref["heatmap"]) >= 4  # the case exercises radius 0
    t = ours(kitti, "gupnet", case, **GUPNET_SWITCHES)["targets"]
    np.testing.assert_allclose(t["heatmap"], ref["heatmap"], rtol=1e-6, atol=1e-7)
    for key in KEYS[1:]:
        theirs = ref[key].reshape(t[key].shape).astype(t[key].dtype)
        np.testing.assert_allclose(t[key], theirs, rtol=1e-5, atol=3.1e-5, err_msg=key)
