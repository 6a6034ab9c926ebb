"""DLA-34, DLAUp and ResNet-18 level shapes, and the bilinear up-sampling init
(docs/reference.md, 'Backbone: DLA-34' to 'Neck: DLAUp')."""

from __future__ import annotations

import pytest
import torch

from lib.models.backbones import DLA34, DLAUp, ResNet18, build_backbone
from lib.models.backbones.dlaup import bilinear_kernel


@pytest.fixture(scope="module")
def dla() -> DLA34:
    return DLA34().eval()


def test_dla34_levels(dla: DLA34) -> None:
    with torch.no_grad():
        levels = dla(torch.randn(1, 3, 64, 128))
    shapes = [tuple(x.shape[1:]) for x in levels]
    assert shapes == [(16, 64, 128), (32, 32, 64), (64, 16, 32), (128, 8, 16), (256, 4, 8), (512, 2, 4)]
    assert dla.channels == (16, 32, 64, 128, 256, 512)
    assert dla.strides == (1, 2, 4, 8, 16, 32)


def test_dlaup_outputs_s4_to_s32(dla: DLA34) -> None:
    neck = DLAUp([64, 128, 256, 512]).eval()
    with torch.no_grad():
        levels = dla(torch.randn(1, 3, 64, 128))[2:]
        features = neck(levels)
    assert [tuple(f.shape[1:]) for f in features] == [(64, 16, 32), (128, 8, 16), (256, 4, 8), (512, 2, 4)]
    assert features[3] is levels[3]  # the s32 feature is the raw deepest level (MonoSKD)


def test_bilinear_kernel_and_up_init() -> None:
    profile = torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(bilinear_kernel(4), profile[:, None] * profile[None, :])
    neck = DLAUp([64, 128, 256, 512])
    up = neck.ida_1.up_2.weight  # (128, 1, 4, 4), every channel the same kernel
    torch.testing.assert_close(up, bilinear_kernel(4).expand_as(up))
    # A stride-2 transposed conv with this kernel up-samples a constant map to the same constant.
    layer = torch.nn.ConvTranspose2d(1, 1, 4, stride=2, padding=1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(bilinear_kernel(4)[None, None])
        out = layer(torch.ones(1, 1, 4, 4))
    torch.testing.assert_close(out[0, 0, 1:-1, 1:-1], torch.ones(6, 6))


def test_resnet18_levels_match_dlaup_input() -> None:
    net = ResNet18().eval()
    with torch.no_grad():
        levels = net(torch.randn(1, 3, 96, 320))
    assert [tuple(x.shape[1:]) for x in levels] == [(64, 24, 80), (128, 12, 40), (256, 6, 20), (512, 3, 10)]
    assert net.strides == (4, 8, 16, 32)
    assert not any(k.startswith("fc.") for k in net.state_dict())


def test_unknown_backbone_is_named() -> None:
    with pytest.raises(ValueError, match="model.backbone: unknown backbone 'vgg'"):
        build_backbone("vgg")
