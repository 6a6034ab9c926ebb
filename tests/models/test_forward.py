"""Forward outputs (lib/models/detector.py): train (GT RoIs) and eval (top-K) modes, both model types."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lib.config import load_config
from lib.depth_bins import RpdSettings
from lib.models import DIDM3D, Detector, GUPNet, ModelSettings, build_detector

REPO = Path(__file__).resolve().parents[2]
DID_MAPS = ("vis_depth", "att_depth", "vis_depth_uncer", "att_depth_uncer", "ins_depth", "ins_depth_uncer")


def _run(model: torch.nn.Module, batch: dict, *, with_targets: bool, topk: int = 50) -> dict:
    return model(
        batch["rgb"],
        calib=batch["calib"],
        coord_range=batch["coord_range"],
        targets=batch["targets"] if with_targets else None,
        topk=topk,
    )


def _check_roi_shapes(out: dict, n: int, model_type: str) -> None:
    assert out["roi_batch_idx"].shape == out["roi_cls"].shape == (n,)
    assert out["roi_batch_idx"].dtype == out["roi_cls"].dtype == torch.int64
    assert out["offset_3d"].shape == (n, 2)
    assert out["size_3d"].shape == (n, 3)
    assert out["heading"].shape == (n, 24)
    assert out["depth"].shape == (n, 2)
    assert out["depth_confidence"].shape == (n,)
    assert ((out["depth_confidence"] >= 0) & (out["depth_confidence"] <= 1)).all()
    if model_type == "gupnet":
        assert out["h3d_log_variance"].shape == (n, 1)
        assert not any(k in out for k in DID_MAPS)
    else:
        assert "h3d_log_variance" not in out
        for key in DID_MAPS:
            assert out[key].shape == (n, 7, 7)


@pytest.mark.parametrize("model_type", ["gupnet", "did"])
def test_train_mode_uses_gt_objects(
    model_type: str, fake_batch: Callable[..., dict], make_detector: Callable[..., Detector]
) -> None:
    model = make_detector(type=model_type).train()
    batch = fake_batch(num_objects=(3, 2))
    with torch.no_grad():
        out = _run(model, batch, with_targets=True)
    assert out["heatmap"].shape == (2, 3, 24, 80)
    assert out["offset_2d"].shape == out["size_2d"].shape == (2, 2, 24, 80)
    assert out["depth_logits"].shape == (2, 81, 24, 80)
    assert [tuple(f.shape[1:]) for f in out["features"]] == [
        (64, 24, 80),
        (128, 12, 40),
        (256, 6, 20),
        (512, 3, 10),
    ]
    assert "topk" not in out
    _check_roi_shapes(out, 5, model_type)
    assert out["roi_batch_idx"].tolist() == [0, 0, 0, 1, 1]  # (b, m) row-major
    assert out["roi_cls"].tolist() == batch["targets"]["cls_ids"][batch["targets"]["mask_2d"]].tolist()


@pytest.mark.parametrize("model_type", ["gupnet", "did"])
def test_eval_mode_uses_topk_peaks(
    model_type: str, fake_batch: Callable[..., dict], make_detector: Callable[..., Detector]
) -> None:
    model = make_detector(type=model_type, depth_branch=False).eval()
    with torch.no_grad():
        out = _run(model, fake_batch(2, 64, 128), with_targets=False, topk=10)
    assert "depth_logits" not in out
    topk = out["topk"]
    for key in ("scores", "cls", "xs", "ys", "indices"):
        assert topk[key].shape == (2, 10)
    assert (topk["scores"][:, :-1] >= topk["scores"][:, 1:]).all()
    assert torch.equal(topk["indices"], topk["ys"] * 32 + topk["xs"])
    _check_roi_shapes(out, 20, model_type)
    assert out["roi_batch_idx"].tolist() == [0] * 10 + [1] * 10
    assert torch.equal(out["roi_cls"], topk["cls"].flatten())


def test_full_resolution_batch(
    fake_batch: Callable[..., dict], make_detector: Callable[..., Detector]
) -> None:
    """The one 384x1280 forward (default type did, depth branch on): stride-4 maps are 96x320."""
    model = make_detector().train()
    batch = fake_batch(1, 384, 1280, num_objects=(4,))
    with torch.no_grad():
        out = _run(model, batch, with_targets=True)
    assert out["heatmap"].shape == (1, 3, 96, 320)
    assert out["depth_logits"].shape == (1, 81, 96, 320)
    assert [f.shape[-2:] for f in out["features"]] == [(96, 320), (48, 160), (24, 80), (12, 40)]
    _check_roi_shapes(out, 4, "did")


@pytest.mark.parametrize("model_type", ["gupnet", "did"])
def test_full_resolution_batch_equals_its_images_alone(
    model_type: str, fake_batch: Callable[..., dict], make_detector: Callable[..., Detector]
) -> None:
    """Eval mode at 384x1280: each image of a batch of 2 gets the peaks (cells of the 96x320 map)
    and RoI outputs it gets alone, so flat indices and RoI batch offsets use the full-size map."""
    torch.manual_seed(0)
    model = make_detector(type=model_type, backbone="resnet18", head_conv=32, depth_branch=False).eval()
    batch = fake_batch(2, 384, 1280, num_objects=(0, 0), seed=1)
    keys = ("offset_3d", "size_3d", "heading", "depth", "depth_confidence")
    with torch.no_grad():
        both = _run(model, batch, with_targets=False, topk=8)
        for i in range(2):
            alone = {k: batch[k][i : i + 1] for k in ("rgb", "calib", "coord_range")}
            one = _run(model, {**alone, "targets": None}, with_targets=False, topk=8)
            for key in ("xs", "ys", "cls"):
                assert torch.equal(both["topk"][key][i], one["topk"][key][0]), key
            torch.testing.assert_close(
                both["topk"]["scores"][i], one["topk"]["scores"][0], rtol=1e-4, atol=1e-6
            )
            for key in keys:
                torch.testing.assert_close(
                    both[key][8 * i : 8 * i + 8], one[key], rtol=1e-3, atol=1e-4, msg=key
                )
    topk = both["topk"]
    assert (topk["xs"] < 320).all() and (topk["ys"] < 96).all()
    assert torch.equal(topk["indices"], topk["ys"] * 320 + topk["xs"])
    assert len(set(topk["indices"][0].tolist()) ^ set(topk["indices"][1].tolist())) > 0  # distinct images


@pytest.mark.parametrize("model_type", ["gupnet", "did"])
def test_no_objects_gives_empty_rows(
    model_type: str, fake_batch: Callable[..., dict], make_detector: Callable[..., Detector]
) -> None:
    model = make_detector(type=model_type, backbone="resnet18", head_conv=32).train()
    out = _run(model, fake_batch(num_objects=(0, 0)), with_targets=True)
    _check_roi_shapes(out, 0, model_type)
    out["heatmap"].sum().backward()  # the graph stays usable
    running = [m.running_var for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.isfinite(v).all() for v in running)


# DLA-34 parameters that no output depends on (module doc of backbones/dla.py); ResNet-18 has none.
DLA_UNUSED = {
    "backbone.fc", "backbone.level3.project.0", "backbone.level3.project.1",
    "backbone.level4.project.0", "backbone.level4.project.1",
}  # fmt: skip


@pytest.mark.parametrize(("model_type", "backbone"), [("gupnet", "dla34"), ("did", "resnet18")])
def test_gradients_reach_every_trainable_parameter(
    model_type: str, backbone: str, fake_batch: Callable[..., dict], make_detector: Callable[..., Detector]
) -> None:
    """Backward of the sum of all outputs reaches every trainable parameter but DLA's unused ones."""
    model = make_detector(type=model_type, backbone=backbone).train()
    out = _run(model, fake_batch(2, 64, 128, num_objects=(2, 1)), with_targets=True)
    assert [tuple(f.shape[1:]) for f in out["features"]] == [
        (64, 16, 32),
        (128, 8, 16),
        (256, 4, 8),
        (512, 2, 4),
    ]
    _check_roi_shapes(out, 3, model_type)
    total = sum(v.sum() for v in out.values() if torch.is_tensor(v) and v.is_floating_point())
    total = total + sum(f.sum() for f in out["features"])
    assert torch.isfinite(total)
    total.backward()
    no_grad = {
        name.rsplit(".", 1)[0]
        for name, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    }
    assert no_grad == (DLA_UNUSED if backbone == "dla34" else set())
    assert model.mean_size.grad is None


