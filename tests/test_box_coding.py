"""Heatmap gaussians and heading bins (lib/box_coding.py), on hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from lib.box_coding import decode_heading, draw_gaussian, encode_heading, gaussian_radius


def test_gaussian_radius_hand_computed():
    # w = h = 10, o = 0.7: r3 = (-2·0.7·20 + sqrt(28² + 16·0.7·0.3·100)) / 2 = (-28 + sqrt(1120)) / 2.
    assert gaussian_radius(10, 10) == pytest.approx((-28 + 1120**0.5) / 2) == pytest.approx(2.7332005)
    # w = 20, h = 5: (-35 + sqrt(35² + 336)) / 2 = 2.2547463 (r1 = 24.27, r2 = 47.47 are larger).
    assert gaussian_radius(20, 5) == pytest.approx(2.2547463)
    assert gaussian_radius(5, 20) == pytest.approx(gaussian_radius(20, 5))


def test_draw_gaussian_peak_sigma_and_max_merge():
    heatmap = np.zeros((10, 12), dtype=np.float32)
    draw_gaussian(heatmap, (4, 5), 2)  # sigma = 5 / 6
    assert heatmap[5, 4] == 1.0 and heatmap.max() == 1.0
    assert heatmap[5, 5] == pytest.approx(np.exp(-1 / (2 * (5 / 6) ** 2)))
    assert heatmap[5, 7] == 0.0  # outside the radius
    draw_gaussian(heatmap, (5, 5), 3)  # overlapping: max, not sum
    assert heatmap[5, 4] == pytest.approx(1.0) and heatmap[5, 5] == 1.0
    draw_gaussian(heatmap, (0, 9), 3)  # clipped at the corner
    assert heatmap[9, 0] == 1.0


@pytest.mark.parametrize(
    ("alpha", "bin_id", "res"),
    [
        (0.0, 0, 0.0),
        (np.pi / 2, 3, 0.0),
        (-np.pi / 12, 0, -np.pi / 12),
        (np.pi / 12, 1, -np.pi / 12),
        (np.pi, 6, 0.0),
    ],
)
def test_encode_heading_known_values(alpha, bin_id, res):
    b, r = encode_heading(alpha)
    assert int(b) == bin_id and float(r) == pytest.approx(res, abs=1e-9)


def test_heading_round_trip():
    alpha = np.random.default_rng(0).uniform(-np.pi, np.pi, 1000)
    b, r = encode_heading(alpha)
    assert b.min() >= 0 and b.max() <= 11
    assert np.all(np.abs(r) <= np.pi / 12 + 1e-12)
    np.testing.assert_allclose(decode_heading(b, r), alpha, atol=1e-9)
