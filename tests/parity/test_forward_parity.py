"""Network forward against the reference code (docs/parity.md, "Data, network, losses and distillation").

Fixtures: tests/fixtures/parity/net_gupnet.npz (SuperMHP/GUPNet ``lib/models/gupnet.py``) and
net_did.npz (Senwang98/MonoSKD ``lib/models/DID.py``), written by tools/parity/network_losses.py.
Both networks get the same seeded weights and images (tools/parity/net_common.py; the fixture's
checksums prove it), the same calibs and crop windows and, in train mode, the same GT RoI slots.
Train mode: batch-statistics BN, RoIs at the GT cells; eval mode: running statistics, top-50 peaks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from parity_common import reference_network

from lib.models.detector import select_topk_peaks
from tools.parity.net_common import load_npz, seeded_images, seeded_state_dict, state_checksum

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "parity"
# float32 through ~40 layers: the convolution kernels (and so the rounding) differ by CPU. On an
# AVX-512 machine (2026-12-01) the outputs differed from the fixtures by up to 7.2e-5 of each
# tensor's largest value (5e-5 absolute), hence an absolute tolerance of 2e-4 of that value; a
# wrong layer, weight or crop moves outputs by 1e-2 and more.
RTOL, ATOL_OF_MAX = 1e-5, 2e-4
# Backward through batch-statistics BN of random-weight DLA-34 amplifies that rounding: the same
# machine's gradient norms moved by 0.13-0.38 % between 1 and 2 threads, and by up to 0.7 % from
# the fixtures; a missing or wrong gradient path changes them by far more (or to 0).
GRAD_RTOL = 2e-2
INPUT_W = 320  # width of the seeded images (tools/parity/net_common.py INPUT_SHAPE)

HEADS_2D = ("heatmap", "offset_2d", "size_2d")
GUPNET_KEYS = (*HEADS_2D, "depth", "offset_3d", "size_3d", "h3d_log_variance", "heading")


# Documented difference (docs/parity.md): the top-level ``project`` of DLA-34's two-level trees
# feeds nothing; the reference still runs it, so in train mode its BN running statistics drift,
# ours skips it and they keep their values. No output reads them.
DEAD_BN = ("backbone.level3.project.1.", "backbone.level4.project.1.")


def _check_bn_running(model: torch.nn.Module, ref: np.ndarray, before: dict[str, torch.Tensor]) -> None:
    """Our BN running stats after a train-mode forward equal the reference's, except the dead ones."""
    state = model.state_dict()
    keys = sorted(k for k in state if k.endswith(("running_mean", "running_var")))
    assert sum(state[k].numel() for k in keys) == ref.size
    offset = 0
    for key in keys:
        ours, n = state[key].flatten().numpy(), state[key].numel()
        theirs = ref[offset : offset + n]
        offset += n
        if key.startswith(DEAD_BN):
            np.testing.assert_array_equal(ours, before[key].flatten().numpy(), err_msg=key)
            assert np.abs(theirs - ours).max() > 1e-3, f"{key}: the reference updates it"
        else:
            _close(key, ours, theirs)


def _close(name: str, ours: torch.Tensor | np.ndarray, ref: np.ndarray) -> None:
    ours = ours.detach().numpy() if isinstance(ours, torch.Tensor) else ours
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} vs reference {ref.shape}"
    atol = ATOL_OF_MAX * float(np.abs(ref).max(initial=0.0))
    np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=atol, err_msg=name)


def _setup(fixture: dict, model_type: str) -> tuple[torch.nn.Module, torch.Tensor, dict]:
    model = reference_network(model_type)  # DLA-34, 3 classes
    weights = seeded_state_dict(model.state_dict(), int(fixture["weight_seed"]))
    np.testing.assert_allclose(state_checksum(weights), fixture["weight_checksum"], rtol=1e-12)
    model.load_state_dict(weights, strict=True)
    images = seeded_images(int(fixture["image_seed"]))
    np.testing.assert_allclose(state_checksum({"x": images}), fixture["image_checksum"], rtol=1e-12)
    kwargs = {
        "calib": torch.from_numpy(fixture["calib"]),
        "coord_range": torch.from_numpy(fixture["coord_range"]),
    }
    return model, images, kwargs


def _check_gradients(model: torch.nn.Module, out: dict, keys: tuple[str, ...], fixture: dict) -> None:
    """Backward of sum_k mean(out_k^2) as the reference driver did: the same parameters get a
    gradient (not the dead ``project`` branch, not ``backbone.fc``) with the same norms.

    The conv biases right before a BN (the RoI heads' ``.0.bias``) have a true gradient of 0 and
    carry rounding noise only (~1e-10 of the largest norm), hence the absolute tolerance."""
    sum((out[k].float() ** 2).mean() for k in sorted(keys)).backward()
    named = sorted((n, p.grad) for n, p in model.named_parameters() if p.grad is not None)
    assert [n for n, _ in named] == fixture["train/grad_names"].tolist()
    norms = torch.stack([g.norm() for _, g in named]).numpy()
    ref = fixture["train/grad_norms"]
    np.testing.assert_allclose(norms, ref, rtol=GRAD_RTOL, atol=1e-8 * ref.max(), err_msg="grad norms")


