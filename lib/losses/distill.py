"""Distillation losses: DualKL on RPD depth distributions and the MonoDistill / MonoSKD terms.

* :func:`dual_kl_loss` — docs/method.md, 'DualKL distillation': per feature cell, a forward and a reverse KL
  between the teacher's and the student's depth-bin distributions, balanced per cell by where the student
  is wrong (head vs tail of the teacher's distribution) and weighted by the teacher's certainty.
* :func:`laplace_dual_kl_loss` — docs/method.md, 'Optional instance term': the same balance on the per-object
  Laplace depth.
* :func:`foreground_feature_loss`, :func:`affinity_loss`, :func:`spearman_loss`,
  :func:`response_loss` — the baselines of docs/reference.md, 'Features and losses' (MonoDistill, MonoSKD).

Every function is pure: it never changes its inputs, detaches the teacher side (gradients reach
the student only) and takes its device and dtype from the inputs. Losses are computed in float32
with autocast switched off, so they are the same under bf16/fp16 AMP.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping, Sequence
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor

from lib.box_coding import gaussian_radius
from lib.errors import UserError

DUAL_KL_MODES = ("dynamic", "forward", "reverse", "fixed")
SPEARMAN_MODES = ("skd", "rank_both")
# torchsort is a compiled extension that only the Spearman term needs: imported on first use.
TORCHSORT_INSTALL = "pip install --no-build-isolation torchsort==0.1.10"  # as requirements.txt pins it
# (w_f, w_r) of the ablation modes (docs/method.md, 'Loss'); "dynamic" computes them per cell.
STATIC_BALANCE = {"forward": (1.0, 0.0), "reverse": (0.0, 1.0), "fixed": (0.5, 0.5)}


def _no_autocast(x: Tensor) -> torch.autocast:
    """A context that turns autocast off on ``x``'s device (losses stay in float32)."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def _check_mode(mode: str, allowed: tuple[str, ...], name: str) -> None:
    if mode not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {mode!r}")


# --------------------------------------------------------------------------------------------
# DualKL (docs/method.md, 'DualKL distillation')
# --------------------------------------------------------------------------------------------
def head_set_mask(probs: Tensor, head_mass: float) -> Tensor:
    """The teacher's head set H per cell (docs/method.md, 'Dynamic balancing').

    Sort the bins by probability, descending; a bin is in H when the mass of the bins ranked
    above it is < ``head_mass`` (μ). So H is the smallest prefix whose cumulative mass reaches μ:
    p = [0.4, 0.3, 0.2, 0.1], μ = 0.5 → H = {0, 1} (mass above bin 1 is 0.4 < 0.5, above bin 2
    it is 0.7). The top bin is always in H.

    Args:
        probs: (..., C) probabilities along the last axis.
        head_mass: μ in (0, 1].

    Returns:
        (..., C) bool, True for bins in H.
    """
    sorted_p, order = probs.sort(dim=-1, descending=True)  # (..., C)
    # Exclusive cumulative sum: the mass ranked strictly above each sorted bin (exact 0 for the top).
    mass_above = torch.cat([torch.zeros_like(sorted_p[..., :1]), sorted_p[..., :-1].cumsum(-1)], dim=-1)
    in_head_sorted = mass_above < head_mass
    return torch.zeros_like(in_head_sorted).scatter(-1, order, in_head_sorted)


def dual_kl_balance(
    p: Tensor, q: Tensor, *, mode: str, head_mass: float, eps: float = 1e-8
) -> tuple[Tensor, Tensor]:
    """Per-cell weights (w_f, w_r) of the forward and reverse KL (docs/method.md, 'Dynamic balancing'), no
    gradient.

    ``dynamic``: g_head = Σ_{k∈H} |p_k − q_k|, g_tail = Σ_{k∉H} |p_k − q_k|,
    w_f = g_head / (g_head + g_tail + ε), w_r = g_tail / (g_head + g_tail + ε).
    ``forward``: (1, 0). ``reverse``: (0, 1). ``fixed``: (0.5, 0.5).

    Args:
        p: (..., C) teacher probabilities. q: (..., C) student probabilities.

    Returns:
        w_f, w_r: (...,) each, detached.
    """
    _check_mode(mode, DUAL_KL_MODES, "dualkl.mode")
    with torch.no_grad():
        if mode in STATIC_BALANCE:
            w_f, w_r = STATIC_BALANCE[mode]
            ones = p.new_ones(p.shape[:-1])
            return w_f * ones, w_r * ones
        gap = (p - q).abs()  # (..., C)
        head = head_set_mask(p, head_mass)
        g_head = (gap * head).sum(-1)
        g_tail = (gap * ~head).sum(-1)
        total = g_head + g_tail + eps
        return g_head / total, g_tail / total


