"""RPD depth bins, targets and decoding (lib/depth_bins.py, docs/method.md, 'Bins' to 'Targets from projected
LiDAR')."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lib.config import ConfigError, load_config
from lib.depth_bins import MODES, DepthBins, RpdSettings, downsample_depth, expected_depth, soft_targets

BASE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "base.yaml"
BASE_BINS = RpdSettings.from_config(load_config(BASE_CONFIG)).bins  # the defaults' one place


def bins_with(**changes: object) -> DepthBins:
    """configs/base.yaml's bins with some values changed."""
    return replace(BASE_BINS, **changes)


# A small RPD case that can be worked by hand: f·h = 100, r_lo = 100/10 = 10, r_hi = 100/2 = 50,
# Δr = (50 − 10)/4 = 10, edge_k = 100/(50 − 10k), centre_k = 100/(50 − 10(k + 0.5)).
SMALL_RPD = DepthBins(mode="rpd", depth_min=2.0, depth_max=10.0, num_bins=4, focal=100.0, camera_height=1.0)


@pytest.mark.parametrize(
    ("bins", "edges", "centres"),
    [
        (SMALL_RPD, [2.0, 2.5, 10 / 3, 5.0, 10.0], [100 / 45, 100 / 35, 4.0, 100 / 15]),
        (bins_with(mode="ud", depth_min=2.0, depth_max=10.0, num_bins=4), [2, 4, 6, 8, 10], [3, 5, 7, 9]),
        # sid: log-uniform, edge_k = 1·16^(k/4); centres at 2^(k + 0.5).
        (
            bins_with(mode="sid", depth_min=1.0, depth_max=16.0, num_bins=4),
            [1, 2, 4, 8, 16],
            2 ** (np.arange(4) + 0.5),
        ),
        # lid (CaDDN): bin_size = 2·10/(4·5) = 1, edge_k = 2 + k(k+1)/2, centre = 2 + u(u+1)/2 at u = k + 0.5.
        (
            bins_with(mode="lid", depth_min=2.0, depth_max=12.0, num_bins=4),
            [2, 3, 5, 8, 12],
            [2.375, 3.875, 6.375, 9.875],
        ),
    ],
    ids=["rpd", "ud", "sid", "lid"],
)
def test_edges_and_centres_by_hand(bins: DepthBins, edges: list[float], centres: list[float]) -> None:
    np.testing.assert_allclose(bins.edges(), edges, rtol=1e-12)
    np.testing.assert_allclose(bins.centres(), centres, rtol=1e-12)


def test_default_rpd_edges_follow_method_formula() -> None:
    bins = BASE_BINS  # docs/method.md, 'Bins' defaults: 2-80 m, K = 80, f = 721.54 px, h = 1.65 m
    fh = 721.54 * 1.65
    r_lo, r_hi = fh / 80.0, fh / 2.0
    dr = (r_hi - r_lo) / 80
    k = np.arange(81)
    np.testing.assert_allclose(bins.edges(), fh / (r_hi - k * dr), rtol=1e-12)
    np.testing.assert_allclose(bins.centres(), fh / (r_hi - (k[:-1] + 0.5) * dr), rtol=1e-12)
    # Equal steps of road-plane image rows: r(edge_k) = f·h / edge_k is evenly spaced.
    np.testing.assert_allclose(np.diff(fh / bins.edges()), -dr, rtol=1e-9)


@pytest.mark.parametrize("mode", MODES)
def test_edges_span_the_range_and_increase(mode: str) -> None:
    bins = bins_with(mode=mode, depth_min=2.0, depth_max=80.0, num_bins=80)
    edges, centres = bins.edges(), bins.centres()
    assert edges.shape == (81,) and centres.shape == (80,)
    assert edges[0] == pytest.approx(2.0, rel=1e-12) and edges[-1] == pytest.approx(80.0, rel=1e-12)
    assert (np.diff(edges) > 0).all()
    assert ((edges[:-1] < centres) & (centres < edges[1:])).all()
    u = np.linspace(0.0, 80.0, 321)
    np.testing.assert_allclose(bins.to_coord(bins.from_coord(u)), u, atol=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "log"}, "rpd.mode"),
        ({"depth_min": 10.0, "depth_max": 5.0}, "depth_min < depth_max"),
        ({"depth_min": 0.0}, "depth_min < depth_max"),
        ({"num_bins": 1}, "num_bins"),
        ({"focal": 0.0}, "rpd.focal"),
        ({"camera_height": -1.65}, "rpd.camera_height"),
    ],
)
def test_invalid_bins_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bins_with(**kwargs)


