"""lib.losses.distill: DualKL (docs/method.md, 'DualKL distillation') and the MonoDistill / MonoSKD terms
(docs/reference.md, 'Features and losses').

Reference values come from plain Python / numpy loops written independently of the torch code,
or from numbers worked out by hand in the comments.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lib.box_coding import draw_gaussian
from lib.losses.distill import (
    affinity_loss,
    dual_kl_loss,
    foreground_feature_loss,
    gaussian_disc_mask,
    head_set_mask,
    laplace_dual_kl_loss,
    laplace_kl,
    laplace_scale,
    response_loss,
    spearman_loss,
    teacher_certainty,
)

MODES = ("dynamic", "forward", "reverse", "fixed")
# The DualKL parameters the hand computations below assume unless a test names them (the values
# of configs/base.yaml's distill.dualkl; the loss functions themselves have no defaults).
DUALKL = {"temperature": 1.0, "head_mass": 0.5, "gamma": 1.0, "mode": "dynamic"}


def dkl(student: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor, **kw: object) -> torch.Tensor:
    """``dual_kl_loss`` with the :data:`DUALKL` parameters that ``kw`` does not set."""
    return dual_kl_loss(student, teacher, weight, **{**DUALKL, **kw})


# ------------------------------------------------------------------------------ DualKL
def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def reference_dual_kl(s, t, w, *, tau=1.0, mu=0.5, gamma=1.0, mode="dynamic", eps=1e-8) -> float:
    """docs/method.md, 'DualKL distillation' with explicit loops over cells and bins (float64)."""
    n_, c_, h_, w_ = s.shape
    num = den = 0.0
    for n in range(n_):
        for y in range(h_):
            for x in range(w_):
                m = float(w[n, y, x])
                if m <= 0:
                    continue
                p = _softmax(t[n, :, y, x].astype(np.float64) / tau)
                q = _softmax(s[n, :, y, x].astype(np.float64) / tau)
                kl_f = sum(p[k] * (math.log(p[k]) - math.log(q[k])) for k in range(c_))
                kl_r = sum(q[k] * (math.log(q[k]) - math.log(p[k])) for k in range(c_))
                head, above = set(), 0.0
                for k in sorted(range(c_), key=lambda k: -p[k]):
                    if above < mu:
                        head.add(k)
                    above += p[k]
                g_head = sum(abs(p[k] - q[k]) for k in head)
                g_tail = sum(abs(p[k] - q[k]) for k in range(c_) if k not in head)
                w_f, w_r = {
                    "dynamic": (g_head / (g_head + g_tail + eps), g_tail / (g_head + g_tail + eps)),
                    "forward": (1.0, 0.0),
                    "reverse": (0.0, 1.0),
                    "fixed": (0.5, 0.5),
                }[mode]
                u = -sum(pk * math.log(pk) for pk in p) / math.log(c_)
                w_u = (1.0 - u) ** gamma
                num += w_u * m * (w_f * kl_f + w_r * kl_r)
                den += w_u * m
    return tau**2 * num / max(den, eps)


def test_head_set_on_hand_made_distribution() -> None:
    p = torch.tensor([0.4, 0.3, 0.2, 0.1])
    assert head_set_mask(p, 0.5).tolist() == [True, True, False, False]
    # Same distribution permuted: H follows the bins, not the positions.
    assert head_set_mask(torch.tensor([0.1, 0.3, 0.4, 0.2]), 0.5).tolist() == [False, True, True, False]
    # μ = 0.4: the top bin alone reaches μ (mass above bin "0.3" is 0.4, not < 0.4).
    assert head_set_mask(p, 0.4).tolist() == [True, False, False, False]
    assert head_set_mask(p, 1.0).tolist() == [True, True, True, True]
    # Batched: the last axis is the bin axis.
    batch = torch.stack([p, p.flip(0)])
    assert head_set_mask(batch, 0.5).tolist() == [[True, True, False, False], [False, False, True, True]]


def test_hand_computed_two_bin_cell() -> None:
    # p = [0.5, 0.5], q = [0.75, 0.25]: KL_f = ½ln(4/3) = 0.1438410, KL_r = ¾ln1.5 + ¼ln0.5 = 0.1308120.
    # Both bins differ by 0.25, so the dynamic weights are 0.5 / 0.5 whichever tied bin is H.
    s = torch.tensor([math.log(3.0), 0.0]).reshape(1, 2, 1, 1)
    t = torch.zeros(1, 2, 1, 1)
    w = torch.ones(1, 1, 1)
    kw = dict(gamma=0.0)
    assert dkl(s, t, w, mode="forward", **kw).item() == pytest.approx(0.1438410, abs=1e-6)
    assert dkl(s, t, w, mode="reverse", **kw).item() == pytest.approx(0.1308120, abs=1e-6)
    assert dkl(s, t, w, mode="fixed", **kw).item() == pytest.approx(0.1373265, abs=1e-6)
    assert dkl(s, t, w, mode="dynamic", **kw).item() == pytest.approx(0.1373265, abs=1e-6)
    # A flat teacher has u = 1, so with γ = 1 the only cell has weight 0 → loss 0.
    assert dkl(s, t, w, mode="forward", gamma=1.0).item() == 0.0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("tau", "mu", "gamma"), [(1.0, 0.5, 1.0), (2.0, 0.3, 2.0), (1.0, 0.8, 0.0)])
def test_modes_match_loop_reference(mode: str, tau: float, mu: float, gamma: float) -> None:
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(2, 4, 2, 2, generator=gen) * 2
    t = torch.randn(2, 4, 2, 2, generator=gen) * 2
    w = torch.tensor([[[1.0, 0.0], [2.0, 1.0]], [[0.0, 5.0], [1.0, 1.0]]])
    got = dkl(s, t, w, temperature=tau, head_mass=mu, gamma=gamma, mode=mode)
    want = reference_dual_kl(s.numpy(), t.numpy(), w.numpy(), tau=tau, mu=mu, gamma=gamma, mode=mode)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-7)


def test_dynamic_weights_favour_the_wrong_part() -> None:
    # Teacher sure of bin 0. Student A misses the head (moves mass from bin 0 to bin 1);
    # student B matches the head but spreads mass over the tail bins.
    t = torch.log(torch.tensor([0.7, 0.1, 0.1, 0.1])).reshape(1, 4, 1, 1)
    s_a = torch.log(torch.tensor([0.3, 0.5, 0.1, 0.1])).reshape(1, 4, 1, 1)
    w = torch.ones(1, 1, 1)
    kw = dict(gamma=0.0)
    # A: head {0} gap 0.4, tail gap 0.4 → balanced; the dynamic loss is the mean of the two KLs.
    dyn_a = dkl(s_a, t, w, mode="dynamic", **kw)
    assert dyn_a.item() == pytest.approx(dkl(s_a, t, w, mode="fixed", **kw).item(), rel=1e-5)
    # B: nearly all of the gap lies in the tail → mostly reverse KL.
    s_b = torch.log(torch.tensor([0.68, 0.02, 0.02, 0.28])).reshape(1, 4, 1, 1)
    dyn_b = dkl(s_b, t, w, mode="dynamic", **kw).item()
    fwd_b = dkl(s_b, t, w, mode="forward", **kw).item()
    rev_b = dkl(s_b, t, w, mode="reverse", **kw).item()
    # head gap |0.7 − 0.68| = 0.02, tail gap 0.08 + 0.08 + 0.18 = 0.34 → w_f = 0.02/0.36, w_r = 0.34/0.36
    assert dyn_b == pytest.approx((0.02 * fwd_b + 0.34 * rev_b) / 0.36, rel=1e-4)


@pytest.mark.parametrize("mode", MODES)
def test_identical_logits_give_zero(mode: str) -> None:
    x = torch.randn(2, 5, 3, 3)
    assert dkl(x, x.clone(), torch.ones(2, 3, 3), mode=mode).abs().item() < 1e-6


def test_uncertainty_weight_lowers_a_flat_teacher() -> None:
    t_sure = torch.tensor([6.0, 0.0, 0.0, 0.0])
    t_flat = torch.zeros(4)
    assert teacher_certainty(F.softmax(t_flat, 0), 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert 0.9 < teacher_certainty(F.softmax(t_sure, 0), 1.0).item() < 1.0
    assert teacher_certainty(F.softmax(t_flat, 0), 0.0).item() == 1.0
    t = torch.stack([t_sure, t_flat], dim=-1).reshape(1, 4, 1, 2)
    s = torch.tensor([[0.0, 3.0], [2.0, 0.0], [0.0, 0.0], [0.0, 1.0]]).reshape(1, 4, 1, 2)
    w = torch.ones(1, 1, 2)
    sure_only = dkl(s[..., :1], t[..., :1], w[..., :1], mode="forward")
    # γ = 1: the flat cell has weight (1 − 1)^1 = 0, so only the confident cell counts.
    assert dkl(s, t, w, mode="forward").item() == pytest.approx(sure_only.item(), rel=1e-5)
    # γ = 0: both cells count equally.
    both = dkl(s, t, w, mode="forward", gamma=0.0)
    flat_only = dkl(s[..., 1:], t[..., 1:], w[..., 1:], mode="forward", gamma=0.0)
    expected = 0.5 * (dkl(s[..., :1], t[..., :1], w[..., :1], mode="forward", gamma=0.0) + flat_only)
    assert both.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_gradient_reaches_the_student_only(mode: str) -> None:
    s = torch.randn(1, 4, 2, 2, requires_grad=True)
    t = torch.randn(1, 4, 2, 2, requires_grad=True)
    dkl(s, t, torch.ones(1, 2, 2), mode=mode).backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_all_zero_weight_is_zero_with_finite_gradient() -> None:
    s = torch.randn(2, 4, 2, 2, requires_grad=True)
    loss = dkl(s, torch.randn(2, 4, 2, 2), torch.zeros(2, 2, 2))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(s.grad).all() and (s.grad == 0).all()


def test_bf16_autocast_gives_float32_close_to_fp32() -> None:
    gen = torch.Generator().manual_seed(1)
    s = torch.randn(2, 9, 4, 4, generator=gen)
    t = torch.randn(2, 9, 4, 4, generator=gen) * 3
    w = torch.rand(2, 4, 4, generator=gen)
    fp32 = dkl(s, t, w)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = dkl(s.bfloat16(), t.bfloat16(), w.bfloat16())
    assert got.dtype == torch.float32
    same_inputs = dkl(s.bfloat16().float(), t.bfloat16().float(), w.bfloat16().float())
    assert got.item() == pytest.approx(same_inputs.item(), rel=1e-6)
    assert got.item() == pytest.approx(fp32.item(), rel=2e-2)


def test_bad_inputs_are_named() -> None:
    x = torch.zeros(1, 3, 2, 2)
    with pytest.raises(ValueError, match="dualkl.mode"):
        dkl(x, x, torch.ones(1, 2, 2), mode="both")
    with pytest.raises(ValueError, match=r"weight must be \(N, H, W\)"):
        dkl(x, x, torch.ones(1, 3, 2, 2))
    with pytest.raises(ValueError, match="logits must both be"):
        dkl(x, torch.zeros(1, 4, 2, 2), torch.ones(1, 2, 2))


# ------------------------------------------------------------------------------ Laplace instance term
def _log_var(b: float) -> float:
    return math.log(2.0 * b * b)  # Var = 2b²


def test_laplace_scale_inverts_variance() -> None:
    b = laplace_scale(torch.tensor([_log_var(0.5), _log_var(3.0)]))
    assert b.tolist() == pytest.approx([0.5, 3.0], rel=1e-6)


def test_laplace_kl_matches_numerical_integral() -> None:
    x = np.linspace(-60.0, 60.0, 600_001)

    def density(mu: float, b: float) -> np.ndarray:
        return np.exp(-np.abs(x - mu) / b) / (2 * b)

    for mu_p, b_p, mu_q, b_q in [(0.0, 1.0, 1.0, 2.0), (3.0, 2.5, 1.0, 0.7), (0.0, 1.0, 0.0, 2.0)]:
        p, q = density(mu_p, b_p), density(mu_q, b_q)
        numeric = np.trapezoid(p * (np.log(p) - np.log(q)), x)
        got = laplace_kl(
            torch.tensor(mu_p), torch.tensor(_log_var(b_p)), torch.tensor(mu_q), torch.tensor(_log_var(b_q))
        )
        assert got.item() == pytest.approx(numeric, rel=1e-4)
    # Hand value: equal means, b_p = 1, b_q = 2 → ln 2 + ½ − 1 = 0.1931472.
    zero = torch.tensor(0.0)
    assert laplace_kl(zero, torch.tensor(_log_var(1.0)), zero, torch.tensor(_log_var(2.0))).item() == (
        pytest.approx(0.1931472, abs=1e-6)
    )


def test_laplace_dual_kl_dynamic_balance() -> None:
    mu_s = torch.tensor([10.0, 20.0])
    mu_t = torch.tensor([10.0, 21.0])
    lv_s = torch.tensor([_log_var(0.5), _log_var(2.0)])  # object 0: student sharper than the teacher
    lv_t = torch.tensor([_log_var(1.0), _log_var(1.0)])
    w = torch.tensor([1.0, 3.0])
    kl_f = laplace_kl(mu_t, lv_t, mu_s, lv_s)
    kl_r = laplace_kl(mu_s, lv_s, mu_t, lv_t)
    assert kl_f[0] > kl_r[0]  # sharper student: the mass-covering (forward) KL dominates
    wf, wr = kl_f / (kl_f + kl_r), kl_r / (kl_f + kl_r)
    want = ((w * (wf * kl_f + wr * kl_r)).sum() / w.sum()).item()
    got = laplace_dual_kl_loss(mu_s, lv_s, mu_t, lv_t, weight=w, mode="dynamic")
    assert got.item() == pytest.approx(want, rel=1e-5)
    assert laplace_dual_kl_loss(mu_s, lv_s, mu_t, lv_t, mode="forward").item() == pytest.approx(
        kl_f.mean().item(), rel=1e-6
    )
    assert laplace_dual_kl_loss(mu_s, lv_s, mu_t, lv_t, mode="reverse").item() == pytest.approx(
        kl_r.mean().item(), rel=1e-6
    )


def test_laplace_dual_kl_zero_gradients_and_empty() -> None:
    mu = torch.tensor([5.0, 30.0])
    lv = torch.tensor([0.1, -1.0])
    assert laplace_dual_kl_loss(mu, lv, mu.clone(), lv.clone(), mode="dynamic").abs().item() < 1e-6
    mu_s = torch.tensor([6.0, 28.0], requires_grad=True)
    lv_s = torch.tensor([0.5, 0.0], requires_grad=True)
    mu_t = mu.clone().requires_grad_(True)
    laplace_dual_kl_loss(mu_s, lv_s, mu_t, lv, mode="dynamic").backward()
    assert mu_t.grad is None
    assert mu_s.grad.abs().sum() > 0 and lv_s.grad.abs().sum() > 0
    empty = torch.zeros(0, requires_grad=True)
    loss = laplace_dual_kl_loss(empty, empty, torch.zeros(0), torch.zeros(0), mode="dynamic")
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(empty.grad).all()


# ------------------------------------------------------------------------------ feature terms
def test_foreground_feature_loss_hand_value() -> None:
    s = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [1.0, 1.0]]]).unsqueeze(0)  # (1, 2, 2, 2)
    t = torch.tensor([[[0.0, 2.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 3.0]]]).unsqueeze(0)
    mask = torch.tensor([[[True, True], [True, False]]])
    # Cell (0,0): teacher all zero → not positive. (1,0): teacher zero too. (0,1): the only
    # positive: diffs (0, −1) → ½·mean(0, 1) = 0.25. (1,1) is outside the mask.
    assert foreground_feature_loss([s], [t], [mask]).item() == pytest.approx(0.25)
    # Batch of two identical samples: 2 positives, sum 0.5, / 2 cells / B=2 → 0.125.
    both = foreground_feature_loss([s.repeat(2, 1, 1, 1)], [t.repeat(2, 1, 1, 1)], [mask.repeat(2, 1, 1)])
    assert both.item() == pytest.approx(0.125)
    # Two levels are summed; an empty mask contributes 0.
    two = foreground_feature_loss([s, s], [t, t], [mask, torch.zeros_like(mask)])
    assert two.item() == pytest.approx(0.25)
    assert foreground_feature_loss([s], [s.clone()], [mask]).item() == 0.0


def test_affinity_loss_hand_value() -> None:
    s = torch.tensor([1.0, 2.0]).reshape(1, 1, 1, 2)
    t = torch.ones(1, 1, 1, 2)
    # Gram(s) = [[1,2],[2,4]], Gram(t) = ones → L1 mean (0+1+1+3)/4 = 1.25.
    assert affinity_loss([s], [t]).item() == pytest.approx(1.25)
    assert affinity_loss([s.repeat(2, 1, 1, 1)], [t.repeat(2, 1, 1, 1)]).item() == pytest.approx(0.625)
    # A finer level, constant on 2×2 blocks, resizes (bilinear, half size) to the same values.
    fine_s = s.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # (1, 1, 2, 4)
    fine_t = t.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert affinity_loss([fine_s, s], [fine_t, t]).item() == pytest.approx(2.5)
    x = torch.randn(2, 3, 4, 6)
    assert affinity_loss([x], [x.clone()]).item() == 0.0


def _hard_rank(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x, axis=-1), axis=-1) + 1.0


def test_spearman_skd_matches_numpy_and_shows_the_batch_quirk() -> None:
    gen = np.random.default_rng(0)
    # Well-separated values: soft_rank equals the hard rank (ties would make it soft).
    t = gen.permutation(24).astype(np.float32).reshape(2, 3, 2, 2) * 5.0
    s = gen.normal(size=(2, 3, 2, 2)).astype(np.float32)
    got = spearman_loss([torch.from_numpy(s)], [torch.from_numpy(t)], strength=1.0, mode="skd")
    ranks = _hard_rank(t.reshape(2, -1)) / 12.0
    want = 1.0 - np.corrcoef(s.reshape(-1), ranks.reshape(-1))[0, 1]
    assert got.item() == pytest.approx(want, rel=1e-5)
    # Evenly spaced values equal to their ranks: 1 − corr(x, x) = 0.
    x = torch.from_numpy(gen.permutation(12).astype(np.float32) + 1.0).reshape(1, 3, 2, 2)
    assert spearman_loss([x], [x.clone()], strength=1.0, mode="skd").item() == pytest.approx(0.0, abs=1e-6)
    # Quirk (docs/reference.md, 'Known bugs and quirks: Spearman loss'): the correlation runs over the whole
    # batch, so a sample shifted by +100 (same ranks) is not "perfectly correlated".
    batch = torch.cat([x, x + 100.0])
    quirk = spearman_loss([batch], [batch.clone()], strength=1.0, mode="skd").item()
    r = _hard_rank(batch.reshape(2, -1).numpy()) / 12.0
    assert quirk == pytest.approx(1.0 - np.corrcoef(batch.reshape(-1).numpy(), r.reshape(-1))[0, 1], rel=1e-5)
    assert quirk > 0.1
    assert spearman_loss([batch], [batch.clone()], strength=1.0, mode="rank_both").item() == pytest.approx(
        0.0, abs=1e-6
    )


@pytest.mark.parametrize("mode", ["skd", "rank_both"])
def test_spearman_gradient_reaches_the_student_only(mode: str) -> None:
    s = torch.randn(2, 4, 4, 6, requires_grad=True)
    t = torch.randn(2, 4, 4, 6, requires_grad=True)
    s_coarse = torch.randn(2, 8, 2, 3, requires_grad=True)
    loss = spearman_loss([s, s_coarse], [t, torch.randn(2, 8, 2, 3)], mode=mode, strength=0.1)
    loss.backward()
    assert t.grad is None
    assert s.grad.abs().sum() > 0 and s_coarse.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="spearman_mode"):
        spearman_loss([s], [t], strength=1.0, mode="pearson")


# ------------------------------------------------------------------------------ response
def _head_outputs(n: int = 2, *, did: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {
        "offset_2d": torch.randn(1, 2, 2, 2, generator=gen),
        "size_2d": torch.randn(1, 2, 2, 2, generator=gen),
        "offset_3d": torch.randn(n, 2, generator=gen),
        "size_3d": torch.randn(n, 3, generator=gen),
        "heading": torch.randn(n, 24, generator=gen),
        "depth": torch.randn(n, 2, generator=gen),
    }
    if did:
        out["vis_depth"] = torch.rand(n, 7, 7, generator=gen) * 20
        out["att_depth"] = torch.randn(n, 7, 7, generator=gen)
    return out


def test_response_loss_hand_values() -> None:
    student = _head_outputs(seed=0)
    teacher = {k: v.clone() for k, v in student.items()}
    mask = torch.tensor([[[True, False], [False, False]]])
    heading_bin = torch.tensor([3, 11])
    teacher["offset_2d"][0, :, 0, 0] += torch.tensor([1.0, -3.0])  # masked cell: |1|, |3| → mean 2
    teacher["size_2d"][0, :, 1, 1] += 5.0  # outside the mask → 0
    teacher["offset_3d"][1] += torch.tensor([2.0, 0.0])  # 2 / (2·2) = 0.5
    teacher["size_3d"][0, 0] += 6.0  # 6 / 6 = 1
    teacher["depth"][:, 1] += 1.0  # log-variance is not distilled
    teacher["heading"][0, 12 + 3] += 0.4  # residual at the GT bin: 0.4 / 2 = 0.2
    teacher["heading"][1, 12 + 0] += 9.0  # residual at another bin: ignored
    teacher["heading"][1, 5] += 1.0  # class logits differ for row 1
    teacher["vis_depth"][0, 2, 2] += 0.98  # vis L1: 0.98/98 = 0.01; instance map too: 0.01
    terms = response_loss(student, teacher, head_mask=mask, heading_bin=heading_bin)
    p = F.softmax(teacher["heading"][1, :12], 0).numpy().astype(np.float64)
    q = F.softmax(student["heading"][1, :12], 0).numpy().astype(np.float64)
    kl_mean = float((p * (np.log(p) - np.log(q))).sum()) / (2 * 12)  # reduction='mean' over N·12
    want = {
        "offset2d": 2.0,
        "size2d": 0.0,
        "offset3d": 0.5,
        "size3d": 1.0,
        "heading": kl_mean + 0.2,
        "depth": 0.02,
    }
    assert set(terms) == set(want)
    for key, value in want.items():
        assert terms[key].item() == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_response_loss_gupnet_depth_and_zero_cases() -> None:
    student = _head_outputs(did=False, seed=1)
    teacher = {k: v.clone() for k, v in student.items()}
    mask = torch.ones(1, 2, 2, dtype=torch.bool)
    bins = torch.tensor([0, 1])
    zero = response_loss(student, teacher, head_mask=mask, heading_bin=bins)
    assert max(abs(v.item()) for v in zero.values()) < 1e-7
    teacher["depth"][:, 0] += torch.tensor([1.0, 3.0])
    assert response_loss(student, teacher, head_mask=mask, heading_bin=bins)["depth"].item() == pytest.approx(
        2.0
    )
    did = _head_outputs(did=True, seed=2)
    same = response_loss(did, {k: v.clone() for k, v in did.items()}, head_mask=mask, heading_bin=bins)
    assert max(abs(v.item()) for v in same.values()) < 1e-7


def test_response_loss_without_objects_is_finite_zero() -> None:
    student = {k: v.requires_grad_(True) for k, v in _head_outputs(n=0).items()}
    teacher = _head_outputs(n=0, seed=3)
    terms = response_loss(
        student, teacher, head_mask=torch.zeros(1, 2, 2, dtype=torch.bool), heading_bin=torch.zeros(0).long()
    )
    total = sum(terms.values())
    assert total.item() == 0.0
    total.backward()
    assert all(torch.isfinite(v.grad).all() for v in student.values() if v.grad is not None)


def test_response_gradient_reaches_the_student_only() -> None:
    student = {k: v.requires_grad_(True) for k, v in _head_outputs(seed=4).items()}
    teacher = {k: v.requires_grad_(True) for k, v in _head_outputs(seed=5).items()}
    mask = torch.ones(1, 2, 2, dtype=torch.bool)
    sum(response_loss(student, teacher, head_mask=mask, heading_bin=torch.tensor([1, 2])).values()).backward()
    assert all(v.grad is None for v in teacher.values())
    assert all(student[k].grad.abs().sum() > 0 for k in ("offset_2d", "size_2d", "heading", "vis_depth"))


def test_gaussian_disc_mask_is_the_support_of_the_heatmap_gaussian() -> None:
    boxes = torch.tensor(
        [
            [
                [0.0, 0.0, 20.0, 10.0],  # w 20, h 10: CornerNet radius 3.68 → r = 3, centre (10, 5)
                [2.0, 2.0, 6.0, 4.0],  # w 4, h 2: radius 0.74 → r = 0, the centre cell (4, 3) only
                [0.0, 0.0, 0.0, 0.0],  # empty slot: marks nothing (MonoSKD would mark (0, 0))
                [30.0, 1.0, 40.0, 9.0],  # valid = False
            ]
        ]
    )
    valid = torch.tensor([[True, True, True, False]])
    mask = gaussian_disc_mask(boxes, height=12, width=16, valid=valid)
    want = np.zeros((12, 16), dtype=bool)
    want[2:9, 7:14] = True
    want[3, 4] = True
    assert mask.shape == (1, 12, 16) and mask.dtype == torch.bool
    np.testing.assert_array_equal(mask[0].numpy(), want)
    # Same cells as the dataset's drawn gaussian (its (2r+1)² square has no zero entries).
    heatmap = np.zeros((12, 16), dtype=np.float32)
    draw_gaussian(heatmap, (10, 5), 3)
    draw_gaussian(heatmap, (4, 3), 0)
    np.testing.assert_array_equal(heatmap > 0, want)
    # Cut at the border: a box around cell (0, 0) keeps only the in-grid quarter.
    corner = gaussian_disc_mask(torch.tensor([[[-10.0, -5.0, 10.0, 5.0]]]), height=12, width=16)
    assert corner[0].nonzero().amax(0).tolist() == [3, 3] and corner.sum().item() == 16
