"""How a box is encoded for the network: the heatmap gaussian of its centre and its heading bins.

The dataset encodes ground truth with these (``lib.datasets.targets``), decoding inverts the
heading (``lib.decode``) and MonoSKD's head distillation reuses the heatmap radius
(``lib.losses.distill.gaussian_disc_mask``); one definition keeps the three in step
(docs/reference.md, 'Heading' for the heading bins).
"""

from __future__ import annotations

import numpy as np

from lib.constants import NUM_HEADING_BIN

HEATMAP_MIN_OVERLAP = 0.7  # CornerNet: a box shifted within the radius keeps IoU >= 0.7


def gaussian_radius(width: float, height: float, *, min_overlap: float = HEATMAP_MIN_OVERLAP) -> float:
    """CornerNet's heatmap radius for a box of width × height, as GUPNet computes it.

    The smallest of three quadratic roots, one per way a corner can move (both corners
    inward, both outward, one each way), each (b + √(b² − 4ac)) / 2 with
    (a, b, c) = (1, w + h, w·h·(1 − o)/(1 + o)), (4, 2(w + h), (1 − o)·w·h),
    (4o, −2o(w + h), (o − 1)·w·h). This is CornerNet's released code (its roots differ from
    the paper's derivation); kept as is so the heatmaps match GUPNet's.
    """
    total, area, o = width + height, width * height, min_overlap
    r1 = (total + np.sqrt(total**2 - 4 * area * (1 - o) / (1 + o))) / 2
    r2 = (2 * total + np.sqrt((2 * total) ** 2 - 16 * (1 - o) * area)) / 2
    r3 = (-2 * o * total + np.sqrt((2 * o * total) ** 2 - 16 * o * (o - 1) * area)) / 2
    return float(min(r1, r2, r3))


def draw_gaussian(heatmap: np.ndarray, center: tuple[int, int], radius: int) -> None:
    """Max-merge a (2r+1)² gaussian with σ = (2r+1)/6 into ``heatmap`` (H, W) at cell (x, y).

    Writes into ``heatmap`` in place (the caller's own target array); clipped at the borders.
    """
    x, y = center
    height, width = heatmap.shape
    diameter = 2 * radius + 1
    sigma = diameter / 6
    dy, dx = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    gaussian = np.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma)).astype(heatmap.dtype)
    left, right = min(x, radius), min(width - x, radius + 1)
    top, bottom = min(y, radius), min(height - y, radius + 1)
    patch = heatmap[y - top : y + bottom, x - left : x + right]
    np.maximum(patch, gaussian[radius - top : radius + bottom, radius - left : radius + right], out=patch)


def encode_heading(
    alpha: np.ndarray | float, *, num_bins: int = NUM_HEADING_BIN
) -> tuple[np.ndarray, np.ndarray]:
    """Angle → (bin, residual) (docs/reference.md, 'Heading'): bin k is centred at k·360°/num_bins.

    Returns:
        bin: int64 in [0, num_bins); residual: float64 in [−half bin, +half bin), radians.
    """
    per_bin = 2 * np.pi / num_bins
    shifted = (np.asarray(alpha, dtype=np.float64) % (2 * np.pi) + per_bin / 2) % (2 * np.pi)
    bin_id = np.minimum(np.floor(shifted / per_bin).astype(np.int64), num_bins - 1)
    return bin_id, shifted - (bin_id * per_bin + per_bin / 2)


def decode_heading(
    bin_id: np.ndarray | int, residual: np.ndarray | float, *, num_bins: int = NUM_HEADING_BIN
) -> np.ndarray:
    """(bin, residual) → angle in (−π, π] (docs/reference.md, 'Heading'): k·360°/num_bins + residual."""
    angle = np.asarray(bin_id) * (2 * np.pi / num_bins) + np.asarray(residual, dtype=np.float64)
    return np.where(angle > np.pi, angle - 2 * np.pi, angle)
