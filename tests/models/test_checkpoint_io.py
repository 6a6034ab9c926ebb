"""Strict checkpoint loading (docs/reference.md, 'Checkpoint format') and ImageNet backbone weights
(docs/reference.md, 'Backbone: DLA-34')."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lib.config import load_config
from lib.depth_bins import RpdSettings
from lib.errors import UserError
from lib.models import (
    CheckpointMismatchError,
    ModelSettings,
    build_detector,
    load_model_state,
    load_pretrained_backbone,
)
from lib.models.backbones import DLA34
from lib.models.checkpoint_io import BackboneWeightsError, CheckpointError

BASE = load_config(Path(__file__).resolve().parents[2] / "configs" / "base.yaml")


def _detector(**changes: object) -> torch.nn.Module:
    """configs/base.yaml's detector with ``changes`` to its model section; no ImageNet weights
    unless ``pretrained=True`` is among them."""
    model = replace(ModelSettings.from_config(BASE), pretrained=False)
    return build_detector(replace(model, **changes), RpdSettings.from_config(BASE))


def _small(model_type: str = "did", **kwargs) -> torch.nn.Module:
    return _detector(type=model_type, backbone="resnet18", head_conv=16, depth_branch_channels=16, **kwargs)


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_round_trip_of_our_checkpoint(tmp_path: Path) -> None:
    src, dst = _small(), _small()
    path = tmp_path / "ckpt.pth"
    torch.save({"model_state": src.state_dict(), "epoch": 3, "optimizer_state": {}}, path)
    report = load_model_state(dst, path)
    assert report.ok and not report.optional_missing and not report.optional_ignored
    _assert_same_state(src, dst)


def test_plain_and_data_parallel_state_dicts(tmp_path: Path) -> None:
    src = _small("gupnet")
    path = tmp_path / "plain.pth"
    torch.save(src.state_dict(), path)
    dst = _small("gupnet")
    load_model_state(dst, path)
    _assert_same_state(src, dst)
    wrapped = {f"module.{k}": v for k, v in src.state_dict().items()}  # MonoDistill's layout
    dst = _small("gupnet")
    load_model_state(dst, wrapped)
    _assert_same_state(src, dst)


def test_gupnet_layout_without_depth_branch_loads(tmp_path: Path) -> None:
    released = _small("gupnet", depth_branch=False)
    path = tmp_path / "gupnet.pth"
    torch.save({"model_state": released.state_dict(), "epoch": 140}, path)
    model = _small("gupnet", depth_branch=True)
    branch_before = model.depth_branch[2].weight.clone()
    report = load_model_state(model, path)
    assert report.ok
    assert report.optional_missing == [
        "depth_branch.0.weight", "depth_branch.0.bias", "depth_branch.2.weight", "depth_branch.2.bias",
    ]  # fmt: skip
    assert torch.equal(model.depth_branch[2].weight, branch_before)
    assert torch.equal(model.heading[4].weight, released.heading[4].weight)
    assert "depth branch absent" in report.describe()


def test_depth_branch_in_checkpoint_is_ignored_without_branch() -> None:
    trained = _small()
    report = load_model_state(_small(depth_branch=False), {"model_state": trained.state_dict()})
    assert report.ok and len(report.optional_ignored) == 4


def test_wrong_shape_fails_and_names_key() -> None:
    state = _small("gupnet").state_dict()
    state["size_3d.4.weight"] = torch.zeros(3, 16, 1, 1)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"size_3d\.4\.weight \(checkpoint \[3, 16, 1, 1\] vs model \[4, 16, 1, 1\]\)",
    ):
        load_model_state(_small("gupnet"), state)


def test_extra_and_missing_keys_fail_and_are_listed() -> None:
    state = _small().state_dict()
    state["rgb_fs.conv.weight"] = torch.zeros(1)
    del state["heading.4.bias"]
    with pytest.raises(CheckpointMismatchError) as info:
        load_model_state(_small(), state)
    assert info.value.report.unexpected == ["rgb_fs.conv.weight"]
    assert info.value.report.missing == ["heading.4.bias"]
    assert "rgb_fs.conv.weight" in str(info.value) and "heading.4.bias" in str(info.value)


def test_partial_depth_branch_is_an_error() -> None:
    state = _small().state_dict()
    del state["depth_branch.2.bias"]
    with pytest.raises(CheckpointMismatchError) as info:
        load_model_state(_small(), state)
    assert info.value.report.missing == ["depth_branch.2.bias"]


def test_unreadable_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth: not a PyTorch checkpoint"):
        load_model_state(_small(), path)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_model_state(_small(), tmp_path / "absent.pth")


def test_skd_wrapper_gives_the_student_and_refuses_unknown_parts() -> None:
    student, teacher = _small(depth_branch=False), _small(depth_branch=False)
    wrapper = {f"centernet_rgb.{k}": v for k, v in student.state_dict().items()}
    wrapper |= {f"centernet_depth.{k}": v + 1 for k, v in teacher.state_dict().items()}
    wrapper["adapt_layer8.0.weight"] = torch.zeros(1)
    wrapper["rgb_fs.0.conv.weight"] = torch.zeros(1)
    dst = _small(depth_branch=False)
    load_model_state(dst, {"model_state": wrapper, "epoch": 150})
    _assert_same_state(student, dst)
    wrapper["discriminator.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"MonoSKD distillation layout .* unknown keys \(1\): discrim"):
        load_model_state(dst, {"model_state": wrapper})


@pytest.fixture(scope="module")
def imagenet_dla(module_tmp: Path) -> tuple[Path, dict]:
    """A stand-in for dla34-ba72cf86.pth: a DLA-34 state_dict with a 10-class classifier and, like a
    file from PyTorch < 0.4.1, no BatchNorm ``num_batches_tracked`` counters."""
    state = {k: v for k, v in DLA34().state_dict().items() if not k.endswith("num_batches_tracked")}
    state["fc.weight"] = torch.zeros(10, 512, 1, 1)
    state["fc.bias"] = torch.zeros(10)
    path = module_tmp / "dla34-ba72cf86.pth"
    torch.save(state, path)
    return path, state


def test_pretrained_backbone_from_path_keeps_own_fc(imagenet_dla: tuple[Path, dict]) -> None:
    path, state = imagenet_dla
    model = _detector(type="gupnet", depth_branch=False)
    fc_before = model.backbone.fc.weight.clone()
    load_pretrained_backbone(model, str(path))
    assert torch.equal(model.backbone.level5.root.conv.weight, state["level5.root.conv.weight"])
    assert torch.equal(model.backbone.base_layer[1].running_mean, state["base_layer.1.running_mean"])
    assert model.backbone.fc.weight.shape == (1000, 512, 1, 1)
    assert torch.equal(model.backbone.fc.weight, fc_before)


def test_builder_loads_pretrained_from_url(
    imagenet_dla: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, state = imagenet_dla
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    model = _detector(type="did", pretrained=True, backbone_weights=path.as_uri())
    assert torch.equal(model.backbone.level3.tree2.root.conv.weight, state["level3.tree2.root.conv.weight"])
    assert (tmp_path / "torch" / "hub" / "checkpoints" / path.name).is_file()  # cached for next time


def test_offline_download_error_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = (tmp_path / "nowhere" / "dla34-ba72cf86.pth").as_uri()
    model = _detector(type="gupnet", depth_branch=False)
    with pytest.raises(BackboneWeightsError, match="could not be downloaded") as info:
        load_pretrained_backbone(model, url)
    message = str(info.value)
    cache = tmp_path / "torch" / "hub" / "checkpoints" / "dla34-ba72cf86.pth"
    assert f"mkdir -p {cache.parent} && curl -L -o {cache} {url}" in message  # the command, the path
    assert "model.backbone_weights=/path/to/dla34-ba72cf86.pth" in message and "\n" not in message
    missing = tmp_path / "missing.pth"
    with pytest.raises(BackboneWeightsError, match=f"no file at {missing}") as info:
        load_pretrained_backbone(model, str(missing))
    assert f"curl -L -o {missing} http://dl.yf.io/dla/models/imagenet/dla34-ba72cf86.pth" in str(info.value)
    assert isinstance(info.value, UserError)  # a CLI prints one line `error: ...` and exits 2


def test_pretrained_weights_of_another_backbone_fail(imagenet_dla: tuple[Path, dict]) -> None:
    path, _ = imagenet_dla
    with pytest.raises(CheckpointMismatchError, match="unexpected keys") as info:
        load_pretrained_backbone(_small(), str(path))
    assert "ImageNet weights of this backbone (ResNet18); set model.pretrained=false" in str(info.value)
    with pytest.raises(ValueError, match="backbone_weights is empty"):
        _detector(backbone="resnet18", pretrained=True, backbone_weights="")
