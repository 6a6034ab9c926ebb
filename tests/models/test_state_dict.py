"""State-dict layout equals GUPNet's / MonoSKD-DID's (docs/reference.md, 'State dict of the default model' and
'The DID-M3D variant used by SKD'): names, shapes, counts."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from lib.constants import MEAN_SIZES
from lib.models import DIDM3D, Detector, GUPNet


@pytest.fixture(scope="module")
def gupnet(make_detector: Callable[..., Detector]) -> GUPNet:
    return make_detector(type="gupnet", depth_branch=False)


@pytest.fixture(scope="module")
def did(make_detector: Callable[..., Detector]) -> DIDM3D:
    return make_detector(type="did", depth_branch=False)


def _prefixes(state: dict) -> list[str]:
    seen: list[str] = []
    for key in state:
        top = key.split(".")[0]
        if top not in seen:
            seen.append(top)
    return seen


def _count(model: torch.nn.Module, prefix: str) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if name.startswith(prefix + "."))


def test_gupnet_entries_and_prefix_order(gupnet: GUPNet) -> None:
    state = gupnet.state_dict()
    assert len(state) == 363
    assert _prefixes(state) == [
        "mean_size", "backbone", "feat_up", "heatmap", "offset_2d", "size_2d",
        "depth", "offset_3d", "size_3d", "heading",
    ]  # fmt: skip
    assert sum(k.startswith("backbone.") for k in state) == 236
    assert sum(k.startswith("feat_up.") for k in state) == 78
    assert sum(k.endswith("num_batches_tracked") for k in state) == 55
    assert {k.split(".")[1] for k in state if k.startswith("backbone.")} == {
        "base_layer", "level0", "level1", "level2", "level3", "level4", "level5", "fc",
    }  # fmt: skip


def test_gupnet_head_shapes(gupnet: GUPNet) -> None:
    state = gupnet.state_dict()
    for name, c in (("heatmap", 3), ("offset_2d", 2), ("size_2d", 2)):
        assert state[f"{name}.0.weight"].shape == (256, 64, 3, 3)
        assert state[f"{name}.0.bias"].shape == (256,)
        assert state[f"{name}.2.weight"].shape == (c, 256, 1, 1)
        assert state[f"{name}.2.bias"].shape == (c,)
    for name, c in (("depth", 2), ("offset_3d", 2), ("size_3d", 4), ("heading", 24)):
        assert state[f"{name}.0.weight"].shape == (256, 69, 3, 3)
        assert state[f"{name}.0.bias"].shape == (256,)
        for stat in ("weight", "bias", "running_mean", "running_var"):
            assert state[f"{name}.1.{stat}"].shape == (256,)
        assert state[f"{name}.1.num_batches_tracked"].shape == ()
        assert state[f"{name}.4.weight"].shape == (c, 256, 1, 1)
        assert state[f"{name}.4.bias"].shape == (c,)
    assert state["mean_size"].shape == (3, 3)
    assert state["backbone.fc.weight"].shape == (1000, 512, 1, 1)


def test_gupnet_neck_shapes(gupnet: GUPNet) -> None:
    state = gupnet.state_dict()
    stages = {0: (1, 256, 512), 1: (2, 128, 256), 2: (3, 64, 128)}  # k: (nodes, out, proj_1 input)
    for k, (nodes, out, proj_in) in stages.items():
        assert state[f"feat_up.ida_{k}.proj_1.conv.weight"].shape == (out, proj_in, 3, 3)
        for j in range(1, nodes + 1):
            assert state[f"feat_up.ida_{k}.up_{j}.weight"].shape == (out, 1, 4, 4)
            assert state[f"feat_up.ida_{k}.node_{j}.conv.weight"].shape == (out, 2 * out, 3, 3)
            assert state[f"feat_up.ida_{k}.proj_{j}.bn.running_var"].shape == (out,)
        assert f"feat_up.ida_{k}.up_{nodes + 1}.weight" not in state
    assert state["feat_up.ida_1.proj_2.conv.weight"].shape == (128, 256, 3, 3)
    assert state["feat_up.ida_2.proj_3.conv.weight"].shape == (64, 128, 3, 3)


def test_gupnet_parameter_counts(gupnet: GUPNet) -> None:
    params = list(gupnet.parameters())
    assert sum(p.numel() for p in params) == 20_871_368
    assert sum(p.numel() for p in params if p.requires_grad) == 20_871_359
    assert sum(p.numel() for p in params) - _count(gupnet, "backbone.fc") == 20_358_368
    expected = {
        "backbone": 15_783_832, "feat_up": 3_995_392, "heatmap": 148_483, "offset_2d": 148_226,
        "size_2d": 148_226, "depth": 160_258, "offset_3d": 160_258, "size_3d": 160_772, "heading": 165_912,
    }  # fmt: skip
    assert {name: _count(gupnet, name) for name in expected} == expected
    bn_stats = sum(
        v.numel() for k, v in gupnet.state_dict().items() if k.endswith(("running_mean", "running_var"))
    )
    assert bn_stats == 21_120


def test_mean_size_is_frozen_parameter(gupnet: GUPNet) -> None:
    names = [name for name, _ in gupnet.named_parameters()]
    assert "mean_size" in names
    assert not gupnet.mean_size.requires_grad
    np.testing.assert_array_equal(gupnet.mean_size.detach().numpy(), MEAN_SIZES)


def test_did_layout(did: DIDM3D) -> None:
    state = did.state_dict()
    assert len(state) == 370
    assert sum(p.numel() for p in did.parameters()) == 21_348_809
    assert _prefixes(state) == [
        "mean_size", "backbone", "feat_up", "heatmap", "offset_2d", "size_2d", "offset_3d", "size_3d",
        "heading", "vis_depth", "att_depth", "vis_depth_uncer", "att_depth_uncer",
    ]  # fmt: skip
    assert not any(k.startswith("depth.") for k in state)
    assert state["size_3d.4.weight"].shape == (3, 256, 1, 1)
    for name in ("vis_depth", "att_depth", "vis_depth_uncer", "att_depth_uncer"):
        assert state[f"{name}.0.weight"].shape == (256, 69, 3, 3)
        assert state[f"{name}.2.weight"].shape == (1, 256, 1, 1)
        assert state[f"{name}.2.bias"].shape == (1,)
        assert _count(did, name) == 159_489


@pytest.mark.parametrize("model_type", ["gupnet", "did"])
def test_depth_branch_present_or_absent(model_type: str, make_detector: Callable[..., Detector]) -> None:
    with_branch = make_detector(type=model_type, backbone="resnet18", num_bins=80)
    state = with_branch.state_dict()
    assert state["depth_branch.0.weight"].shape == (256, 64, 3, 3)
    assert state["depth_branch.2.weight"].shape == (81, 256, 1, 1)
    assert list(state)[-1].startswith("depth_branch.")  # registered last, after GUPNet's own keys
    without = make_detector(type=model_type, backbone="resnet18", depth_branch=False)
    assert without.depth_branch is None
    assert not any(k.startswith("depth_branch") for k in without.state_dict())
    assert len(state) - len(without.state_dict()) == 4


def test_head_initialisation(gupnet: GUPNet) -> None:
    torch.testing.assert_close(gupnet.heatmap[2].bias, torch.full((3,), -2.19))
    assert gupnet.offset_2d[0].weight.std().item() == pytest.approx(0.001, rel=0.05)
    assert gupnet.size_2d[2].bias.abs().max().item() == 0.0
    conv = gupnet.heading[0]
    bound = (6.0 / (69 * 9 + 256 * 9)) ** 0.5  # xavier-uniform
    assert conv.weight.abs().max().item() <= bound
    assert conv.weight.abs().max().item() > 0.9 * bound
    assert conv.bias.abs().max().item() == 0.0
    torch.testing.assert_close(gupnet.depth[1].weight, torch.ones(256))
    # DLA's He-normal (fan-out) init: a 1x1 conv with 512 outputs has std sqrt(2 / 512).
    assert gupnet.backbone.level5.root.conv.weight.std().item() == pytest.approx((2 / 512) ** 0.5, rel=0.05)
