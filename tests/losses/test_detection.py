"""Detection loss terms (docs/reference.md, 'GUPNet losses' and 'The DID-M3D variant used by SKD') against
hand-computed values; the DetectionLoss and Criterion wrappers on hand-made batches (no model or dataset
needed)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lib.config import load_config
from lib.depth_bins import DepthBins, RpdSettings, rpd_valid, soft_targets
from lib.losses.criterion import HTL_TASKS, Criterion, LossSettings
from lib.losses.depth_branch import depth_branch_loss
from lib.losses.detection import (
    DetectionLoss,
    did_depth_loss,
    gather_at_indices,
    heading_loss,
    heatmap_focal_loss,
    l1_loss,
    laplacian_uncertainty_loss,
    size3d_loss_gupnet,
)

REPO = Path(__file__).resolve().parents[2]


def logit(p: float) -> float:
    return math.log(p / (1 - p))


# ---------------------------------------------------------------- single terms


def test_focal_loss_2x2_by_hand() -> None:
    probs = [[0.5, 0.2], [0.9, 0.1]]
    gt = torch.tensor([[[[1.0, 0.5], [0.0, 0.0]]]])
    logits = torch.tensor([[[[logit(p) for p in row] for row in probs]]])
    # one positive: -(1-0.5)^2 log 0.5; negatives: -p^2 (1-y)^4 log(1-p); / 1 positive
    expected = (
        -(0.5**2) * math.log(0.5)
        - 0.2**2 * 0.5**4 * math.log(0.8)
        - 0.9**2 * math.log(0.1)
        - 0.1**2 * math.log(0.9)
    )
    assert heatmap_focal_loss(logits, gt).item() == pytest.approx(expected, rel=1e-5)


def test_focal_loss_divides_by_positive_count_over_the_batch() -> None:
    gt = torch.zeros(2, 1, 1, 2)
    gt[0, 0, 0, 0] = 1.0
    gt[1, 0, 0, 1] = 1.0
    logits = torch.full((2, 1, 1, 2), logit(0.25))
    # two positives -(0.75^2) log 0.25, two negatives -(0.25^2) log 0.75, sum / 2
    expected = (2 * -(0.75**2) * math.log(0.25) + 2 * -(0.25**2) * math.log(0.75)) / 2
    assert heatmap_focal_loss(logits, gt).item() == pytest.approx(expected, rel=1e-5)


def test_focal_loss_without_positives_is_the_negative_sum() -> None:
    gt = torch.full((1, 2, 2, 1), 0.5)
    logits = torch.zeros(1, 2, 2, 1)
    expected = 4 * -(0.5**2) * 0.5**4 * math.log(0.5)
    assert heatmap_focal_loss(logits, gt).item() == pytest.approx(expected, rel=1e-5)


def test_focal_loss_clamps_the_probability() -> None:
    gt = torch.tensor([[[[1.0, 0.0]]]])
    logits = torch.tensor([[[[100.0, -100.0]]]], requires_grad=True)
    eps = 1e-4
    expected = -(eps**2) * math.log(1 - eps) * 2  # both cells sit at the clamp
    loss = heatmap_focal_loss(logits, gt)
    assert loss.item() == pytest.approx(expected, rel=1e-3)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_l1_loss_mean_over_objects_and_components() -> None:
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.tensor([[0.0, 2.0], [5.0, 3.0]])
    assert l1_loss(pred, target).item() == pytest.approx((1 + 0 + 2 + 1) / 4)


def test_l1_loss_empty_is_zero_with_grad() -> None:
    pred = torch.zeros(0, 2, requires_grad=True)
    loss = l1_loss(pred * 2, torch.zeros(0, 2))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()


def test_laplacian_loss_by_hand() -> None:
    pred = torch.tensor([[3.0], [1.0]])
    target = torch.tensor([[1.0], [1.0]])
    log_var = torch.tensor([[math.log(4.0)], [0.0]])
    # row 0: sqrt2 * exp(-0.5 ln4) * 2 + 0.5 ln4 = sqrt2 + ln2; row 1: 0 + 0
    expected = (math.sqrt(2) + math.log(2)) / 2
    assert laplacian_uncertainty_loss(pred, target, log_var).item() == pytest.approx(expected, rel=1e-6)


def test_size3d_gupnet_by_hand() -> None:
    pred = torch.tensor([[0.5, 1.0, -1.0]])
    target = torch.tensor([[0.0, 0.0, 0.0]])
    h_log_var = torch.tensor([[0.0]])
    # (2/3) * mean(|1|, |-1|) + (1/3) * sqrt2 * 0.5
    expected = 2 / 3 * 1.0 + math.sqrt(2) * 0.5 / 3
    assert size3d_loss_gupnet(pred, target, h_log_var).item() == pytest.approx(expected, rel=1e-6)


def test_heading_loss_by_hand() -> None:
    heading = torch.zeros(2, 24)
    heading[0, 12 + 3] = 0.1  # residual of the GT bin 3
    heading[0, 12 + 4] = 9.0  # other bins' residuals are ignored
    heading[1, 12 + 0] = -0.2
    target_bin = torch.tensor([3, 0])
    target_res = torch.tensor([0.2, 0.0])
    # uniform logits: CE = ln 12 per object; residual L1 = mean(0.1, 0.2)
    expected = math.log(12) + 0.15
    assert heading_loss(heading, target_bin, target_res).item() == pytest.approx(expected, rel=1e-6)


def test_heading_loss_cross_entropy_term() -> None:
    heading = torch.zeros(1, 24)
    heading[0, 5] = math.log(12.0)  # p(bin 5) = 12 / (12 + 11) = 12/23
    loss = heading_loss(heading, torch.tensor([5]), torch.tensor([0.0]))
    assert loss.item() == pytest.approx(-math.log(12 / 23), rel=1e-6)


def test_did_depth_loss_by_hand() -> None:
    mask = torch.zeros(1, 7, 7, dtype=torch.bool)
    mask[0, 2, 3] = True
    preds = {
        "vis_depth": torch.full((1, 7, 7), 10.0),
        "att_depth": torch.full((1, 7, 7), 1.0),
        "vis_depth_uncer": torch.zeros(1, 7, 7),
        "att_depth_uncer": torch.zeros(1, 7, 7),
    }
    vis_target = torch.full((1, 7, 7), 100.0)  # unmasked cells must not count
    vis_target[0, 2, 3] = 9.0
    att_target = torch.full((1, 7, 7), 100.0)
    att_target[0, 2, 3] = 2.0
    loss = did_depth_loss(
        preds,
        vis_target=vis_target,
        att_target=att_target,
        depth_mask=mask,
        depth_target=torch.tensor([11.0]),
    )
    # vis: sqrt2 * |10-9|; att: sqrt2 * |1-2|; instance 11 = z on all cells, log-var ln(1+1)
    expected = 2 * math.sqrt(2) + 0.5 * math.log(2)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_did_depth_loss_without_lidar_cells_is_the_instance_term() -> None:
    preds = {
        k: torch.zeros(2, 7, 7) for k in ("vis_depth", "att_depth", "vis_depth_uncer", "att_depth_uncer")
    }
    preds["vis_depth"] = preds["vis_depth"] + 5.0
    loss = did_depth_loss(
        preds,
        vis_target=torch.zeros(2, 7, 7),
        att_target=torch.zeros(2, 7, 7),
        depth_mask=torch.zeros(2, 7, 7, dtype=torch.bool),
        depth_target=torch.tensor([5.0, 6.0]),
    )
    scale = math.sqrt(2) * math.exp(-0.5 * math.log(2))  # = 1
    expected = (0 + scale * 1.0) / 2 + 0.5 * math.log(2)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_gather_at_indices() -> None:
    maps = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).reshape(2, 3, 2, 4)
    indices = torch.tensor([[0, 5], [7, 2]])  # y * W + x
    out = gather_at_indices(maps, indices)
    assert out.shape == (2, 2, 3)
    assert torch.equal(out[0, 1], maps[0, :, 1, 1])
    assert torch.equal(out[1, 0], maps[1, :, 1, 3])


# ---------------------------------------------------------------- DetectionLoss on a hand-made batch

B, M, H, W = 2, 3, 4, 5
MASK = torch.tensor([[True, False, True], [False, True, False]])  # 3 objects, rows (0,0), (0,2), (1,1)


def make_targets(h: int = H, w: int = W) -> dict[str, torch.Tensor]:
    """Targets of 3 objects on an h x w feature grid (cells 6, 13, 19 must lie in it)."""
    g = torch.Generator().manual_seed(0)
    heatmap = torch.rand(B, 3, h, w, generator=g) * 0.5
    indices = torch.tensor([[6, 0, 13], [0, 19, 0]])
    for b, m in MASK.nonzero().tolist():
        heatmap[b, 1, indices[b, m] // w, indices[b, m] % w] = 1.0
    vis = torch.rand(B, M, 7, 7, generator=g) * 30
    return {
        "heatmap": heatmap,
        "indices": indices,
        "cls_ids": torch.ones(B, M, dtype=torch.int64),
        "mask_2d": MASK.clone(),
        "offset_2d": torch.rand(B, M, 2, generator=g),
        "size_2d": torch.rand(B, M, 2, generator=g) * 20,
        "offset_3d": torch.rand(B, M, 2, generator=g),
        "depth": torch.rand(B, M, 1, generator=g) * 40 + 5,
        "size_3d": torch.randn(B, M, 3, generator=g) * 0.2,
        "heading_bin": torch.randint(0, 12, (B, M, 1), generator=g),
        "heading_res": (torch.rand(B, M, 1, generator=g) - 0.5) * 0.5,
        "vis_depth": vis,
        "att_depth": torch.randn(B, M, 7, 7, generator=g),
        "depth_mask": torch.rand(B, M, 7, 7, generator=g) > 0.5,
    }


def perfect_preds(targets: dict[str, torch.Tensor], model_type: str) -> dict[str, torch.Tensor]:
    """Predictions equal to the targets (RoI rows in (b, m) order), heads as leaf tensors."""
    mask = targets["mask_2d"]
    n = int(mask.sum())
    offset_2d = torch.zeros(B, 2, H * W)
    size_2d = torch.zeros(B, 2, H * W)
    for b, m in mask.nonzero().tolist():
        offset_2d[b, :, targets["indices"][b, m]] = targets["offset_2d"][b, m]
        size_2d[b, :, targets["indices"][b, m]] = targets["size_2d"][b, m]
    heading = torch.zeros(n, 24)
    heading[torch.arange(n), targets["heading_bin"][mask][:, 0]] = 50.0
    heading[torch.arange(n), 12 + targets["heading_bin"][mask][:, 0]] = targets["heading_res"][mask][:, 0]
    preds = {
        "heatmap": torch.logit(targets["heatmap"].clamp(1e-4, 1 - 1e-4)),
        "offset_2d": offset_2d.reshape(B, 2, H, W),
        "size_2d": size_2d.reshape(B, 2, H, W),
        "offset_3d": targets["offset_3d"][mask].clone(),
        "size_3d": targets["size_3d"][mask].clone(),
        "heading": heading,
        "depth": torch.cat([targets["depth"][mask], torch.zeros(n, 1)], 1),
    }
    if model_type == "gupnet":
        preds["h3d_log_variance"] = torch.zeros(n, 1)
    else:
        preds["vis_depth"] = targets["vis_depth"][mask].clone()
        preds["att_depth"] = targets["att_depth"][mask].clone()
        preds["vis_depth_uncer"] = torch.zeros(n, 7, 7)
        preds["att_depth_uncer"] = torch.zeros(n, 7, 7)
    return {k: v.requires_grad_() for k, v in preds.items()}


@pytest.mark.parametrize("model_type", ["gupnet", "did"])
def test_detection_loss_keys_and_perfect_prediction(model_type: str) -> None:
    targets = make_targets()
    preds = perfect_preds(targets, model_type)
    losses = DetectionLoss(model_type)(preds, targets)
    assert tuple(losses) == HTL_TASKS
    for name in ("offset2d", "size2d", "offset3d"):
        assert losses[name].item() == pytest.approx(0.0, abs=1e-7)
    assert losses["size3d"].item() == pytest.approx(0.0, abs=1e-7)
    assert losses["heading"].item() == pytest.approx(0.0, abs=1e-6)  # CE of a 50-logit margin ~ 0
    if model_type == "gupnet":
        assert losses["depth"].item() == pytest.approx(0.0, abs=1e-6)
    else:  # vis/att exact; instance vis+att vs z on 49 cells with log-var ln 2
        ins = (targets["vis_depth"] + targets["att_depth"])[MASK] - targets["depth"][MASK][:, :, None]
        expected = (math.sqrt(2) * math.exp(-0.5 * math.log(2)) * ins.abs() + 0.5 * math.log(2)).mean()
        assert losses["depth"].item() == pytest.approx(expected.item(), rel=1e-5)
    sum(losses.values()).backward()
    assert preds["heatmap"].grad is not None and preds["offset_3d"].grad is not None


def test_detection_loss_matches_rows_in_row_major_order() -> None:
    targets = make_targets()
    preds = perfect_preds(targets, "gupnet")
    with torch.no_grad():
        preds["offset_3d"][1] += torch.tensor([0.4, -0.2])  # the object at slot (0, 2)
        preds["size_3d"][2, 1:] += 0.3  # w, l of the object at slot (1, 1)
        cell = targets["indices"][1, 1]
        preds["size_2d"][1, 0].view(-1)[cell] += 1.2
    losses = DetectionLoss("gupnet")(preds, targets)
    assert losses["offset3d"].item() == pytest.approx(0.6 / 6, rel=1e-5)  # 3 objects x 2
    assert losses["size3d"].item() == pytest.approx(2 / 3 * 0.6 / 6, rel=1e-5)
    assert losses["size2d"].item() == pytest.approx(1.2 / 6, rel=1e-5)


def test_detection_loss_depth_terms_by_hand() -> None:
    targets = make_targets()
    preds = perfect_preds(targets, "gupnet")
    with torch.no_grad():
        preds["depth"][0] += torch.tensor([2.0, math.log(4.0)])  # |error| 2, sigma^2 = 4
    losses = DetectionLoss("gupnet")(preds, targets)
    assert losses["depth"].item() == pytest.approx((math.sqrt(2) + math.log(2)) / 3, rel=1e-5)


@pytest.mark.parametrize("model_type", ["gupnet", "did"])
def test_detection_loss_without_objects_is_finite_zero(model_type: str) -> None:
    targets = make_targets()
    targets["mask_2d"] = torch.zeros(B, M, dtype=torch.bool)
    feats = torch.randn(0, 8, requires_grad=True)  # a RoI head's input with no rows
    shapes = {"offset_3d": (2,), "size_3d": (3,), "heading": (24,), "depth": (2,), "h3d_log_variance": (1,)}
    preds = {k: (feats.sum(1, keepdim=True) * torch.ones(*s)).reshape(0, *s) for k, s in shapes.items()}
    for k in ("vis_depth", "att_depth", "vis_depth_uncer", "att_depth_uncer"):
        preds[k] = feats[:, :1, None].expand(0, 7, 7)
    preds["heatmap"] = torch.zeros(B, 3, H, W, requires_grad=True)
    preds["offset_2d"] = torch.zeros(B, 2, H, W, requires_grad=True)
    preds["size_2d"] = torch.zeros(B, 2, H, W, requires_grad=True)
    losses = DetectionLoss(model_type)(preds, targets)
    for name, value in losses.items():
        assert torch.isfinite(value), name
        if name != "seg":
            assert value.item() == 0.0, name
            assert value.grad_fn is not None, name
    sum(losses.values()).backward()
    assert feats.grad is not None


def test_detection_loss_rejects_misaligned_roi_rows() -> None:
    targets = make_targets()
    preds = perfect_preds(targets, "did")
    preds["offset_3d"] = preds["offset_3d"][:2]
    with pytest.raises(ValueError, match=r"preds\['offset_3d'\] has 2 rows .* 3 objects"):
        DetectionLoss("did")(preds, targets)


def test_detection_loss_rejects_unknown_model_type() -> None:
    with pytest.raises(ValueError, match="model_type must be one of"):
        DetectionLoss("centernet")


def test_detection_loss_is_float32_under_autocast() -> None:
    targets = make_targets()
    preds = {k: v.detach().bfloat16() for k, v in perfect_preds(targets, "gupnet").items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = DetectionLoss("gupnet")(preds, targets)
    assert all(v.dtype == torch.float32 for v in losses.values())
    assert all(torch.isfinite(v) for v in losses.values())


# ---------------------------------------------------------------- Criterion


BASE = load_config(REPO / "configs" / "base.yaml")
BASE_RPD = RpdSettings.from_config(BASE)
FOUR_RPD = replace(BASE_RPD, num_bins=4)
FOUR_BINS = FOUR_RPD.bins


def make_criterion(model_type: str, rpd: RpdSettings, **loss_changes: float) -> Criterion:
    """A criterion with configs/base.yaml's ``loss`` section, ``loss_changes`` applied."""
    return Criterion(
        model_type=model_type, loss=replace(LossSettings.from_config(BASE), **loss_changes), rpd=rpd
    )


