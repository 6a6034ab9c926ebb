"""DLA-34 backbone (Yu et al., "Deep Layer Aggregation", CVPR 2018), as GUPNet uses it.

Written here from docs/reference.md, 'Backbone: DLA-34', with GUPNet's module names (``base_layer``,
``level0..5``, ``tree1/tree2/root/project``, ``fc``) so that GUPNet checkpoints and the ImageNet DLA-34 file
load without renaming. This is the original DLA (plain convolutions, no DCN, no residual root).

Two facts of the reference network kept for checkpoint compatibility:
* ``fc`` (1x1 conv 512 -> 1000, the ImageNet classifier) is never used by the detector.
* In the two-level trees (``level3``, ``level4``) the top-level ``project`` is never used: the
  first sub-tree builds its own projected residual. Its weights stay in the state_dict.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# docs/reference.md, 'Backbone: DLA-34': levels per stage and channels per stage.
DLA34_LEVELS = (1, 1, 1, 2, 2, 1)
DLA34_CHANNELS = (16, 32, 64, 128, 256, 512)
IMAGENET_CLASSES = 1000


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN layers with an identity (or given) residual, ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        residual = x if residual is None else residual
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class Root(nn.Module):
    """Aggregation node: 1x1 conv + BN + ReLU on the concatenated children."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, stride=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, *children: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(torch.cat(children, dim=1))))


class Tree(nn.Module):
    """A hierarchical aggregation tree of ``levels`` levels (DLA's HDA block).

    A one-level tree runs two blocks and aggregates them (plus any ``children`` handed down)
    in its ``root``. A deeper tree runs a sub-tree, then hands its output (and, with
    ``level_root``, the down-sampled input) to the second sub-tree's root.
    """

    def __init__(
        self,
        levels: int,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        level_root: bool = False,
        root_dim: int = 0,
    ) -> None:
        super().__init__()
        root_dim = root_dim or 2 * out_channels
        if level_root:
            root_dim += in_channels
        self.levels = levels
        self.level_root = level_root
        if levels == 1:
            self.tree1 = BasicBlock(in_channels, out_channels, stride=stride)
            self.tree2 = BasicBlock(out_channels, out_channels)
            self.root = Root(root_dim, out_channels)
        else:
            self.tree1 = Tree(levels - 1, in_channels, out_channels, stride=stride)
            self.tree2 = Tree(levels - 1, out_channels, out_channels, root_dim=root_dim + out_channels)
        self.downsample = nn.MaxPool2d(stride, stride=stride) if stride > 1 else None
        self.project = None
        if in_channels != out_channels:
            self.project = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=1, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor, children: list[torch.Tensor] | None = None) -> torch.Tensor:
        children = [] if children is None else children
        bottom = self.downsample(x) if self.downsample is not None else x
        if self.level_root:
            children.append(bottom)
        if self.levels == 1:
            residual = self.project(bottom) if self.project is not None else bottom
            x1 = self.tree1(x, residual)
            x2 = self.tree2(x1)
            return self.root(x2, x1, *children)
        # The sub-tree projects its own residual; this tree's `project` stays unused (module doc).
        x1 = self.tree1(x)
        children.append(x1)
        return self.tree2(x1, children)


def _conv_level(in_channels: int, out_channels: int, *, stride: int) -> nn.Sequential:
    """``level0`` / ``level1``: one 3x3 conv + BN + ReLU (DLA-34 has one conv per level)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DLA34(nn.Module):
    """DLA-34 returning all six levels (strides 1, 2, 4, 8, 16, 32; docs/reference.md, 'Backbone: DLA-34').

    Attributes:
        channels: channels of the returned levels, (16, 32, 64, 128, 256, 512).
        strides: their strides w.r.t. the input, (1, 2, 4, 8, 16, 32).
    """

    channels = DLA34_CHANNELS
    strides = (1, 2, 4, 8, 16, 32)

    def __init__(self) -> None:
        super().__init__()
        c = DLA34_CHANNELS
        self.base_layer = nn.Sequential(
            nn.Conv2d(3, c[0], 7, stride=1, padding=3, bias=False),
            nn.BatchNorm2d(c[0]),
            nn.ReLU(inplace=True),
        )
        self.level0 = _conv_level(c[0], c[0], stride=1)
        self.level1 = _conv_level(c[0], c[1], stride=2)
        self.level2 = Tree(DLA34_LEVELS[2], c[1], c[2], stride=2, level_root=False)
        self.level3 = Tree(DLA34_LEVELS[3], c[2], c[3], stride=2, level_root=True)
        self.level4 = Tree(DLA34_LEVELS[4], c[3], c[4], stride=2, level_root=True)
        self.level5 = Tree(DLA34_LEVELS[5], c[4], c[5], stride=2, level_root=True)
        self.fc = nn.Conv2d(c[5], IMAGENET_CLASSES, 1, stride=1, padding=0, bias=True)
        self._init_weights()

    def _init_weights(self) -> None:
        """He-normal convs (fan-out), BN weight 1 / bias 0: DLA's own init."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> six maps; for 384x1280: 16@384x1280 ... 512@12x40."""
        x = self.base_layer(x)
        levels = []
        for level in (self.level0, self.level1, self.level2, self.level3, self.level4, self.level5):
            x = level(x)
            levels.append(x)
        return levels