def teacher_certainty(p: Tensor, gamma: float) -> Tensor:
    """w_u = (1 − u)^γ with u = −Σ p log p / log C the normalised entropy (docs/method.md, 'Depth-uncertainty
    weighting').

    γ = 0 gives 1 everywhere (the weighting is off). No gradient.

    Args:
        p: (..., C) teacher probabilities.

    Returns:
        (...,) in [0, 1].
    """
    with torch.no_grad():
        entropy = -(p * p.clamp_min(torch.finfo(p.dtype).tiny).log()).sum(-1)
        certainty = (1.0 - entropy / math.log(p.shape[-1])).clamp(0.0, 1.0)
        return certainty.pow(gamma)


def dual_kl_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    weight: Tensor,
    *,
    temperature: float,
    head_mass: float,
    gamma: float,
    mode: str,
    eps: float = 1e-8,
) -> Tensor:
    """DualKL between the teacher's and the student's depth-bin distributions (docs/method.md, 'Loss').

        p = softmax(t/τ) (detached), q = softmax(s/τ)
        KL_f = Σ_k p_k (log p_k − log q_k),  KL_r = Σ_k q_k (log q_k − log p_k)
        L = τ² · Σ_x w_u·m·(w_f·KL_f + w_r·KL_r) / max(Σ_x w_u·m, ε)

    with (w_f, w_r) from :func:`dual_kl_balance` and w_u from :func:`teacher_certainty`, both
    computed without gradient; m(x) = ``weight``. Only cells with weight > 0 are evaluated
    (gathered first, so the cost follows the number of valid cells). Float32 inside, autocast off.

    Args:
        student_logits: (N, C, H, W) logits over the K+1 RPD bins (C = K+1).
        teacher_logits: (N, C, H, W); detached here.
        weight: (N, H, W) cell weight m(x) ≥ 0: valid mask × foreground weighting; 0 = ignore.
        temperature: τ. head_mass: μ of the head set. gamma: γ of the certainty weight (0 = off).
        mode: dynamic | forward | reverse | fixed.

    Returns:
        Scalar float32 loss; 0 (with a zero, finite gradient) when every weight is 0.
    """
    _check_mode(mode, DUAL_KL_MODES, "dualkl.mode")
    if student_logits.dim() != 4 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"dual_kl_loss: student/teacher logits must both be (N, C, H, W), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    n, _, h, w = student_logits.shape
    if weight.shape != (n, h, w):
        raise ValueError(f"dual_kl_loss: weight must be (N, H, W) = {(n, h, w)}, got {tuple(weight.shape)}")
    with _no_autocast(student_logits):
        weight = weight.detach().float()
        valid = weight > 0  # (N, H, W)
        s = student_logits.movedim(1, -1)[valid].float() / temperature  # (M, C)
        t = teacher_logits.detach().movedim(1, -1)[valid].float() / temperature  # (M, C)
        m = weight[valid]  # (M,)
        log_q = F.log_softmax(s, dim=-1)
        log_p = F.log_softmax(t, dim=-1)
        q, p = log_q.exp(), log_p.exp()
        kl_f = (p * (log_p - log_q)).sum(-1)  # (M,)
        kl_r = (q * (log_q - log_p)).sum(-1)  # (M,)
        w_f, w_r = dual_kl_balance(p, q.detach(), mode=mode, head_mass=head_mass, eps=eps)
        cell = teacher_certainty(p, gamma) * m  # (M,)
        loss = (cell * (w_f * kl_f + w_r * kl_r)).sum() / cell.sum().clamp_min(eps)
        return loss * temperature**2


