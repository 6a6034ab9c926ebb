"""HTL weights, lr schedules and decoding against the reference code (docs/parity.md,
"Decoding, schedules and checkpoints").

Fixtures (tests/fixtures/parity/schedule_decode_*, written by tools/parity/schedule_decode.py):
GUPNet's and MonoSKD's ``Hierarchical_Task_Learning`` over a 30-epoch loss history, their lr
schedulers stepped as their trainers step them, and their ``decode_helper`` + ``save_results`` on
given raw outputs (GUPNet for the gupnet type, MonoSKD's DID-M3D for did). Where we differ on
purpose the test asserts the difference and that the config switch restores the reference.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lib.config import load_config
from lib.constants import CLASS_TO_ID
from lib.decode import decode_detections
from lib.engine.optim import LrSchedulerSettings, OptimizerSettings, build_lr_scheduler, build_optimizer
from lib.kitti_io import Object3d
from lib.losses.task_weighting import HierarchicalTaskLearning
from lib.models.detector import select_topk_peaks
from lib.models.did import merge_cell_depths
from lib.models.gupnet import depth_confidence
from tools.parity import schedule_decode as sd

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "parity"
RTOL, ATOL = 1e-5, 1e-6

# Each shipped config and the reference config whose schedule and HTL it follows.
SHIPPED = {
    "configs/base.yaml": "gupnet:experiments/config.yaml",
    "configs/gupnet.yaml": "gupnet:experiments/config.yaml",
    "configs/did_m3d.yaml": "monoskd:configs/rgb_baseline.yaml",
    "configs/student.yaml": "monoskd:configs/rgb_baseline.yaml",
    "configs/teacher.yaml": "monoskd:configs/rgb_baseline.yaml",
    "configs/monoskd.yaml": "monoskd:configs/monoskd.yaml",
    "configs/monommkd.yaml": "monoskd:configs/monoskd.yaml",
    "configs/monodistill.yaml": "monoskd:configs/monodistill.yaml",
} | {
    f"configs/ablations/{p.name}": "monoskd:configs/monoskd.yaml"
    for p in (REPO / "configs/ablations").glob("*.yaml")
}


def _our_htl(losses: np.ndarray, *, horizon: int, push_e0: bool) -> np.ndarray:
    """Our weights per epoch, called as lib/engine/trainer.py calls them."""
    htl = HierarchicalTaskLearning(num_epochs=horizon, window=5)
    if push_e0:
        htl.update(dict(zip(sd.HTL_TERMS, losses[0], strict=True)))
    rows = []
    for epoch in range(len(losses) - 1):
        weights = htl.compute_weights(epoch)
        rows.append([weights[t] for t in sd.HTL_TERMS])
        htl.update(dict(zip(sd.HTL_TERMS, losses[epoch + 1], strict=True)))
    return np.array(rows)


@pytest.fixture(scope="module")
def htl_fixture() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "schedule_decode_htl.npz") as data:
        return {k: data[k] for k in data.files}


def test_htl_weights_equal_gupnet_with_e0_and_monoskd_without(htl_fixture) -> None:
    losses = htl_fixture["losses"]
    # the generator's history; numpy's exp/log round the last bit differently on AVX-512 CPUs
    np.testing.assert_allclose(losses, sd.htl_history(), rtol=1e-14, atol=0)
    assert tuple(htl_fixture["terms"]) == sd.HTL_TERMS
    gup, skd = htl_fixture["weights_gupnet"], htl_fixture["weights_monoskd"]
    np.testing.assert_allclose(_our_htl(losses, horizon=140, push_e0=True), gup, rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(_our_htl(losses, horizon=140, push_e0=False), skd, rtol=RTOL, atol=1e-12)
    # the fixture exercises the ramp: 3D terms 0 up to epoch 5 (GUPNet) / 6 (MonoSKD), then rising
    assert (gup[:6, 3:] == 0).all() and (gup[6:, 3:] > 0).all() and (skd[:6, 3:] == 0).all()
    assert skd[6, 3] == pytest.approx(1 / 135, rel=1e-12)  # MonoSKD's log: 0.0074 at epoch 7
    assert gup[-1, 3:].min() > 0.5


def test_htl_horizon_and_e0_switches_change_the_weights(htl_fixture) -> None:
    losses, skd = htl_fixture["losses"], htl_fixture["weights_monoskd"]
    # horizon = max_epoch (our default, loss.htl_horizon: null) for a 160-epoch run: slower ramp
    ours_160 = _our_htl(losses, horizon=160, push_e0=False)
    assert (ours_160[6:, 3:] <= skd[6:, 3:]).all() and (ours_160[6:, 3:] < skd[6:, 3:]).mean() > 0.9
    # pushing e0 shifts the ramp by one epoch
    assert not np.allclose(_our_htl(losses, horizon=140, push_e0=True), skd)


@pytest.mark.parametrize("config", sorted(SHIPPED))
def test_shipped_configs_set_the_reference_htl(config: str) -> None:
    cfg = load_config(REPO / config)
    horizon = cfg.loss.htl_horizon if cfg.loss.htl_horizon is not None else cfg.trainer.max_epoch
    assert cfg.loss.htl and cfg.loss.htl_window == 5 and horizon == 140
    assert cfg.trainer.htl_init_pass == SHIPPED[config].startswith("gupnet:")  # GUPNet pushes e0


def _our_lrs(config: str) -> list[float]:
    cfg = load_config(REPO / config)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([("w", param)], OptimizerSettings.from_config(cfg.optimizer))
    scheduler = build_lr_scheduler(opt, LrSchedulerSettings.from_config(cfg.lr_scheduler))
    lrs = []
    for _ in range(cfg.trainer.max_epoch):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("config", sorted(SHIPPED))
def test_lr_at_every_epoch_equals_the_reference(config: str) -> None:
    reference = json.loads((FIXTURES / "schedule_decode_lr.json").read_text())[SHIPPED[config]]
    ours = _our_lrs(config)
    assert len(ours) == len(reference)
    np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=0)


def test_reference_lr_drops_at_epochs_96_and_126() -> None:
    reference = json.loads((FIXTURES / "schedule_decode_lr.json").read_text())
    for lrs in reference.values():
        base = lrs[5]
        drops = [e for e in range(1, len(lrs)) if lrs[e] < lrs[e - 1]]
        assert (
            drops == [95, 125]
            and lrs[95] == pytest.approx(base / 10)
            and lrs[125] == pytest.approx(base / 100)
        )


# ---------------------------------------------------------------------------------------- decode
def _our_preds(model_type: str) -> dict:
    """Our eval outputs from the fixture's raw outputs: our top-K and our depth / confidence."""
    raw = {k: torch.from_numpy(v) for k, v in sd.decode_inputs(model_type).items()}
    preds = {"topk": select_topk_peaks(raw["heatmap"], sd.K)}
    preds |= {k: raw[k] for k in ("offset_2d", "size_2d", "heading", "size_3d", "offset_3d")}
    if model_type == "gupnet":
        preds["depth"], preds["depth_confidence"] = raw["depth"], depth_confidence(raw["depth"][:, 1])
    else:
        preds |= merge_cell_depths(raw["vis_depth"] + raw["att_depth"], raw["ins_depth_uncer"])
    return preds


