"""A light ResNet-18 backbone for CPU work (``model.backbone: resnet18``).

ResNet-18's four stages already sit at strides 4/8/16/32 with 64/128/256/512 channels, exactly
the four maps DLAUp takes from DLA-34, so the neck, the heads and the distillation features are
unchanged; only the backbone is ~4x cheaper. The layers come from torchvision (built with
``weights=None``: nothing is downloaded); names follow torchvision's (``conv1``, ``layer1``, ...)
without the classifier, so torchvision's ImageNet file can be loaded by
``load_pretrained_backbone``.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18


class ResNet18(nn.Module):
    """ResNet-18 returning its four stages (strides 4, 8, 16, 32; 64/128/256/512 channels)."""

    channels = (64, 128, 256, 512)
    strides = (4, 8, 16, 32)

    def __init__(self) -> None:
        super().__init__()
        net = resnet18(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> [64@H/4, 128@H/8, 256@H/16, 512@H/32]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        levels = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            levels.append(x)
        return levels