def laplace_scale(log_variance: Tensor) -> Tensor:
    """Laplace scale b from a log-variance: Var = 2b², so b = sqrt(exp(logvar) / 2).

    GUPNet's and DID-M3D's depth heads output [depth, log σ²]; their loss
    √2·exp(−½ logvar)·|d − d*| + ½ logvar is the Laplace NLL with exactly this b (docs/reference.md, 'GUPNet
    losses').
    """
    return torch.exp(0.5 * log_variance) / math.sqrt(2.0)


def laplace_kl(mu_p: Tensor, log_var_p: Tensor, mu_q: Tensor, log_var_q: Tensor) -> Tensor:
    """Closed-form KL(P ‖ Q) of two Laplace laws (docs/method.md, 'Optional instance term'), element-wise.

    KL = log(b_q/b_p) + |μ_p − μ_q|/b_q + (b_p/b_q)·exp(−|μ_p − μ_q|/b_p) − 1, with b from
    :func:`laplace_scale`; log(b_q/b_p) = ½(logvar_q − logvar_p).
    """
    b_p, b_q = laplace_scale(log_var_p), laplace_scale(log_var_q)
    gap = (mu_p - mu_q).abs()
    return 0.5 * (log_var_q - log_var_p) + gap / b_q + (b_p / b_q) * torch.exp(-gap / b_p) - 1.0


def laplace_dual_kl_loss(
    mu_s: Tensor,
    logvar_s: Tensor,
    mu_t: Tensor,
    logvar_t: Tensor,
    *,
    weight: Tensor | None = None,
    mode: str,
    eps: float = 1e-8,
) -> Tensor:
    """DualKL on the per-object Laplace depth of matched RoIs (docs/method.md, 'Optional instance term').

    Forward KL_f = KL(teacher ‖ student), reverse KL_r = KL(student ‖ teacher), both closed form
    (:func:`laplace_kl`). A Laplace law has no head/tail split, so the ``dynamic`` balance takes
    the two KL magnitudes themselves, per object and without gradient:

        w_f = KL_f / (KL_f + KL_r + ε),   w_r = KL_r / (KL_f + KL_r + ε)

    With equal means this weights the mass-covering forward KL more when the student is sharper
    than the teacher (b_s < b_t → KL_f > KL_r) and the mode-seeking reverse KL more when the
    student is broader — the roles that the head/tail gaps give them in docs/method.md, 'Dynamic balancing'.
    ``forward`` / ``reverse`` / ``fixed`` as in :func:`dual_kl_balance`.

        L = Σ_i m_i (w_f,i KL_f,i + w_r,i KL_r,i) / max(Σ_i m_i, ε)

    Args:
        mu_s, logvar_s: (N,) student depth (m) and its log-variance.
        mu_t, logvar_t: (N,) teacher depth and log-variance (detached here).
        weight: (N,) object weights m_i ≥ 0 (default 1).

    Returns:
        Scalar float32 loss; 0 for N = 0 or all-zero weights.
    """
    _check_mode(mode, DUAL_KL_MODES, "dualkl.mode")
    with _no_autocast(mu_s):
        mu_s, logvar_s = mu_s.float(), logvar_s.float()
        mu_t, logvar_t = mu_t.detach().float(), logvar_t.detach().float()
        m = mu_s.new_ones(mu_s.shape) if weight is None else weight.detach().float()
        kl_f = laplace_kl(mu_t, logvar_t, mu_s, logvar_s)  # (N,)
        kl_r = laplace_kl(mu_s, logvar_s, mu_t, logvar_t)  # (N,)
        if mode in STATIC_BALANCE:
            w_f, w_r = STATIC_BALANCE[mode]
        else:
            with torch.no_grad():
                f, r = kl_f.clamp_min(0.0), kl_r.clamp_min(0.0)  # KL ≥ 0 up to rounding
                w_f, w_r = f / (f + r + eps), r / (f + r + eps)
        return (m * (w_f * kl_f + w_r * kl_r)).sum() / m.sum().clamp_min(eps)