def test_bad_inputs_are_named(
    fake_batch: Callable[..., dict], make_detector: Callable[..., Detector]
) -> None:
    model = make_detector(backbone="resnet18", depth_branch=False)
    batch = fake_batch()
    with pytest.raises(ValueError, match="multiples of 32, got 90x320"):
        model(batch["rgb"][:, :, :90], calib=batch["calib"], coord_range=batch["coord_range"])
    with pytest.raises(ValueError, match=r"calib must have shape \(2, 3, 4\)"):
        model(batch["rgb"], calib=batch["calib"][:, :, :3], coord_range=batch["coord_range"])
    with pytest.raises(ValueError, match=r"coord_range must have shape \(2, 2, 2\)"):
        model(batch["rgb"], calib=batch["calib"], coord_range=batch["coord_range"][:1])
    with pytest.raises(ValueError, match="3 channels \\(or 1 for a depth map\\), got 2"):
        model(batch["rgb"][:, :2], calib=batch["calib"], coord_range=batch["coord_range"])


def test_a_one_channel_depth_map_equals_it_repeated_in_three(make_detector: Callable[..., Detector]) -> None:
    torch.manual_seed(0)
    model = make_detector(backbone="resnet18", head_conv=16, input="depth").eval()
    depth = torch.rand(2, 1, 64, 128) * 0.5
    kw = {
        "calib": torch.eye(3, 4).expand(2, 3, 4) * 700,
        "coord_range": torch.tensor([[0.0, 0], [128, 64]]).expand(2, 2, 2),
        "topk": 50,
    }
    with torch.no_grad():
        one, three = model(depth, **kw), model(depth.repeat(1, 3, 1, 1), **kw)
    for key in ("heatmap", "size_2d", "depth_logits", "depth"):
        torch.testing.assert_close(one[key], three[key], rtol=0, atol=0, msg=key)


