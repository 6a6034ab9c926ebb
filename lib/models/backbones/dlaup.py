"""DLAUp neck (``feat_up``): iterative deep aggregation from stride 32 up to stride 4.

Written from docs/reference.md, 'Neck: DLAUp' with GUPNet's names (``ida_k.proj_j / up_j / node_j``). Stage k
(deepest first) fuses the last k+2 maps: each deeper map is projected to the stage's width
(3x3 conv+BN+ReLU), up-sampled 2x by a depthwise transposed conv with a bilinear init, and merged
with its shallower neighbour by ``node_j`` (3x3 conv+BN+ReLU on the concatenation).

Besides the stride-4 head input it returns, like MonoSKD's DLAUp, the output of every stage plus
the raw deepest map: the four features that distillation uses (docs/reference.md, 'Features and losses').
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class ConvBNReLU(nn.Module):
    """3x3 conv (no bias) + BN + ReLU; attribute names match GUPNet's ``conv`` / ``bn``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def bilinear_kernel(size: int) -> torch.Tensor:
    """(size, size) bilinear interpolation kernel for a transposed conv of stride size/2.

    For size 4 the 1D profile is [0.25, 0.75, 0.75, 0.25] (FCN's up-sampling init).
    """
    factor = math.ceil(size / 2)
    centre = (2 * factor - 1 - factor % 2) / (2.0 * factor)
    profile = 1.0 - (torch.arange(size, dtype=torch.float64) / factor - centre).abs()
    return (profile[:, None] * profile[None, :]).float()


class IDAUp(nn.Module):
    """One aggregation stage: maps 1..n-1 are projected, up-sampled and merged into map 0's grid.

    Args:
        in_channels: channels of the stage's input maps, shallowest first.
        up_factors: each map's stride divided by map 0's stride (1 for map 0).
        out_channels: the stage width (= channels of map 0).
    """

    def __init__(self, in_channels: Sequence[int], up_factors: Sequence[int], out_channels: int) -> None:
        super().__init__()
        self.num_inputs = len(in_channels)
        for j in range(1, self.num_inputs):
            f = int(up_factors[j])
            up = nn.ConvTranspose2d(
                out_channels, out_channels, 2 * f, stride=f, padding=f // 2, groups=out_channels, bias=False
            )
            with torch.no_grad():
                up.weight.copy_(bilinear_kernel(2 * f).expand_as(up.weight))
            setattr(self, f"proj_{j}", ConvBNReLU(in_channels[j], out_channels))
            setattr(self, f"up_{j}", up)
            setattr(self, f"node_{j}", ConvBNReLU(2 * out_channels, out_channels))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # not the transposed convs: they keep the bilinear init
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """Returns the maps with maps[j] (j >= 1) replaced by the fused map at map 0's resolution."""
        out = [maps[0]]
        for j in range(1, self.num_inputs):
            up = getattr(self, f"up_{j}")(getattr(self, f"proj_{j}")(maps[j]))
            out.append(getattr(self, f"node_{j}")(torch.cat([out[j - 1], up], dim=1)))
        return out


class DLAUp(nn.Module):
    """Three IDAUp stages (``ida_0..ida_2``) on maps at strides 4/8/16/32.

    Args:
        in_channels: channels of the input maps, shallowest first (DLA-34: 64, 128, 256, 512).

    Forward returns ``[s4, s8, s16, s32]``: the stride-4 head input (``in_channels[0]`` ch), the
    outputs of the s8 and s16 stages, and the raw deepest input map (docs/reference.md, 'Neck: DLAUp' and
    'Features and losses').
    """

    def __init__(self, in_channels: Sequence[int]) -> None:
        super().__init__()
        channels = list(in_channels)
        scales = [2**i for i in range(len(channels))]
        self.num_stages = len(channels) - 1
        for k in range(self.num_stages):
            j = len(channels) - k - 2  # index of the stage's shallowest map
            factors = [s // scales[j] for s in scales[j:]]
            setattr(self, f"ida_{k}", IDAUp(channels[j:], factors, channels[j]))
            # After the stage every deeper map lives on map j's grid with map j's width.
            scales[j + 1 :] = [scales[j]] * (len(scales) - j - 1)
            channels[j + 1 :] = [channels[j]] * (len(channels) - j - 1)

    def forward(self, maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """maps: strides 4..32, shallowest first -> [s4, s8, s16, s32] (see class doc)."""
        maps = list(maps)
        features = [maps[-1]]  # raw s32
        for k in range(self.num_stages):
            j = len(maps) - k - 2
            maps[j:] = getattr(self, f"ida_{k}")(maps[j:])
            features.append(maps[-1])  # fused map at stride of map j
        return features[::-1]