def test_rpd_settings_are_the_rpd_section_checked_at_parse_time() -> None:
    rpd = RpdSettings.from_config(load_config(BASE_CONFIG, ["rpd.mode=sid", "rpd.supervise_beyond=true"]))
    assert rpd.bins == DepthBins("sid", 2.0, 80.0, 80, 721.54, 1.65) and rpd.supervise_beyond is True
    for override, key in (("rpd.num_bins=1", r"rpd\.num_bins"), ("rpd.mode=log", r"rpd\.mode")):
        with pytest.raises(ConfigError, match=key):
            RpdSettings.from_config(load_config(BASE_CONFIG, [override]))


# --- soft two-hot targets (docs/method.md, 'Targets from projected LiDAR')
# -----------------------------------------------------


@pytest.mark.parametrize(
    ("depth", "weights"),
    [
        # t = (r_hi − 100/z)/Δr − 0.5, clamped to [0, K − 1 = 3]
        (4.0, {2: 1.0}),  # r = 25, t = 2.0: exactly on centre 2
        (3.0, {1: 5 / 6, 2: 1 / 6}),  # r = 33.3, t = 7/6
        (6.0, {2: 1 / 6, 3: 5 / 6}),  # r = 16.7, t = 17/6
        (2.0, {0: 1.0}),  # depth_min: t = −0.5 → 0
        (2.1, {0: 1.0}),  # below centre 0: clamped
        (8.0, {3: 1.0}),  # beyond centre 3: t = 3.25 → 3
        (10.0, {3: 1.0}),  # depth_max
    ],
)
def test_soft_targets_by_hand(depth: float, weights: dict[int, float]) -> None:
    target, valid = soft_targets(np.array([[depth]]), SMALL_RPD)
    expected = np.zeros(5)
    for k, w in weights.items():
        expected[k] = w
    assert target.shape == (5, 1, 1) and target.dtype == np.float32
    assert valid.dtype == np.bool_ and valid[0, 0]
    np.testing.assert_allclose(target[:, 0, 0], expected, atol=1e-6)


def test_soft_targets_masking_and_supervise_beyond() -> None:
    depth = np.array([[0.0, 1.5, 4.0], [12.0, 3.0, 0.0]])  # no depth, too near, ok, too far, ok, none
    target, valid = soft_targets(depth, SMALL_RPD)
    np.testing.assert_array_equal(valid, [[False, False, True], [False, True, False]])
    assert not target[:, ~valid].any()
    np.testing.assert_allclose(target[:, valid].sum(axis=0), 1.0, rtol=1e-6)
    assert not target[4].any()  # the beyond bin only with supervise_beyond

    target_b, valid_b = soft_targets(depth, SMALL_RPD, supervise_beyond=True)
    assert valid_b.all()
    np.testing.assert_array_equal(target_b[:, valid], target[:, valid])
    np.testing.assert_array_equal(target_b[4], ~valid)
    assert not target_b[:4, ~valid].any()
    np.testing.assert_allclose(target_b.sum(axis=0), 1.0, rtol=1e-6)


# --- down-sampling without empty pixels -----------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("supervise_beyond", [False, True])
def test_batched_torch_targets_equal_numpy_bit_for_bit(mode: str, supervise_beyond: bool) -> None:
    """The criterion expands a (B, H, W) tensor on the device; it must equal the per-frame numpy."""
    rng = np.random.default_rng(3)
    depth = rng.uniform(0.0, 90.0, (3, 6, 10)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.3] = 0.0
    depth[0, 0, :3] = [2.0, 80.0, 1.99]  # both range ends and just below
    bins = bins_with(mode=mode, num_bins=16)
    target, valid = soft_targets(torch.from_numpy(depth), bins, supervise_beyond=supervise_beyond)
    assert target.shape == (3, 17, 6, 10) and target.dtype == torch.float32 and valid.dtype == torch.bool
    for b in range(3):
        t_np, v_np = soft_targets(depth[b], bins, supervise_beyond=supervise_beyond)
        assert np.array_equal(target[b].numpy(), t_np) and np.array_equal(valid[b].numpy(), v_np)
    sums = target.sum(1)[valid]
    torch.testing.assert_close(sums, torch.ones_like(sums))