def depth_branch_targets(h: int = H, w: int = W) -> dict[str, torch.Tensor]:
    """RPD inputs for 4 + 1 bins on an h x w grid: rpd_depth (0 = none, some beyond range),
    rpd_mask, fg_mask."""
    g = torch.Generator().manual_seed(1)
    depth = torch.rand(B, h, w, generator=g) * 90.0 * (torch.rand(B, h, w, generator=g) > 0.3)
    return {
        "rpd_depth": depth,
        "rpd_mask": rpd_valid(depth, FOUR_BINS),
        "fg_mask": torch.rand(B, h, w, generator=g) > 0.5,
    }


def with_depth_branch(preds: dict, targets: dict) -> None:
    preds["depth_logits"] = torch.randn(
        B, 5, H, W, generator=torch.Generator().manual_seed(2), requires_grad=True
    )
    targets.update(depth_branch_targets())


def test_criterion_adds_the_weighted_depth_branch_term() -> None:
    targets = make_targets()
    preds = perfect_preds(targets, "did")
    with_depth_branch(preds, targets)
    criterion = make_criterion("did", FOUR_RPD, depth_branch_weight=0.5, depth_branch_fg_weight=3.0)
    losses = criterion(preds, targets)
    assert tuple(losses) == (*HTL_TASKS, "depth_branch")
    # the soft two-hot targets are made here from rpd_depth (docs/method.md, 'Targets from projected LiDAR')
    rpd_target, valid = soft_targets(targets["rpd_depth"], FOUR_BINS)
    assert torch.equal(valid, targets["rpd_mask"]) and valid.any() and not valid.all()
    expected = 0.5 * depth_branch_loss(
        preds["depth_logits"], rpd_target, targets["rpd_mask"], targets["fg_mask"], fg_weight=3.0
    )
    assert losses["depth_branch"].item() == pytest.approx(expected.item(), rel=1e-6)
    detection = DetectionLoss("did")(preds, targets)
    assert all(torch.equal(losses[k], detection[k]) for k in HTL_TASKS)