# --------------------------------------------------------------------------------------------
# MonoDistill / MonoSKD feature terms (docs/reference.md, 'Features and losses')
# --------------------------------------------------------------------------------------------
def foreground_feature_loss(
    student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], masks: Sequence[Tensor]
) -> Tensor:
    """MonoDistill's foreground feature imitation (its ``backbone_loss_l1``, a squared error).

    Per level: the positive cells are those inside a GT 2D box (``masks``) where the teacher
    feature is non-zero in some channel; the level's loss is
    Σ_{pos} mean_c ½(s − t)² / #pos / B (0 without positives). Summed over levels.

    Args:
        student_feats: per level (B, C, H, W) (the adapted student features).
        teacher_feats: per level (B, C, H, W) (detached here).
        masks: per level (B, H, W) bool, cells inside a GT box at that level's stride.

    Returns:
        Scalar float32.
    """
    total = student_feats[0].new_zeros((), dtype=torch.float32)
    for s, t, mask in zip(student_feats, teacher_feats, masks, strict=True):
        with _no_autocast(s):
            s, t = s.float(), t.detach().float()
            pos = mask & (t != 0).any(dim=1)  # (B, H, W)
            per_cell = 0.5 * (s - t).pow(2).mean(dim=1)  # (B, H, W)
            total = total + (per_cell * pos).sum() / pos.sum().clamp_min(1) / s.shape[0]
    return total


def _resize_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize (align_corners=False, as MonoSKD's F.interpolate default) in float32."""
    x = x.float()
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=size, mode="bilinear")


def affinity_loss(student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor]) -> Tensor:
    """MonoSKD / MonoDistill affinity (relation) loss (docs/reference.md, 'Features and losses').

    Per level: both features resized bilinearly to the last (coarsest) level's h×w, then per
    sample the (hw × hw) Gram matrix of channel dot products; loss = L1 mean between the Gram
    matrices / B. Summed over levels.

    Args:
        student_feats, teacher_feats: per level (B, C, H, W); the last level sets h×w.

    Returns:
        Scalar float32.
    """
    size = tuple(student_feats[-1].shape[-2:])
    total = student_feats[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student_feats, teacher_feats, strict=True):
        with _no_autocast(s):
            s = _resize_to(s, size).flatten(2)  # (B, C, hw)
            t = _resize_to(t.detach(), size).flatten(2)
            gram_s = s.transpose(1, 2) @ s  # (B, hw, hw)
            gram_t = t.transpose(1, 2) @ t
            total = total + F.l1_loss(gram_s, gram_t) / s.shape[0]
    return total


def _pearson(x: Tensor, y: Tensor) -> Tensor:
    """Pearson correlation over the last axis (all elements for 1-D input)."""
    x = x - x.mean(-1, keepdim=True)
    y = y - y.mean(-1, keepdim=True)
    return (x * y).sum(-1) / (x.norm(dim=-1) * y.norm(dim=-1)).clamp_min(1e-12)


def require_torchsort() -> ModuleType:
    """The ``torchsort`` module, imported here rather than with this module.

    Raises:
        UserError: torchsort is missing or its extension does not load; the message names
            ``distill.spearman_weight`` (the only term that needs it) and the install command.
    """
    try:
        import torchsort
    except ImportError as err:
        raise UserError(
            f"distill.spearman_weight > 0 needs torchsort, which does not import ({err}): install it "
            f"with `{TORCHSORT_INSTALL}` (make install does) or set distill.spearman_weight=0"
        ) from err
    return torchsort


def _soft_rank(x: Tensor, strength: float) -> Tensor:
    """``torchsort.soft_rank`` ("l2"), on the CPU when torchsort was built without CUDA.

    ``make install`` builds torchsort CPU-only unless TORCHSORT_CUDA=1; autograd carries the
    gradient across the device copy, so only speed differs.
    """
    torchsort = require_torchsort()
    if x.is_cuda and importlib.util.find_spec("torchsort.isotonic_cuda") is None:
        return torchsort.soft_rank(x.cpu(), regularization="l2", regularization_strength=strength).to(
            x.device
        )
    return torchsort.soft_rank(x, regularization="l2", regularization_strength=strength)


