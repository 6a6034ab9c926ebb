"""The one foreground-mask helper: grid cells covered by GT 2D boxes (docs/method.md, 'Targets from projected
LiDAR', docs/reference.md, 'Features and losses').

The dataset uses it for ``targets['fg_mask']`` (the depth-branch loss weights foreground
cells by ``fg_weight``), and distillation uses it for foreground feature imitation at
other strides. Keeping one definition means "foreground" means the same thing everywhere.
"""

from __future__ import annotations

import numpy as np
import torch


def foreground_mask(
    boxes: torch.Tensor | np.ndarray,
    *,
    height: int,
    width: int,
    stride: float = 1.0,
    valid: torch.Tensor | np.ndarray | None = None,
) -> torch.Tensor | np.ndarray:
    """Cells of a ``height`` × ``width`` grid that overlap at least one valid box.

    Cell (i, j) spans [j·stride, (j+1)·stride) × [i·stride, (i+1)·stride) in box units; it is
    foreground when a box overlaps it with positive area, so a box smaller than a cell still
    marks the cell it lies in (far objects keep a foreground cell at coarse strides).
    MonoDistill truncates the box to ``[int(x1), int(x2))`` instead, which can mark nothing
    for a small box.

    Args:
        boxes: (..., N, 4) x1, y1, x2, y2. With ``targets['box2d']`` (feature px at stride 4)
            use stride 1 for the stride-4 grid, 2 for stride 8, and so on.
        height, width: grid size in cells.
        stride: box units per cell.
        valid: (..., N) bool; False rows are ignored (e.g. ``targets['mask_2d']``). Boxes
            with zero or negative width or height are always ignored.

    Returns:
        (..., height, width) bool, a numpy array for numpy ``boxes``, else a tensor on the
        boxes' device.
    """
    as_numpy = isinstance(boxes, np.ndarray)
    b = torch.as_tensor(boxes).float() / stride  # (..., N, 4) in cells
    keep = (b[..., 2] > b[..., 0]) & (b[..., 3] > b[..., 1])  # (..., N)
    if valid is not None:
        keep = keep & torch.as_tensor(valid, device=b.device).bool()
    cols = torch.arange(width, device=b.device, dtype=b.dtype)  # (W,)
    rows = torch.arange(height, device=b.device, dtype=b.dtype)  # (H,)
    in_x = (cols >= b[..., 0:1].floor()) & (cols < b[..., 2:3].ceil())  # (..., N, W)
    in_y = (rows >= b[..., 1:2].floor()) & (rows < b[..., 3:4].ceil()) & keep[..., None]  # (..., N, H)
    # Union over boxes as a product: (..., H, N) @ (..., N, W) counts the boxes covering each cell.
    mask = (in_y.transpose(-1, -2).float() @ in_x.float()) > 0  # (..., H, W)
    return mask.cpu().numpy() if as_numpy else mask