def _decode(model_type: str, rule: str | None = None, **options) -> list[list[Object3d]]:
    info = sd.decode_batch_info()
    grid = np.array([sd.GRID_W, sd.GRID_H])
    # the references' bbox_downsample_ratio as our evaluation window (dataset.inverse_affine: reference)
    windows = [[[0.0, 0.0], ratio * grid] for ratio in info["bbox_downsample_ratio"]]
    return decode_detections(
        _our_preds(model_type),
        calib=info["P2"],
        coord_range=np.array(windows),
        model_type=rule or model_type,
        threshold=sd.THRESHOLD,
        mean_sizes=sd.MEAN_SIZE,
        **({"backprojection": "exact"} | options),
    )


def _rows(dets: list[list[Object3d]]) -> np.ndarray:
    """Our detections as the reference's raw rows [img_id, cls, alpha, box, h w l, x y z, ry, score]."""
    ids = sd.decode_batch_info()["img_id"]
    return np.array(
        [
            [ids[i], CLASS_TO_ID[d.cls_type], d.alpha, *d.box2d, d.h, d.w, d.l, *d.pos, d.ry, d.score]
            for i, found in enumerate(dets)
            for d in found
        ]
    )


def _lines(dets: list[list[Object3d]], score_decimals: int) -> list[list[str | float]]:
    """Result lines as the evaluator parses them (the reference writes truncation "0.0", we "0.00")."""
    ids = sd.decode_batch_info()["img_id"]
    return [
        _parsed(f"{ids[i]:06d} {d.to_line(score_decimals)}") for i, found in enumerate(dets) for d in found
    ]


def _parsed(line: str) -> list[str | float]:
    image, name, *values = line.split()
    return [image, name, *map(float, values)]


@pytest.fixture(scope="module", params=["gupnet", "did"])
def decode_case(request) -> tuple[str, dict[str, np.ndarray]]:
    with np.load(FIXTURES / f"schedule_decode_{request.param}.npz") as data:
        ref = {k: data[k] for k in data.files}
    assert str(ref["inputs_checksum"]) == sd.checksum(sd.decode_inputs(request.param))
    return request.param, ref


def test_decode_with_the_reference_switches_equals_the_reference(decode_case) -> None:
    model_type, ref = decode_case
    dets = _decode(model_type, backprojection="reference")
    rows = _rows(dets)
    assert rows.shape == ref["raw"].shape  # the kept set, in the same (peak) order
    np.testing.assert_array_equal(rows[:, :2], ref["raw"][:, :2])  # image, class
    np.testing.assert_allclose(rows[:, 2:], ref["raw"][:, 2:], rtol=RTOL, atol=ATOL)
    assert _lines(dets, score_decimals=2) == [_parsed(str(line)) for line in ref["lines"]]