def test_downsample_depth_ignores_empty_pixels() -> None:
    depth = np.array(
        [
            [1.0, 0.0, 0.0, 0.0, 9.0],
            [3.0, 0.0, 0.0, 0.0, 9.0],
            [0.0, 0.0, 5.0, 6.0, 9.0],
            [0.0, 0.0, 7.0, 0.0, 9.0],
            [9.0, 9.0, 9.0, 9.0, 9.0],
        ]
    )
    # Cells: (1 + 3)/2 = 2 (not the 4-pixel mean 1), empty → 0, (5 + 6 + 7)/3 = 6; the fifth
    # row and column do not make a whole 2x2 cell and are dropped.
    out = downsample_depth(depth, 2)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[2.0, 0.0], [0.0, 6.0]], rtol=1e-7)


# --- decoding -------------------------------------------------------------------------------


def decode_errors(bins: DepthBins, space: str) -> tuple[np.ndarray, np.ndarray]:
    """Relative error of decoding the target of each depth between the first and last centre."""
    centres = bins.centres()
    z = np.linspace(centres[0], centres[-1], 4001)[None, :]  # (1, N)
    target, valid = soft_targets(z, bins)
    assert valid.all()
    decoded = expected_depth(target, bins, axis=0, space=space)  # (1, N)
    return (np.abs(decoded - z) / z)[0], z[0]


@pytest.mark.parametrize("mode", MODES)
def test_decoding_in_bin_space_inverts_targets(mode: str) -> None:
    errors, _ = decode_errors(bins_with(mode=mode), "bin")
    assert errors.max() < 1e-6  # float32 targets


def test_decoding_in_depth_space_deviates_as_documented() -> None:
    # docs/method.md, 'Targets from projected LiDAR' decodes as Σ p_k · centre_k: linear in metres between
    # centres, while the two-hot weights are linear in bin coordinate. Exact for ud, off for the curved codes;
    # rpd (K = 80) is the worst: within 1 % up to ~37 m, up to ~2.8 % at ~54 m.
    errors, z = decode_errors(bins_with(mode="ud"), "depth")
    assert errors.max() < 1e-6
    for mode, bound in (("sid", 1e-3), ("lid", 2e-3)):
        assert decode_errors(bins_with(mode=mode), "depth")[0].max() < bound
    errors, z = decode_errors(bins_with(mode="rpd"), "depth")
    assert errors[z < 37.0].max() < 0.01
    assert 0.025 < errors.max() < 0.03
    assert 45.0 < z[errors.argmax()] < 65.0


def test_decoding_renormalises_without_the_beyond_bin() -> None:
    probs = np.zeros((5, 1))
    probs[1] = 0.3
    probs[4] = 0.7  # "beyond range" carries no depth
    for space in ("depth", "bin"):
        assert expected_depth(probs, SMALL_RPD, axis=0, space=space)[0] == pytest.approx(100 / 35)
    probs[1], probs[2] = 0.15, 0.15
    # bin space: mean coordinate 2 = edge_2; depth space: mean of centres 1 and 2.
    assert expected_depth(probs, SMALL_RPD, space="bin")[0] == pytest.approx(10 / 3)
    assert expected_depth(probs, SMALL_RPD, space="depth")[0] == pytest.approx((100 / 35 + 4.0) / 2)
    with pytest.raises(ValueError, match="space"):
        expected_depth(probs, SMALL_RPD, space="metres")


@pytest.mark.parametrize("space", ["depth", "bin"])
def test_torch_and_numpy_decoding_agree(space: str) -> None:
    bins = BASE_BINS
    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(2, 81, 3, 5, generator=generator, dtype=torch.float64), dim=1)
    decoded = expected_depth(probs, bins, axis=1, space=space)
    assert isinstance(decoded, torch.Tensor) and decoded.shape == (2, 3, 5)
    np.testing.assert_allclose(
        decoded.numpy(), expected_depth(probs.numpy(), bins, axis=1, space=space), rtol=1e-10
    )
    # The channel-last layout gives the same depths.
    last = expected_depth(probs.movedim(1, -1), bins, axis=-1, space=space)
    torch.testing.assert_close(last, decoded)


def test_torch_depth_space_decoding_is_differentiable() -> None:
    logits = torch.zeros(81, 2, 2, requires_grad=True)
    expected_depth(torch.softmax(logits, dim=0), BASE_BINS, axis=0).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