def _targets(fixture: dict) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(fixture[k]) for k in ("indices", "cls_ids", "mask_2d")}


@pytest.fixture(scope="module")
def gupnet_fixture() -> dict:
    return load_npz(FIXTURES / "net_gupnet.npz")


def test_gupnet_forward_train_mode(gupnet_fixture: dict) -> None:
    fx = gupnet_fixture
    model, images, kwargs = _setup(fx, "gupnet")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    out = model(images, targets=_targets(fx), **kwargs)
    for key in GUPNET_KEYS:
        _close(f"train/{key}", out[key], fx[f"train/{key}"])
    _check_bn_running(model, fx["train/bn_running"], before)
    _check_gradients(model, out, GUPNET_KEYS, fx)


def test_gupnet_forward_eval_mode(gupnet_fixture: dict) -> None:
    fx = gupnet_fixture
    model, images, kwargs = _setup(fx, "gupnet")
    model.eval()
    with torch.no_grad():
        out = model(images, topk=50, **kwargs)
    # the kept peaks and their order are exact (integers); no ties among the reference's scores
    assert len(np.unique(fx["eval/topk_scores"][0])) == 50
    np.testing.assert_array_equal(out["topk"]["indices"].numpy(), fx["eval/topk_indices"])
    np.testing.assert_array_equal(out["topk"]["cls"].numpy(), fx["eval/topk_cls"])
    _close("eval/topk_scores", out["topk"]["scores"], fx["eval/topk_scores"])
    for key in GUPNET_KEYS:
        _close(f"eval/{key}", out[key], fx[f"eval/{key}"])


DID_KEYS = (*HEADS_2D, "offset_3d", "size_3d", "heading", "vis_depth", "att_depth", "ins_depth")
DID_KEYS += ("vis_depth_uncer", "att_depth_uncer", "ins_depth_uncer")


@pytest.fixture(scope="module")
def did_fixture() -> dict:
    return load_npz(FIXTURES / "net_did.npz")


def _check_features(features: list[torch.Tensor], fixture: dict, mode: str) -> None:
    """Our neck maps [s4, s8, s16, s32] against the per-(image, channel) mean / std of MonoSKD's
    ``fusion_features`` (raw level 5, then the three IDA stages)."""
    for f in features:
        stride = INPUT_W // f.shape[-1]
        flat = f.detach().flatten(2)
        _close(f"{mode}/s{stride}_mean", flat.mean(-1), fixture[f"{mode}/s{stride}_mean"])
        _close(f"{mode}/s{stride}_std", flat.std(-1), fixture[f"{mode}/s{stride}_std"])


def test_did_forward_train_mode(did_fixture: dict) -> None:
    fx = did_fixture
    model, images, kwargs = _setup(fx, "did")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    out = model(images, targets=_targets(fx), **kwargs)
    for key in DID_KEYS:
        _close(f"train/{key}", out[key], fx[f"train/{key}"])
    _check_features(out["features"], fx, "train")
    _check_bn_running(model, fx["train/bn_running"], before)
    _check_gradients(model, out, DID_KEYS, fx)


def test_did_forward_eval_mode(did_fixture: dict) -> None:
    """Eval mode, plus the per-RoI depth and confidence that MonoSKD's decoding merges from the
    49 cells (``extract_dets_from_outputs``: p = exp(-sigma), depth = sum(p d) / sum(p),
    confidence = sum(p^2) / sum(p)); our network returns them as ``depth`` / ``depth_confidence``."""
    fx = did_fixture
    model, images, kwargs = _setup(fx, "did")
    model.eval()
    with torch.no_grad():
        out = model(images, topk=50, **kwargs)
    assert all(len(np.unique(scores)) == 50 for scores in fx["eval/topk_scores"])
    np.testing.assert_array_equal(out["topk"]["indices"].numpy(), fx["eval/topk_indices"])
    np.testing.assert_array_equal(out["topk"]["cls"].numpy(), fx["eval/topk_cls"])
    _close("eval/topk_scores", out["topk"]["scores"], fx["eval/topk_scores"])
    for key in DID_KEYS:
        _close(f"eval/{key}", out[key], fx[f"eval/{key}"])
    _check_features(out["features"], fx, "eval")
    _close("eval/merged_depth", out["depth"][:, 0], fx["eval/merged_depth"])
    _close("eval/merged_conf", out["depth_confidence"], fx["eval/merged_conf"])


def test_peak_selection_with_exact_ties_matches_gupnet() -> None:
    """Saturated peaks tie exactly at the clamp (1 - 1e-4), as they do for a trained network.
    GUPNet's two stages (per-class top-K, then overall) fix which tied peaks are kept and their
    order; ours runs the same stages, so peaks, order, classes and cells are equal even when the
    tie straddles the K-th place (image 1: 70 tied peaks, K = 50)."""
    fx = load_npz(FIXTURES / "net_topk.npz")
    assert (fx["scores"][1] == fx["scores"][1, 0]).all()  # the fixture does have the straddling tie
    peaks = select_topk_peaks(torch.from_numpy(fx["logits"]), int(fx["k"]))
    for key in ("indices", "cls", "xs", "ys"):
        np.testing.assert_array_equal(peaks[key].numpy(), fx[key], err_msg=key)
    np.testing.assert_array_equal(peaks["scores"].numpy(), fx["scores"])
