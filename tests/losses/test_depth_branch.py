"""Depth-branch soft cross-entropy (docs/method.md, 'Targets from projected LiDAR') against hand-computed
values."""

from __future__ import annotations

import math

import pytest
import torch

from lib.losses.depth_branch import depth_branch_loss


def one_row_example() -> tuple[torch.Tensor, ...]:
    """3 cells, 2 bins: cell 0 p = (1/4, 3/4), target (1, 0); cell 1 p = (½, ½), target (½, ½);
    cell 2 invalid (but foreground)."""
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0], [7.0, -3.0]]).T.reshape(1, 2, 1, 3)
    target = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]).T.reshape(1, 2, 1, 3)
    valid = torch.tensor([[[True, True, False]]])
    fg = torch.tensor([[[True, False, True]]])
    return logits, target, valid, fg


def test_depth_branch_loss_by_hand() -> None:
    logits, target, valid, fg = one_row_example()
    # CE: cell 0 = ln 4 (weight 5), cell 1 = ln 2 (weight 1); cell 2 invalid although foreground
    expected = (5 * math.log(4) + math.log(2)) / 6
    loss = depth_branch_loss(logits, target, valid, fg, fg_weight=5.0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_fg_weight_one_is_the_plain_mean_over_valid_cells() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 3, 4, generator=g)
    target = torch.softmax(torch.randn(2, 6, 3, 4, generator=g), 1)
    valid = torch.rand(2, 3, 4, generator=g) > 0.4
    fg = torch.rand(2, 3, 4, generator=g) > 0.5
    ce = -(target * torch.log_softmax(logits, 1)).sum(1)
    loss = depth_branch_loss(logits, target, valid, fg, fg_weight=1.0)
    assert loss.item() == pytest.approx(ce[valid].mean().item(), rel=1e-6)


def test_all_invalid_gives_finite_zero_and_no_gradient() -> None:
    logits, target, _, fg = one_row_example()
    logits.requires_grad_()
    loss = depth_branch_loss(logits, target, torch.zeros(1, 1, 3, dtype=torch.bool), fg, fg_weight=5.0)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_invalid_cells_get_no_gradient_even_with_extreme_logits() -> None:
    logits, target, valid, fg = one_row_example()
    logits = logits.clone()
    logits[0, :, 0, 2] = torch.tensor([1e4, -1e4])
    logits.requires_grad_()
    loss = depth_branch_loss(logits, target, valid, fg, fg_weight=5.0)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.equal(logits.grad[0, :, 0, 2], torch.zeros(2))
    assert logits.grad[0, :, 0, 0].abs().sum() > 0


def test_output_is_float32_for_half_inputs() -> None:
    logits, target, valid, fg = one_row_example()
    loss = depth_branch_loss(logits.bfloat16(), target.bfloat16(), valid, fg, fg_weight=5.0)
    assert loss.dtype == torch.float32


def test_shape_and_weight_errors() -> None:
    logits, target, valid, fg = one_row_example()
    with pytest.raises(ValueError, match=r"must be \(B, K\+1, H, W\)"):
        depth_branch_loss(logits, target[:, :1], valid, fg, fg_weight=5.0)
    with pytest.raises(ValueError, match="fg_weight must be >= 0"):
        depth_branch_loss(logits, target, valid, fg, fg_weight=-1.0)