def from_config(path: Path, overrides: list[str]) -> Detector:
    cfg = load_config(path, overrides)
    return build_detector(ModelSettings.from_config(cfg), RpdSettings.from_config(cfg))


def test_teacher_and_student_from_one_builder(make_detector: Callable[..., Detector]) -> None:
    off = ["model.pretrained=false", "model.backbone=resnet18"]
    teacher = from_config(REPO / "configs/teacher.yaml", off)
    student = from_config(REPO / "configs/student.yaml", off)
    assert type(teacher) is type(student) is DIDM3D
    assert (teacher.input_key, student.input_key) == ("depth", "rgb")
    assert teacher.state_dict().keys() == student.state_dict().keys()
    gup = from_config(REPO / "configs/student.yaml", [*off, "model.type=gupnet"])
    assert isinstance(gup, GUPNet)
    with pytest.raises(ValueError, match="model.type: unknown detector 'yolo'"):
        make_detector(type="yolo")
    with pytest.raises(ValueError, match="model.input must be one of"):
        make_detector(backbone="resnet18", input="lidar")


def test_models_never_call_cuda() -> None:
    sources = [*sorted((REPO / "lib/models").rglob("*.py")), REPO / "tools/inspect_model.py"]
    offenders = [str(p) for p in sources if ".cuda(" in p.read_text()]
    assert offenders == []


def test_without_targets_the_detector_needs_topk(make_detector: Callable[..., Detector]) -> None:
    model = make_detector(backbone="resnet18", head_conv=16).eval()
    calib, window = torch.eye(3, 4).expand(1, 3, 4) * 700, torch.tensor([[[0.0, 0], [128, 64]]])
    kw = {"calib": calib, "coord_range": window}
    with torch.no_grad(), pytest.raises(ValueError, match="needs topk"):
        model(torch.rand(1, 3, 64, 128), **kw)
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 128), **kw, topk=7)["topk"]["scores"].shape == (1, 7)


def test_roi_input_scale_is_the_input_height_over_the_crop_window(
    fake_batch: Callable[..., dict], make_detector: Callable[..., Detector], monkeypatch
) -> None:
    """``model.vis_depth_scale: window`` scales the visual depth by input px per original px: the
    96 px input height over each image's window height (300 and 150 original px here)."""
    import lib.models.did as did

    seen = []
    original = did.visual_depth_scale

    def recording(rois, mode: str) -> torch.Tensor:
        seen.append(rois)
        return original(rois, mode)

    monkeypatch.setattr(did, "visual_depth_scale", recording)
    batch = fake_batch(num_objects=(2, 1))
    batch["coord_range"] = torch.tensor([[[0.0, 0.0], [1000.0, 300.0]], [[100.0, 50.0], [600.0, 200.0]]])
    with torch.no_grad():
        _run(make_detector(type="did"), batch, with_targets=True)
    assert batch["rgb"].shape[-2] == 96
    torch.testing.assert_close(seen[0].input_scale, torch.tensor([96 / 300, 96 / 300, 96 / 150]))