def spearman_loss(
    student_feats: Sequence[Tensor],
    teacher_feats: Sequence[Tensor],
    *,
    strength: float,
    mode: str,
) -> Tensor:
    """MonoSKD's Spearman rank-correlation loss through ``torchsort.soft_rank`` (docs/reference.md, 'Features
    and losses').

    Per level both features are resized bilinearly to the last level's h×w and flattened per
    sample to (B, C·h·w); soft ranks use regularization "l2" with ``strength``.

    * ``skd`` (default, parity with MonoSKD, docs/reference.md, 'Known bugs and quirks: Spearman loss'): only
      the **teacher** is ranked (its argument order puts the student in the "target" slot); the ranks are
      divided by C·h·w, and the loss is 1 − Pearson(student raw values, teacher ranks) computed over the
      whole batch at once. It is not a Spearman correlation and is not 0 for student == teacher
      unless the values are evenly spaced.
    * ``rank_both``: the actual soft Spearman correlation, both sides ranked, one correlation
      per sample; loss = 1 − its batch mean (0 for student == teacher).

    Summed over levels.

    Args:
        student_feats, teacher_feats: per level (B, C, H, W); the last level sets h×w.
        strength: torchsort regularization strength (``distill.spearman_strength``).
        mode: skd | rank_both.

    Returns:
        Scalar float32.
    """
    _check_mode(mode, SPEARMAN_MODES, "distill.spearman_mode")
    size = tuple(student_feats[-1].shape[-2:])
    total = student_feats[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student_feats, teacher_feats, strict=True):
        with _no_autocast(s):
            s = _resize_to(s, size).flatten(1)  # (B, C*h*w)
            t = _resize_to(t.detach(), size).flatten(1)
            t_rank = _soft_rank(t, strength)
            if mode == "skd":
                total = total + 1.0 - _pearson(s.flatten(), (t_rank / t.shape[-1]).flatten())
            else:
                s_rank = _soft_rank(s, strength)
                total = total + 1.0 - _pearson(s_rank, t_rank).mean()
    return total


# --------------------------------------------------------------------------------------------
# MonoSKD response (head) distillation (docs/reference.md, 'Features and losses')
# --------------------------------------------------------------------------------------------
def gaussian_disc_mask(boxes: Tensor, *, height: int, width: int, valid: Tensor | None = None) -> Tensor:
    """MonoSKD's head-distillation mask: the gaussian discs of the GT 2D boxes (docs/reference.md, 'Features
    and losses').

    Per box, the CornerNet radius r = max(0, int(gaussian_radius(w, h))) (the dataset's heatmap
    radius, lib/datasets/targets.py) around the box's integer 2D centre (int((x1 + x2)/2),
    int((y1 + y2)/2)); a cell is in the mask where the drawn gaussian is > 0, i.e. on the whole
    (2r+1)² square (σ = (2r+1)/6 keeps even the corners at ~e⁻⁹ > 0). Cut at the grid border.
    Unlike MonoSKD, empty slots and boxes with no area mark nothing (its code marks cell (0, 0)
    for each, docs/reference.md, 'Known bugs and quirks: Heading KL and empty slots').

    Args:
        boxes: (B, M, 4) x1, y1, x2, y2 in grid px (``targets['box2d']``, stride-4 feature px).
        height, width: grid size.
        valid: (B, M) bool rows to use (e.g. ``targets['mask_2d']``).

    Returns:
        (B, height, width) bool on the boxes' device.
    """
    b = boxes.detach().float()
    keep = (b[..., 2] > b[..., 0]) & (b[..., 3] > b[..., 1])  # (B, M)
    if valid is not None:
        keep = keep & valid.bool()
    size = (b[..., 2:] - b[..., :2])[keep].tolist()  # [[w, h], ...] of the kept boxes
    radius = torch.zeros_like(b[..., 0])  # (B, M)
    radius[keep] = b.new_tensor([max(0, int(gaussian_radius(w, h))) for w, h in size])
    centre = torch.trunc((b[..., :2] + b[..., 2:]) / 2)  # (B, M, 2) x, y
    cols = torch.arange(width, device=b.device, dtype=b.dtype)
    rows = torch.arange(height, device=b.device, dtype=b.dtype)
    in_x = (cols - centre[..., 0:1]).abs() <= radius[..., None]  # (B, M, W)
    in_y = ((rows - centre[..., 1:2]).abs() <= radius[..., None]) & keep[..., None]  # (B, M, H)
    return (in_y.transpose(-1, -2).float() @ in_x.float()) > 0  # (B, H, W)