def test_decode_differs_only_by_the_documented_p23_term_and_score_decimals(decode_case) -> None:
    model_type, ref = decode_case
    exact, reference = _rows(_decode(model_type)), _rows(_decode(model_type, backprojection="reference"))
    moved = exact[:, 10:12] - reference[:, 10:12]  # x, y of the 3D position
    assert 0 < np.abs(moved).max() < 5e-3  # a few mm (P2[2,3] = 2.7 mm)
    np.testing.assert_allclose(
        np.delete(exact, [10, 11], 1), np.delete(reference, [10, 11], 1), rtol=1e-12, atol=1e-12
    )
    six = _lines(_decode(model_type, backprojection="reference"), score_decimals=6)
    two = [_parsed(str(line)) for line in ref["lines"]]
    assert [line[:-1] for line in six] == [line[:-1] for line in two]
    scores = np.array([line[-1] for line in six])
    np.testing.assert_allclose(scores, reference[:, -1], atol=5e-7)  # 6 decimals ...
    assert np.abs(scores - [line[-1] for line in two]).max() > 1e-3  # ... where the reference rounds to 2


def test_threshold_order_is_the_model_types_own(decode_case) -> None:
    model_type, ref = decode_case
    if model_type == "did":  # MonoSKD keeps a peak >= threshold whatever its depth confidence ...
        assert (ref["raw"][:, -1] < sd.THRESHOLD).any()
        assert len(_rows(_decode("did", rule="gupnet"))) < len(ref["raw"])  # ... GUPNet's rule would not
    else:  # GUPNet thresholds peak x confidence
        assert (ref["raw"][:, -1] >= sd.THRESHOLD).all()
        assert len(_rows(_decode("gupnet", rule="did"))) > len(ref["raw"])


# ------------------------------------------------------------------------------- baseline configs
# Our config, the reference config it follows, and the facts of the reference's code (not in its
# YAML): colour augmentation (MonoSKD's dataset always, GUPNet never) and drop_last of the train
# loader (MonoSKD True, GUPNet False). None: our own choice (the teacher's input is a depth map).
BASELINES = {
    "configs/gupnet.yaml": ("gupnet:experiments/config.yaml", False, False),
    "configs/did_m3d.yaml": ("monoskd:configs/rgb_baseline.yaml", True, True),
    "configs/student.yaml": ("monoskd:configs/rgb_baseline.yaml", True, True),
    "configs/teacher.yaml": ("monoskd:configs/rgb_baseline.yaml", None, True),
    "configs/monoskd.yaml": ("monoskd:configs/monoskd.yaml", True, True),
    "configs/monommkd.yaml": ("monoskd:configs/monoskd.yaml", True, True),
    "configs/monodistill.yaml": ("monoskd:configs/monodistill.yaml", True, True),
}
MODEL_TYPES = {"gupnet": "gupnet", "DID": "did", "distill": "did"}


@pytest.mark.parametrize("config", sorted(BASELINES))
def test_config_has_the_reference_values(config: str) -> None:
    name, color_aug, drop_last = BASELINES[config]
    ref = json.loads((FIXTURES / "schedule_decode_configs.json").read_text())[name]
    cfg = load_config(REPO / config)
    d, rd = cfg.dataset, ref["dataset"]
    assert list(d.writelist) == rd["writelist"] and d.batch_size == rd["batch_size"]
    assert (d.random_flip, d.random_crop, d.scale, d.shift) == tuple(
        rd[k] for k in ("random_flip", "random_crop", "scale", "shift")
    )
    assert (
        d.class_merging == rd["class_merging"] and rd["use_dontcare"] is False
    )  # ours never trains on DontCare
    assert d.drop_last_train == drop_last and (color_aug is None or d.color_aug == color_aug)
    assert (
        cfg.model.type == MODEL_TYPES[ref["model"]["type"]] and cfg.model.backbone == ref["model"]["backbone"]
    )
    o, ro = cfg.optimizer, ref["optimizer"]
    assert (o.type, o.lr, o.weight_decay) == (ro["type"], ro["lr"], ro["weight_decay"])
    s, rs = cfg.lr_scheduler, ref["lr_scheduler"]
    assert (s.warmup, s.warmup_epochs, s.warmup_start_lr, s.decay_rate) == (
        rs["warmup"],
        5,
        1e-5,
        rs["decay_rate"],
    )
    assert list(s.decay_list) == [e + s.warmup_epochs for e in rs["decay_list"]]  # as its scheduler steps
    t, rt = cfg.trainer, ref["trainer"]
    assert (t.max_epoch, t.eval_frequency, t.save_frequency) == (
        rt["max_epoch"],
        rt["eval_frequency"],
        rt["save_frequency"],
    )
    assert t.eval_start == rt.get("eval_start", 0)
    assert cfg.tester.threshold == ref["tester"]["threshold"]


def test_gupnet_and_did_m3d_configs_have_no_depth_branch_and_the_reference_inputs() -> None:
    for config in ("configs/gupnet.yaml", "configs/did_m3d.yaml"):
        cfg = load_config(REPO / config)
        assert not cfg.model.depth_branch and cfg.model.input == "rgb" and not cfg.distill.teacher_checkpoint
    assert load_config(REPO / "configs/student.yaml").model.depth_branch  # the MonoMMKD student keeps it