def test_criterion_names_a_bin_count_mismatch() -> None:
    targets = make_targets()
    preds = perfect_preds(targets, "did")
    with_depth_branch(preds, targets)  # 5 = 4 + 1 channels
    with pytest.raises(ValueError, match=r"depth branch has 5 channels .* rpd.num_bins \+ 1 = 81"):
        make_criterion("did", BASE_RPD)(preds, targets)  # default bins: K = 80


def test_criterion_drops_the_depth_branch_term_when_off_or_absent() -> None:
    targets = make_targets()
    preds = perfect_preds(targets, "gupnet")
    assert "depth_branch" not in make_criterion("gupnet", BASE_RPD)(preds, targets)  # no depth_logits
    with_depth_branch(preds, targets)
    assert "depth_branch" not in make_criterion("gupnet", BASE_RPD, depth_branch_weight=0.0)(preds, targets)


def test_criterion_from_base_config() -> None:
    cfg = load_config(
        REPO / "configs" / "base.yaml", ["model.type=gupnet", "loss.depth_branch_weight=2", "rpd.mode=sid"]
    )
    criterion = Criterion(
        model_type=cfg.model.type, loss=LossSettings.from_config(cfg), rpd=RpdSettings.from_config(cfg)
    )
    assert criterion.detection.model_type == "gupnet"
    assert criterion.bins == DepthBins("sid", 2.0, 80.0, 80, 721.54, 1.65) and not criterion.supervise_beyond
    assert criterion.depth_branch_weight == 2.0
    assert criterion.depth_branch_fg_weight == cfg.loss.depth_branch_fg_weight