def _l1_mean(student: Tensor, teacher: Tensor) -> Tensor:
    """L1 mean in float32; 0 (keeping the graph) for empty inputs, where F.l1_loss gives NaN."""
    student, teacher = student.float(), teacher.detach().float()
    if student.numel() == 0:
        return student.sum()
    return F.l1_loss(student, teacher)


def response_loss(
    student: Mapping[str, Tensor],
    teacher: Mapping[str, Tensor],
    *,
    head_mask: Tensor,
    heading_bin: Tensor,
    num_heading_bin: int = 12,
) -> dict[str, Tensor]:
    """MonoSKD's head (response) distillation, one term per head (docs/reference.md, 'Features and losses').

    * offset2d, size2d: L1 mean over the ``head_mask`` cells × channels of the dense maps.
    * offset3d, size3d: L1 mean over the RoI rows.
    * heading: KL(teacher ‖ student) of the 12-bin softmax with ``reduction='mean'`` (over
      rows × bins: MonoSKD's choice, docs/reference.md, 'Known bugs and quirks: Heading KL and empty slots') +
      L1 of the residual at the GT bin.
    * depth: DID (outputs have ``vis_depth``): L1 on the 7×7 visual, attribute and instance
      (visual + attribute) maps, summed; GUPNet: L1 on the instance depth ``depth[:, 0]``.

    No heatmap term (MonoSKD has none). Both networks' RoI rows must be the same GT objects
    in the same order (the detectors' training mode guarantees it). Each term is 0 when it has
    no cells / rows. The caller sums the terms.

    Args:
        student, teacher: detector outputs (lib/models/detector.py: offset_2d, size_2d (B,2,Hf,Wf); offset_3d
            (N,2), size_3d (N,3), heading (N,24), depth (N,2); DID: vis_depth, att_depth (N,7,7)).
        head_mask: (B, Hf, Wf) bool, the gaussian-disc cells of the GT objects.
        heading_bin: (N,) int64 GT heading bin of each RoI row.

    Returns:
        {"offset2d", "size2d", "offset3d", "size3d", "heading", "depth"} → scalar float32.
    """
    with _no_autocast(head_mask):
        cells = head_mask.unsqueeze(1)  # (B, 1, Hf, Wf)
        terms = {}
        for key, name in (("offset_2d", "offset2d"), ("size_2d", "size2d")):
            s, t = student[key], teacher[key]
            terms[name] = _l1_mean(s.masked_select(cells), t.masked_select(cells))
        terms["offset3d"] = _l1_mean(student["offset_3d"], teacher["offset_3d"])
        terms["size3d"] = _l1_mean(student["size_3d"], teacher["size_3d"])

        s_head, t_head = student["heading"].float(), teacher["heading"].detach().float()  # (N, 24)
        if s_head.shape[0] == 0:
            terms["heading"] = s_head.sum()
        else:
            log_q = F.log_softmax(s_head[:, :num_heading_bin], dim=-1)  # (N, 12)
            log_p = F.log_softmax(t_head[:, :num_heading_bin], dim=-1)
            # F.kl_div(log_q, p, reduction="mean"): the KL summed over bins, / (N · 12).
            cls_kl = (log_p.exp() * (log_p - log_q)).mean()
            res_index = num_heading_bin + heading_bin.reshape(-1, 1)  # (N, 1)
            terms["heading"] = cls_kl + _l1_mean(s_head.gather(1, res_index), t_head.gather(1, res_index))

        if "vis_depth" in student:
            s_vis, s_att = student["vis_depth"], student["att_depth"]
            t_vis, t_att = teacher["vis_depth"], teacher["att_depth"]
            terms["depth"] = (
                _l1_mean(s_vis, t_vis) + _l1_mean(s_att, t_att) + _l1_mean(s_vis + s_att, t_vis + t_att)
            )
        else:
            terms["depth"] = _l1_mean(student["depth"][:, 0], teacher["depth"][:, 0])
        return terms
