"""Seeded weights and inputs shared by the reference drivers and our parity tests (docs/parity.md).

The networks are too large to store (20 M parameters), so both sides re-create the same weights
from a seed: :func:`seeded_state_dict` walks a state_dict in sorted-key order and fills every
tensor from one seeded ``torch.Generator``. A reference network and ours have the same parameter
names and shapes, so they receive the same numbers; a checksum stored in each fixture proves it.

This file imports only numpy and torch: the reference drivers load it by file path inside a
process whose ``lib`` package is the reference's, not ours.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

# Class mean sizes [h, w, l] (m) as GUPNet and MonoSKD pass them to their models (docs/reference.md, 'Class
# mean sizes [h, w, l] in metres').
REFERENCE_MEAN_SIZE = np.array(
    [
        [1.76255119, 0.66068622, 0.84422524],
        [1.52563191462, 1.62856739989, 3.88311640418],
        [1.73698127, 0.59706367, 1.76282397],
    ],
    dtype=np.float32,
)

SIZE_2D_BIAS = 6.0  # added to the size_2d output bias: RoIs ~6 feature px (24 input px) wide
# Variance gain of the conv weights, N(0, gain / fan_in): with the seeded BN statistics the
# DLA-34 + DLAUp features stay O(1) in eval mode (2.0 grows them ~10x per level, 1.0 shrinks them).
WEIGHT_GAIN = 1.6
INPUT_SHAPE = (2, 3, 96, 320)  # batch of two small images (multiples of 32)


def seeded_state_dict(state: Mapping[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Deterministic values for every tensor of ``state``, by sorted key, from ``seed``.

    Rules (chosen so that a deep ReLU network stays in a sane numeric range in eval mode):
    ``mean_size`` is kept; ``num_batches_tracked`` = 0; ``running_var`` ~ U[0.5, 1.5);
    ``running_mean`` ~ 0.1·N(0, 1); weights with >= 2 dims ~ N(0, WEIGHT_GAIN / fan_in);
    1-dim ``weight`` (BatchNorm) ~ 1 + 0.1·N; biases ~ 0.1·N, plus 6 on ``size_2d.2.bias``.

    Args:
        state: a model's state_dict (names and shapes; values are ignored).
        seed: generator seed.

    Returns:
        a new state_dict on the CPU with the same keys, shapes and dtypes.
    """
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key in sorted(state):
        ref = state[key]
        shape = tuple(ref.shape)
        if key == "mean_size":
            value = ref.detach().cpu().clone()
        elif not ref.dtype.is_floating_point:
            value = torch.zeros(shape, dtype=ref.dtype)
        elif key.endswith("running_var"):
            value = 0.5 + torch.rand(shape, generator=gen)
        elif key.endswith("running_mean"):
            value = 0.1 * torch.randn(shape, generator=gen)
        elif len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            value = torch.randn(shape, generator=gen) * math.sqrt(WEIGHT_GAIN / fan_in)
        elif key.endswith("weight"):
            value = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        else:
            value = 0.1 * torch.randn(shape, generator=gen)
            if key.endswith("size_2d.2.bias"):
                value = value + SIZE_2D_BIAS
        out[key] = value.to(ref.dtype)
    return out


def state_checksum(state: Mapping[str, torch.Tensor]) -> np.ndarray:
    """(2,) float64 [sum, sum of squares] over every floating tensor: proves identical weights."""
    total = sum(float(v.double().sum()) for v in state.values() if v.dtype.is_floating_point)
    squares = sum(float(v.double().pow(2).sum()) for v in state.values() if v.dtype.is_floating_point)
    return np.array([total, squares], dtype=np.float64)


def seeded_images(seed: int, shape: tuple[int, ...] = INPUT_SHAPE) -> torch.Tensor:
    """(B, 3, H, W) float32 N(0, 1) images (normalised-input scale) from ``seed``."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz file (no pickles)."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Compressed .npz; float64 arrays stored as float32 except keys ending in ``checksum``."""
    packed = {}
    for k, v in arrays.items():
        v = np.asarray(v)
        if v.dtype == np.float64 and not k.endswith("checksum"):
            v = v.astype(np.float32)
        packed[k] = v
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **packed)
    tmp.replace(path)