@pytest.mark.parametrize("model_type", ["gupnet", "did"])
def test_criterion_on_real_detector_outputs(model_type: str) -> None:
    build = pytest.importorskip("lib.models.build")
    torch.manual_seed(0)
    model_settings = replace(
        build.ModelSettings.from_config(BASE),
        type=model_type,
        backbone="resnet18",
        pretrained=False,
        head_conv=16,
        depth_branch=True,
        depth_branch_channels=8,
    )
    model = build.build_detector(model_settings, FOUR_RPD).train()
    targets = {**make_targets(h=16, w=32), **depth_branch_targets(h=16, w=32)}  # 64 x 128 input, stride 4
    calib = torch.tensor([[700.0, 0, 64, 40], [0, 700, 32, 0.2], [0, 0, 1, 0.003]]).expand(B, 3, 4)
    coord_range = torch.tensor([[0.0, 0.0], [128.0, 64.0]]).expand(B, 2, 2)
    preds = model(torch.randn(B, 3, 64, 128), calib=calib, coord_range=coord_range, targets=targets)
    losses = make_criterion(model_type, FOUR_RPD)(preds, targets)
    assert tuple(losses) == (*HTL_TASKS, "depth_branch")
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values())
    sum(losses.values()).backward()
    for head in ("heatmap", "offset_2d", "size_2d", "offset_3d", "size_3d", "heading", "depth_branch"):
        grads = [p.grad for p in getattr(model, head).parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), head

    targets["mask_2d"] = torch.zeros_like(targets["mask_2d"])  # a batch without objects
    preds = model(torch.randn(B, 3, 64, 128), calib=calib, coord_range=coord_range, targets=targets)
    losses = make_criterion(model_type, FOUR_RPD)(preds, targets)
    assert all(losses[k].item() == 0.0 for k in HTL_TASKS if k != "seg")
    sum(losses.values()).backward()
