"""Road Plane Discretization (RPD) depth bins and soft targets (docs/method.md, 'Road Plane Discretization').

A camera at height h over a flat road sees depth z on the row r(z) = f·h/z below the
horizon. RPD spaces its K bins evenly in r, so each bin spans the same number of image rows
of the road plane. ``ud`` (uniform metres), ``sid`` (log, DORN) and ``lid`` (linear-increasing,
CaDDN) are the classic codes, kept for ablation. Every mode orders bins near → far; index K
is the extra "beyond range / no depth" bin.

Each mode is a monotone map u(z) from depth to a continuous bin coordinate with u(edge_k) = k,
so edges, centres (u = k + 0.5), soft two-hot targets and decoding share one code path.

:class:`RpdSettings` is the ``rpd:`` config section (the bins and the target rule), parsed once;
the dataset, the criterion and the detector builder take it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lib.config import ConfigError, check_record_ranges, section_settings
from lib.constants import DEPTH_BIN_MODES

MODES = DEPTH_BIN_MODES  # lib/constants.py: read by tools without loading torch


@dataclass(frozen=True)
class DepthBins:
    """The fixed bin layout of a run (the reference camera, not each frame's; docs/method.md, 'Bins').

    Built from the ``rpd`` section by :attr:`RpdSettings.bins` (configs/base.yaml holds the
    defaults), or from a tool's own arguments.

    Attributes:
        mode: rpd | ud | sid | lid. depth_min, depth_max: range in metres. num_bins: K.
        focal: reference focal length f (px). camera_height: h (m). Only rpd uses f and h.

    Raises:
        ConfigError: a value out of range (named as its ``rpd.*`` key).
    """

    mode: str
    depth_min: float
    depth_max: float
    num_bins: int
    focal: float
    camera_height: float

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"rpd.mode must be one of {MODES}, got {self.mode!r}")
        if not 0 < self.depth_min < self.depth_max:
            raise ConfigError(
                f"rpd.depth_min, rpd.depth_max: need 0 < depth_min < depth_max, got {self.depth_min}, "
                f"{self.depth_max}"
            )
        check_record_ranges(self, "rpd")  # lib/config.py RANGES

    @property
    def fh(self) -> float:
        return self.focal * self.camera_height

    def to_coord(self, depth: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Depth (m) → continuous bin coordinate u in [0, K] over [depth_min, depth_max].

        numpy in (computed in float64) → numpy out; a tensor keeps its dtype and device.
        """
        xp = torch if isinstance(depth, torch.Tensor) else np
        z = depth if xp is torch else np.asarray(depth, dtype=np.float64)
        lo, hi, k = self.depth_min, self.depth_max, self.num_bins
        with np.errstate(divide="ignore", invalid="ignore"):  # z = 0 → -inf, as the formulas say
            if self.mode == "rpd":
                r_lo, r_hi = self.fh / hi, self.fh / lo
                return (r_hi - self.fh / z) / ((r_hi - r_lo) / k)
            if self.mode == "ud":
                return (z - lo) / ((hi - lo) / k)
            if self.mode == "sid":
                return (xp.log(z) - np.log(lo)) / ((np.log(hi) - np.log(lo)) / k)
            # lid: edge_k = lo + bin_size·k(k+1)/2 with bin_size = 2(hi - lo)/(K(K+1)); solve for k.
            bin_size = 2 * (hi - lo) / (k * (k + 1))
            return (xp.sqrt((1 + 8 * (z - lo) / bin_size).clip(min=0.0)) - 1) / 2

    def from_coord(self, u: np.ndarray) -> np.ndarray:
        """Continuous bin coordinate u → depth (m); the inverse of :meth:`to_coord`."""
        u = np.asarray(u, dtype=np.float64)
        lo, hi, k = self.depth_min, self.depth_max, self.num_bins
        if self.mode == "rpd":
            r_lo, r_hi = self.fh / hi, self.fh / lo
            return self.fh / (r_hi - u * (r_hi - r_lo) / k)
        if self.mode == "ud":
            return lo + u * (hi - lo) / k
        if self.mode == "sid":
            return np.exp(np.log(lo) + u * (np.log(hi) - np.log(lo)) / k)
        bin_size = 2 * (hi - lo) / (k * (k + 1))
        return lo + bin_size * u * (u + 1) / 2

    def edges(self) -> np.ndarray:
        """(K+1,) bin edges, edge_0 = depth_min, edge_K = depth_max (docs/method.md, 'Bins')."""
        return self.from_coord(np.arange(self.num_bins + 1, dtype=np.float64))

    def centres(self) -> np.ndarray:
        """(K,) bin centres, the depth at u = k + 0.5 (for rpd: f·h / (r_hi − (k+0.5)·Δr))."""
        return self.from_coord(np.arange(self.num_bins, dtype=np.float64) + 0.5)


@dataclass(frozen=True)
class RpdSettings:
    """The ``rpd:`` config section (docs/method.md, 'Road Plane Discretization'): the bin layout and the
    target rule.

    The one parse of that section; the dataset (targets), the criterion (soft targets) and the
    detector builder (K + 1 logits) all read it from here.

    Attributes:
        mode, depth_min, depth_max, num_bins, focal, camera_height: the :class:`DepthBins`.
        supervise_beyond: cells without depth or outside the range target the extra bin K
            instead of being masked out (:func:`soft_targets`).
    """

    mode: str
    depth_min: float
    depth_max: float
    num_bins: int
    focal: float
    camera_height: float
    supervise_beyond: bool

    def __post_init__(self) -> None:
        _ = self.bins  # DepthBins checks the values (ConfigError naming rpd.<key>) at parse time

    @property
    def bins(self) -> DepthBins:
        """The bin layout these settings describe."""
        return DepthBins(
            self.mode, self.depth_min, self.depth_max, self.num_bins, self.focal, self.camera_height
        )

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> RpdSettings:
        """The ``rpd`` section of a resolved config (:func:`lib.config.load_config`)."""
        return section_settings(cls, cfg["rpd"], name="rpd")


def downsample_depth(depth: np.ndarray, stride: int) -> np.ndarray:
    """Mean of the valid (> 0) depths in each stride×stride cell; 0 where a cell has none.

    Empty pixels never mix in (docs/method.md, 'Targets from projected LiDAR'). Rows/columns beyond a whole
    number of cells are dropped.

    Args:
        depth: (H, W) metres, 0 = no LiDAR return.

    Returns:
        (H // stride, W // stride) float32.
    """
    h, w = depth.shape[0] // stride, depth.shape[1] // stride
    # float32 throughout: a cell sums at most stride² depths <= ~100 m, so the mean is within
    # ~1e-7 relative of a float64 one, at 2.5x the speed (the data loader's hot path).
    cells = np.asarray(depth[: h * stride, : w * stride], dtype=np.float32).reshape(h, stride, w, stride)
    valid = cells > 0
    count = valid.sum(axis=(1, 3), dtype=np.float32)
    total = np.where(valid, cells, np.float32(0.0)).sum(axis=(1, 3))
    return np.where(count > 0, total / np.maximum(count, 1), np.float32(0.0)).astype(np.float32)


def rpd_valid(
    depth: np.ndarray | torch.Tensor, bins: DepthBins, *, supervise_beyond: bool = False
) -> np.ndarray | torch.Tensor:
    """Cells that get a depth-bin target (docs/method.md, 'Targets from projected LiDAR'): depth in
    [depth_min, depth_max], or every cell with ``supervise_beyond`` (the others then target the extra bin K).
    Same library as ``depth``; bool."""
    return ((depth >= bins.depth_min) & (depth <= bins.depth_max)) | supervise_beyond


def soft_targets(
    depth: np.ndarray | torch.Tensor, bins: DepthBins, *, supervise_beyond: bool = False
) -> tuple[np.ndarray, np.ndarray] | tuple[torch.Tensor, torch.Tensor]:
    """Soft two-hot RPD targets for depths already at the feature grid (docs/method.md, 'Targets from
    projected LiDAR').

    With t = u(z) − 0.5 clamped to [0, K−1], bins ⌊t⌋ and ⌊t⌋+1 get 1 − frac(t) and frac(t)
    (for t = K−1 all the weight is on bin K−1). The data loader ships only the (H, W) depth
    (``targets["rpd_depth"]``) and the criterion expands it on the training device: the
    (K+1, H, W) target is ~80x larger. u is computed in float64 either way, so numpy and any
    device give bit-identical float32 targets.

    Args:
        depth: (..., H, W) metres, 0 = no depth (e.g. from :func:`downsample_depth`), numpy or torch.
        bins: the run's :class:`DepthBins`.
        supervise_beyond: put cells without depth or outside [depth_min, depth_max] on the
            extra bin K (valid) instead of masking them out.

    Returns:
        target: (..., K+1, H, W) float32, each valid cell sums to 1. valid: (..., H, W) bool.
        numpy in → numpy out; a tensor in → tensors on its device.
    """
    k = bins.num_bins
    as_numpy = not isinstance(depth, torch.Tensor)
    z = torch.from_numpy(np.asarray(depth, dtype=np.float64)) if as_numpy else depth.double()
    in_range = rpd_valid(z, bins)
    t = (bins.to_coord(torch.where(in_range, z, bins.depth_min)) - 0.5).clamp(0.0, k - 1)
    lower = t.floor().long().clamp_max(k - 2)
    frac = t - lower  # in [0, 1]; 1 only at t = K-1, where all weight goes to the upper bin
    target = torch.zeros((*z.shape[:-2], k + 1, *z.shape[-2:]), dtype=torch.float32, device=z.device)
    zero = torch.zeros((), dtype=z.dtype, device=z.device)
    for index, weight in ((lower, 1.0 - frac), (lower + 1, frac)):  # two different bins per cell
        target.scatter_(-3, index.unsqueeze(-3), torch.where(in_range, weight, zero).float().unsqueeze(-3))
    if supervise_beyond:
        target.select(-3, k).masked_fill_(~in_range, 1.0)
    valid = rpd_valid(z, bins, supervise_beyond=supervise_beyond)
    return (target.numpy(), valid.numpy()) if as_numpy else (target, valid)


def expected_depth(
    probs: np.ndarray | torch.Tensor, bins: DepthBins, axis: int = 0, space: str = "depth"
) -> np.ndarray | torch.Tensor:
    """Expected depth of bin probabilities (docs/method.md, 'Targets from projected LiDAR'), numpy or torch.

    ``space="depth"`` (METHOD's definition, the default): Σ_k p_k · centre_k. It interpolates
    linearly in metres between centres, so a two-hot target decodes up to ~2.8 % off (at
    ~54 m; over 1 % beyond ~37 m) for rpd K=80. ``space="bin"``: the expected bin coordinate
    Σ_k p_k · (k + 0.5) mapped back to metres, which inverts a two-hot target exactly. The
    beyond bin K carries no depth: the K depth-bin probabilities are renormalised.

    Args:
        probs: probabilities with K+1 entries along ``axis``.

    Returns:
        Depth in metres with ``axis`` removed (same library as the input; a torch result in
        bin space is detached, it is for metrics and plots).
    """
    if space not in ("depth", "bin"):
        raise ValueError(f"space must be 'depth' or 'bin', got {space!r}")
    k = bins.num_bins
    values = bins.centres() if space == "depth" else np.arange(k, dtype=np.float64) + 0.5
    if isinstance(probs, torch.Tensor):
        p = probs.movedim(axis, -1)[..., :k]
        v = torch.as_tensor(values, dtype=p.dtype, device=p.device)
        mean = (p * v).sum(-1) / p.sum(-1).clamp_min(1e-12)
        if space == "depth":
            return mean
        return torch.as_tensor(
            bins.from_coord(mean.detach().cpu().double().numpy()), dtype=p.dtype, device=p.device
        )
    p = np.moveaxis(np.asarray(probs, dtype=np.float64), axis, -1)[..., :k]
    mean = (p * values).sum(-1) / np.maximum(p.sum(-1), 1e-12)
    return mean if space == "depth" else bins.from_coord(mean)
