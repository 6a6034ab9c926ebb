"""Decoding (docs/reference.md, 'Decoding and testing') inverts the target encoding (docs/reference.md,
'GUPNet data pipeline'): GT boxes encoded here with a minimal re-statement of GUPNet's test-mode targets, fed
back as perfect predictions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from lib.config import ConfigError, load_config
from lib.constants import HEATMAP_CLASSES, MEAN_SIZES
from lib.datasets.augment import input_window
from lib.decode import (
    back_project,
    check_result_options,
    decode_detections,
    heading_to_alpha,
)
from lib.eval.kitti_format import write_results
from lib.geometry import (
    affine_transform,
    box3d_corners,
    box3d_to_box2d,
    get_affine_transform,
    project_to_image,
    ry_to_alpha_pixel,
    wrap_angle,
)
from lib.kitti_io import read_label_table, write_split

# KITTI training/000000 P2 (a real calibration: note the non-zero P[2, 3]).
P2 = np.array(
    [
        [7.215377e02, 0.0, 6.095593e02, 4.485728e01],
        [0.0, 7.215377e02, 1.728540e02, 2.163791e-01],
        [0.0, 0.0, 1.0, 2.745884e-03],
    ]
)
RESOLUTION = np.array([1280, 384])  # network input W, H
STRIDE = 4
FEAT_W, FEAT_H = RESOLUTION // STRIDE
K = 10  # peaks per image
BIN = 2 * np.pi / 12


@dataclass
class Gt:
    cls_id: int
    dims: np.ndarray  # (3,) h, w, l
    pos: np.ndarray  # (3,) bottom centre, rect
    ry: float


def random_objects(rng: np.random.Generator, n: int) -> list[Gt]:
    objs = []
    for _ in range(n):
        cls_id = int(rng.integers(0, 3))
        dims = MEAN_SIZES[cls_id] * rng.uniform(0.8, 1.2, size=3)
        z = rng.uniform(8.0, 30.0)
        pos = np.array([rng.uniform(-0.3, 0.3) * z, rng.uniform(1.4, 1.8), z])
        objs.append(Gt(cls_id, dims, pos, float(rng.uniform(-np.pi, np.pi))))
    return objs


def encode(objs: list[Gt], img_size: np.ndarray) -> list[dict]:
    """GUPNet's test-mode targets (docs/reference.md, 'GUPNet data pipeline'): full image centred, crop width
    scale, stride 4."""
    trans = get_affine_transform(img_size / 2, img_size, RESOLUTION)
    encoded = []
    for o in objs:
        box2d = box3d_to_box2d(box3d_corners(o.dims[None], o.pos[None], np.array([o.ry])), P2)[0]
        box_feat = affine_transform(box2d.reshape(2, 2), trans).reshape(4) / STRIDE
        centre_2d = (box_feat[:2] + box_feat[2:]) / 2
        centre_3d_px, _ = project_to_image((o.pos - [0, o.dims[0] / 2, 0])[None], P2)
        centre_3d = affine_transform(centre_3d_px, trans)[0] / STRIDE
        cell = np.floor(centre_3d).astype(np.int64)
        alpha = ry_to_alpha_pixel(o.ry, (box2d[0] + box2d[2]) / 2, P2) % (2 * np.pi)
        shifted = (alpha + BIN / 2) % (2 * np.pi)
        heading_bin = int(shifted // BIN)
        encoded.append(
            {
                "cell": cell,
                "offset_2d": centre_2d - cell,
                "size_2d": box_feat[2:] - box_feat[:2],
                "offset_3d": centre_3d - cell,
                "size_3d": o.dims - MEAN_SIZES[o.cls_id],
                "depth": o.pos[2],
                "heading_bin": heading_bin,
                "heading_res": shifted - (heading_bin * BIN + BIN / 2),
                "box2d": box2d,
            }
        )
    return encoded


def perfect_predictions(batch: list[list[Gt]], encoded: list[list[dict]]) -> dict:
    """Eval outputs that reproduce the targets: one high peak per object, low-score padding peaks."""
    b = len(batch)
    preds = {
        "topk": {
            "scores": torch.full((b, K), 0.05),
            "cls": torch.zeros(b, K, dtype=torch.int64),
            "xs": torch.arange(K).repeat(b, 1).float(),  # padding peaks along the top row
            "ys": torch.zeros(b, K),
        },
        "offset_2d": torch.zeros(b, 2, FEAT_H, FEAT_W),
        "size_2d": torch.ones(b, 2, FEAT_H, FEAT_W),
        "offset_3d": torch.zeros(b * K, 2),
        "size_3d": torch.zeros(b * K, 3),
        "heading": torch.zeros(b * K, 24),
        "depth": torch.full((b * K, 2), 20.0),
        "depth_confidence": torch.ones(b * K),
    }
    for i, (objs, encs) in enumerate(zip(batch, encoded, strict=True)):
        assert len({tuple(e["cell"]) for e in encs}) == len(encs), "two objects share a cell"
        for j, (o, e) in enumerate(zip(objs, encs, strict=True)):
            x, y = e["cell"]
            assert 0 <= x < FEAT_W and 0 <= y < FEAT_H
            row = i * K + j
            preds["topk"]["scores"][i, j] = 0.9
            preds["topk"]["cls"][i, j] = o.cls_id
            preds["topk"]["xs"][i, j] = float(x)
            preds["topk"]["ys"][i, j] = float(y)
            preds["offset_2d"][i, :, y, x] = torch.tensor(e["offset_2d"])
            preds["size_2d"][i, :, y, x] = torch.tensor(e["size_2d"])
            preds["offset_3d"][row] = torch.tensor(e["offset_3d"])
            preds["size_3d"][row] = torch.tensor(e["size_3d"])
            preds["heading"][row, e["heading_bin"]] = 10.0
            preds["heading"][row, 12 + e["heading_bin"]] = e["heading_res"]
            preds["depth"][row] = torch.tensor([e["depth"], -1.0])
    return preds


def round_trip(
    img_size: np.ndarray, seed: int, inverse_affine: str = "exact"
) -> tuple[list[list[Gt]], list[list[dict]], list]:
    rng = np.random.default_rng(seed)
    batch = [random_objects(rng, 6), random_objects(rng, 4)]
    encoded = [encode(objs, img_size) for objs in batch]
    preds = perfect_predictions(batch, encoded)
    window = input_window(
        img_size / 2, img_size.astype(np.float64), tuple(RESOLUTION), inverse_affine=inverse_affine
    )
    coord_range = torch.tensor(np.stack([window, window]), dtype=torch.float32)
    dets = decode_detections(
        preds,
        model_type="gupnet",
        calib=np.stack([P2, P2]),
        coord_range=coord_range,
        threshold=0.2,
        backprojection="exact",
    )
    return batch, encoded, dets


def test_round_trip_is_exact_when_the_affine_is_a_pure_stride() -> None:
    batch, encoded, dets = round_trip(RESOLUTION.copy(), seed=0)
    for objs, encs, found in zip(batch, encoded, dets, strict=True):
        assert len(found) == len(objs)  # padding peaks (0.05) are below the threshold
        for o, e, d in zip(objs, encs, found, strict=True):
            assert d.cls_type == HEATMAP_CLASSES[o.cls_id]
            np.testing.assert_allclose(d.pos, o.pos, atol=1e-4)
            np.testing.assert_allclose([d.h, d.w, d.l], o.dims, atol=1e-5)
            assert abs(wrap_angle(d.ry - o.ry)) < 1e-4
            np.testing.assert_allclose(d.box2d, e["box2d"], atol=1e-2)
            assert d.score == pytest.approx(0.9, rel=1e-6)
            assert (d.truncation, d.occlusion) == (0.0, 0)


def test_round_trip_on_a_kitti_sized_image() -> None:
    # 1242x375 → scale 1280/1242: x maps back exactly with the per-axis ratio, y to ~1.2 px
    # (GUPNet's approximation, docs/reference.md, 'Known bugs and quirks: Per-axis input window'), i.e. a few
    # cm at z <= 30 m.
    batch, encoded, dets = round_trip(np.array([1242, 375]), seed=1)
    for objs, encs, found in zip(batch, encoded, dets, strict=True):
        assert len(found) == len(objs)
        for o, e, d in zip(objs, encs, found, strict=True):
            assert abs(d.pos[0] - o.pos[0]) < 1e-3 and abs(d.pos[2] - o.pos[2]) < 1e-4
            assert abs(d.pos[1] - o.pos[1]) < 0.06
            np.testing.assert_allclose([d.h, d.w, d.l], o.dims, atol=1e-5)
            assert abs(wrap_angle(d.ry - o.ry)) < 1e-4
            np.testing.assert_allclose(d.box2d[[0, 2]], e["box2d"][[0, 2]], atol=1e-2)
            np.testing.assert_allclose(d.box2d[[1, 3]], e["box2d"][[1, 3]], atol=1.5)


def test_score_threshold_depth_confidence_and_negative_dims() -> None:
    preds = {
        "topk": {
            "scores": torch.tensor([[0.5, 0.5, 0.9]]),
            "cls": torch.tensor([[1, 0, 2]]),
            "xs": torch.tensor([[10, 20, 30]]),
            "ys": torch.tensor([[40, 40, 40]]),
        },
        "offset_2d": torch.zeros(1, 2, FEAT_H, FEAT_W),
        "size_2d": torch.full((1, 2, FEAT_H, FEAT_W), 10.0),
        "offset_3d": torch.zeros(3, 2),
        "size_3d": torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, -5.0, 0.0]]),  # 3rd: w < 0
        "heading": torch.zeros(3, 24),
        "depth": torch.tensor([[10.0, 0.0], [12.0, 0.0], [14.0, 0.0]]),
        "depth_confidence": torch.tensor([0.3, 0.5, 1.0]),
    }
    coord_range = np.array([[[0.0, 0.0], [4.0 * FEAT_W, 4.0 * FEAT_H]]])  # a pure stride 4
    dets = decode_detections(
        preds,
        model_type="gupnet",
        calib=torch.tensor(P2[None]),
        coord_range=coord_range,
        threshold=0.2,
        backprojection="exact",
    )
    assert len(dets) == 1 and len(dets[0]) == 1  # gupnet: 0.5 x 0.3 = 0.15 < 0.2; w < 0 dropped
    did = decode_detections(
        preds,
        model_type="did",
        calib=P2[None],
        coord_range=coord_range,
        threshold=0.2,
        backprojection="exact",
    )[0]
    # did: the peak 0.5 >= 0.2 keeps the first box, written with score 0.5 x 0.3 (MonoSKD's rule)
    assert [(d.cls_type, d.score) for d in did] == [
        ("Car", pytest.approx(0.15)),
        ("Pedestrian", pytest.approx(0.25)),
    ]
    (kept,) = dets[0]
    assert kept.cls_type == "Pedestrian" and kept.score == pytest.approx(0.25)
    np.testing.assert_allclose(kept.box2d, [60, 140, 100, 180])  # (20 ± 5, 40 ± 5) x 4
    assert kept.pos[2] == pytest.approx(12.0)
    y_centre = (160 * (12 + 2.745884e-03) - 2.163791e-01 - 172.854 * 12) / 721.5377  # v = 40 x 4
    assert kept.pos[1] == pytest.approx(y_centre + 1.76255119 / 2)
    assert kept.alpha == 0.0  # uniform bin logits: argmax bin 0, residual 0
    assert kept.ry == pytest.approx(np.arctan2(80 - 609.5593, 721.5377))  # 2D centre u = 80
    (same,) = decode_detections(
        preds,
        model_type="gupnet",
        calib=P2[None],
        coord_range=coord_range,
        threshold=0.2,
        backprojection="exact",
    )[0]  # numpy calib
    np.testing.assert_allclose(same.pos, kept.pos)


def test_non_finite_peaks_are_dropped_with_a_warning(caplog) -> None:
    preds = {
        "topk": {
            "scores": torch.tensor([[0.9, 0.8, 0.7]]),
            "cls": torch.tensor([[1, 1, 1]]),
            "xs": torch.tensor([[10, 20, 30]]),
            "ys": torch.tensor([[40, 40, 40]]),
        },
        "offset_2d": torch.zeros(1, 2, FEAT_H, FEAT_W),
        "size_2d": torch.full((1, 2, FEAT_H, FEAT_W), 10.0),
        "offset_3d": torch.zeros(3, 2),
        "size_3d": torch.tensor([[0.0, 0.0, 0.0], [0.0, float("inf"), 0.0], [0.0, 0.0, 0.0]]),
        "heading": torch.zeros(3, 24),
        "depth": torch.tensor([[float("nan"), 0.0], [12.0, 0.0], [14.0, 0.0]]),
        "depth_confidence": torch.ones(3),
    }
    coord_range = np.array([[[0.0, 0.0], [4.0 * FEAT_W, 4.0 * FEAT_H]]])  # a pure stride 4
    with caplog.at_level("WARNING", logger="lib.decode"):
        (dets,) = decode_detections(
            preds,
            model_type="gupnet",
            calib=P2[None],
            coord_range=coord_range,
            threshold=0.0,
            backprojection="exact",
        )
    assert [d.pos[2] for d in dets] == [pytest.approx(14.0)]  # NaN depth and infinite width dropped
    assert "dropped 2 of 3 peaks of image 0 with a non-finite" in caplog.text


def test_heading_to_alpha_by_hand() -> None:
    heading = np.zeros((4, 24))
    heading[0, 0], heading[0, 12] = 1.0, 0.1  # bin 0 + 0.1
    heading[1, 11], heading[1, 23] = 1.0, 0.0  # 330° → -30°
    heading[2, 6] = 1.0  # exactly π stays π
    heading[3, 6], heading[3, 18] = 1.0, 0.01  # π + 0.01 → -π + 0.01
    np.testing.assert_allclose(heading_to_alpha(heading), [0.1, -np.pi / 6, np.pi, -np.pi + 0.01], atol=1e-12)


def test_write_kitti_results(tmp_path: Path) -> None:
    batch, _, dets = round_trip(RESOLUTION.copy(), seed=2)
    data = write_results(tmp_path, dict(zip([7, 42, 3], [*dets, []], strict=True)), score_decimals=6)
    assert sorted(p.name for p in data.iterdir()) == ["000003.txt", "000007.txt", "000042.txt"]
    assert (data / "000003.txt").read_text() == ""
    table = read_label_table(data / "000042.txt", with_score=True)
    assert len(table) == len(batch[1])
    np.testing.assert_allclose(table.loc, [o.pos for o in batch[1]], atol=0.006)
    np.testing.assert_allclose(table.score, 0.9)


def test_decode_errors() -> None:
    rng = np.random.default_rng(3)
    preds = perfect_predictions([random_objects(rng, 2)], [encode(random_objects(rng, 2), RESOLUTION)])
    coord_range = np.array([[[0.0, 0.0], [4.0 * FEAT_W, 4.0 * FEAT_H]]])  # a pure stride 4
    bad = {**preds, "size_3d": preds["size_3d"][:-1]}
    with pytest.raises(ValueError, match=r"preds\['size_3d'\] has 9 rows, expected B·K = 10"):
        decode_detections(
            bad,
            model_type="gupnet",
            calib=P2[None],
            coord_range=coord_range,
            threshold=0.2,
            backprojection="exact",
        )
    no_conf = {k: v for k, v in preds.items() if k != "depth_confidence"}
    with pytest.raises(ValueError, match="no 'depth_confidence'"):
        decode_detections(
            no_conf,
            model_type="gupnet",
            calib=P2[None],
            coord_range=coord_range,
            threshold=0.2,
            backprojection="exact",
        )


# ---------------------------------------------------------------- integration: targets → decode → AP


def predictions_from_targets(targets: dict[str, torch.Tensor]) -> dict:
    """Perfect eval outputs from a collated batch's targets: one peak per target slot (K = M),
    score 0.9 where ``mask_2d`` (0.01 elsewhere), RoI rows in (image, slot) order."""
    mask = targets["mask_2d"]
    b, m = mask.shape
    _, _, hf, wf = targets["heatmap"].shape
    indices = targets["indices"]
    preds = {
        "topk": {
            "scores": torch.where(mask, 0.9, 0.01),
            "cls": targets["cls_ids"],
            "xs": indices % wf,
            "ys": indices // wf,
        },
        "offset_2d": torch.zeros(b, 2, hf * wf),
        "size_2d": torch.zeros(b, 2, hf * wf),
        "offset_3d": targets["offset_3d"].reshape(b * m, 2),
        "size_3d": targets["size_3d"].reshape(b * m, 3),
        "heading": torch.zeros(b * m, 24),
        "depth": torch.cat([targets["depth"], torch.zeros(b, m, 1)], 2).reshape(b * m, 2),
        "depth_confidence": torch.ones(b * m),
    }
    for i, j in mask.nonzero().tolist():
        preds["offset_2d"][i, :, indices[i, j]] = targets["offset_2d"][i, j]
        preds["size_2d"][i, :, indices[i, j]] = targets["size_2d"][i, j]
        assert (indices[i][mask[i]] == indices[i, j]).sum() == 1, "two objects share a cell"
    rows = torch.arange(b * m)
    bins = targets["heading_bin"].reshape(-1)
    preds["heading"][rows, bins] = 10.0
    preds["heading"][rows, 12 + bins] = targets["heading_res"].reshape(-1)
    preds["offset_2d"] = preds["offset_2d"].reshape(b, 2, hf, wf)
    preds["size_2d"] = preds["size_2d"].reshape(b, 2, hf, wf)
    return preds


def write_synthetic_split(root: Path, frames: int) -> None:
    """KITTI-format synthetic frames with up to 12 objects each (~70 % cars) as split ``val``."""
    synthetic = pytest.importorskip("lib.datasets.synthetic")
    for i in range(frames):
        frame = synthetic.generate_frame(np.random.default_rng([5, i]), num_objects=(12, 12))
        synthetic.write_frame(root / "training", i, frame)
    write_split(root / "ImageSets" / "val.txt", list(range(frames)))


def test_dataset_targets_decode_back_to_the_labels_with_ap_100(tmp_path: Path) -> None:
    from lib.datasets import kitti
    from lib.eval import kitti_eval

    write_synthetic_split(tmp_path, frames=12)
    overrides = [f"dataset.root_dir={tmp_path}", "dataset.check_split_sizes=false"]
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "base.yaml", overrides)
    dataset = kitti.build_dataset(cfg, "val", train=False, load_depth=False)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(len(dataset))])
    preds = predictions_from_targets(batch["targets"])
    img_ids = batch["info"]["img_id"].tolist()
    calib = np.stack([dataset.get_calib(i).P2 for i in img_ids])  # the files' calib (no flip at eval)
    dets = decode_detections(
        preds,
        model_type="gupnet",
        calib=calib,
        coord_range=batch["coord_range"],
        threshold=0.2,
        backprojection="exact",
    )
    assert sum(map(len, dets)) == int(batch["targets"]["mask_2d"].sum())

    for frame_id, found in zip(img_ids, dets, strict=True):
        labels = dataset.get_labels(frame_id)
        for d in found:  # every detection is a labelled object, box for box
            gt = min(labels, key=lambda o: np.linalg.norm(o.pos - d.pos))
            assert gt.cls_type == d.cls_type
            assert np.abs(d.pos - gt.pos).max() < 0.006  # the labels carry 2 decimals
            np.testing.assert_allclose([d.h, d.w, d.l], [gt.h, gt.w, gt.l], atol=1e-4)
            assert abs(wrap_angle(d.ry - gt.ry)) < 1e-3

    # KITTI's AP samples 40 recall points: it reaches 100 only with > 40 GT boxes per class and level.
    out_dir = write_results(tmp_path / "results", dict(zip(img_ids, dets, strict=True)), score_decimals=6)
    gt_tables = [read_label_table(tmp_path / "training" / "label_2" / f"{i:06d}.txt") for i in img_ids]
    det_tables = [read_label_table(out_dir / f"{i:06d}.txt", with_score=True) for i in img_ids]
    moderate_cars = sum(
        name == "Car" and y2 - y1 >= 25 and occ <= 1 and trunc <= 0.3
        for t in gt_tables
        for name, (_, y1, _, y2), occ, trunc in zip(t.names, t.bbox, t.occluded, t.truncated, strict=True)
    )
    assert moderate_cars > 40
    report = kitti_eval.evaluate(gt_tables, det_tables, ["Car"], ap_modes=(40,))["ap40"]
    for metric in ("bbox", "bev", "3d"):
        for level in ("moderate", "hard"):
            assert report["ap"]["Car"][metric][level] == pytest.approx(100.0), (metric, level)


def test_threshold_rule_per_model_type_and_unknown_type() -> None:
    preds = {
        "topk": {
            "scores": torch.tensor([[0.25, 0.19, 0.9]]),
            "cls": torch.tensor([[1, 1, 1]]),
            "xs": torch.tensor([[10, 20, 30]]),
            "ys": torch.tensor([[40, 40, 40]]),
        },
        "offset_2d": torch.zeros(1, 2, FEAT_H, FEAT_W),
        "size_2d": torch.full((1, 2, FEAT_H, FEAT_W), 10.0),
        "offset_3d": torch.zeros(3, 2),
        "size_3d": torch.zeros(3, 3),
        "heading": torch.zeros(3, 24),
        "depth": torch.tensor([[10.0, 0.0], [12.0, 0.0], [14.0, 0.0]]),
        "depth_confidence": torch.tensor([0.1, 1.0, 0.2]),
    }
    coord_range = np.array([[[0.0, 0.0], [4.0 * FEAT_W, 4.0 * FEAT_H]]])  # a pure stride 4

    def kept(model_type: str) -> list[float]:
        (dets,) = decode_detections(
            preds,
            calib=P2[None],
            coord_range=coord_range,
            model_type=model_type,
            threshold=0.2,
            backprojection="exact",
        )
        return [round(d.score, 6) for d in dets]

    assert kept("did") == [0.025, 0.18]  # peaks 0.25 and 0.9 pass; 0.19 does not (conf 1 or not)
    assert kept("gupnet") == []  # products 0.025, 0.19, 0.18 are all < 0.2
    with pytest.raises(ValueError, match="unknown model type 'monodle'"):
        kept("monodle")


def test_backprojection_switch_and_its_size() -> None:
    uv = np.array([[100.0, 50.0], [1200.0, 300.0]])
    z = np.array([5.0, 60.0])
    exact = back_project(uv, z, P2, "exact")
    ref = back_project(uv, z, P2, "reference")
    # by hand, the references' Calibration.img_to_rect: x = (u - cu) z / fu + tx, tx = -P[0,3] / fu
    fu, cu, fv, cv = P2[0, 0], P2[0, 2], P2[1, 1], P2[1, 2]
    np.testing.assert_allclose(ref[:, 0], (uv[:, 0] - cu) * z / fu - P2[0, 3] / fu)
    np.testing.assert_allclose(ref[:, 1], (uv[:, 1] - cv) * z / fv - P2[1, 3] / fv)
    np.testing.assert_allclose(exact[:, 2], z) and np.testing.assert_allclose(ref[:, 2], z)
    # exact is the inverse of the projection with P2[2, 3]; the difference is u·P2[2,3]/fu: mm
    reprojected, _ = project_to_image(exact, P2)
    np.testing.assert_allclose(reprojected, uv, atol=1e-9)
    np.testing.assert_allclose(exact[:, 0] - ref[:, 0], uv[:, 0] * P2[2, 3] / fu, atol=1e-12)
    assert np.abs(exact - ref).max() < 5e-3
    with pytest.raises(ValueError, match="tester.backprojection: 'approx' is not one of exact, reference"):
        back_project(uv, z, P2, "approx")


def test_score_decimals_switch(tmp_path: Path) -> None:
    _, _, dets = round_trip(RESOLUTION.copy(), seed=4)
    dets[0][0].score = 0.123456789
    six_dir = write_results(tmp_path / "six", {0: dets[0]}, score_decimals=6)
    two_dir = write_results(tmp_path / "two", {0: dets[0]}, score_decimals=2)
    six = (six_dir / "000000.txt").read_text().splitlines()[0]
    two = (two_dir / "000000.txt").read_text().splitlines()[0]
    assert six.endswith(" 0.123457") and two.endswith(" 0.12") and six[:-9] == two[:-5]


def test_result_options_are_checked_before_a_run() -> None:
    check_result_options("reference", 2)
    check_result_options("exact", 6)
    with pytest.raises(ConfigError, match="tester.backprojection: 'approx' is not one of exact, reference"):
        check_result_options("approx", 6)
    with pytest.raises(ConfigError, match=r"tester.score_decimals must be in 0..12, got -1"):
        check_result_options("exact", -1)


@pytest.mark.parametrize(
    ("inverse_affine", "box"),
    [
        # exact window at 384×128 of a 1242×375 frame: y from -19.5 to 394.5 (414 rows)
        ("exact", [627.46875 - 64.6875, 242.484375 - 51.75, 627.46875 + 64.6875, 242.484375 + 51.75]),
        # GUPNet's: y × 375/32 per feature px, heights 375/414 = 0.906 of the true ones
        ("reference", [627.46875 - 64.6875, 237.3046875 - 46.875, 627.46875 + 64.6875, 237.3046875 + 46.875]),
    ],
)
def test_planted_peak_decodes_through_the_input_window(inverse_affine: str, box: list[float]) -> None:
    """Cell (48, 20) + offset (0.5, 0.25), size (10, 8) feature px on the 96×32 grid of a 384×128
    input: x = 48.5/96·1242, w = 10/96·1242; exact y = 20.25/32·414 − 19.5, h = 8/32·414
    (414/32 = 1242/96: one scale for both axes, as the affine)."""
    hf, wf = 32, 96
    preds = {
        "topk": {n: torch.tensor([[v]]) for n, v in (("scores", 0.9), ("cls", 1), ("xs", 48), ("ys", 20))},
        "offset_2d": torch.zeros(1, 2, hf, wf),
        "size_2d": torch.zeros(1, 2, hf, wf),
        "offset_3d": torch.tensor([[0.5, 0.25]]),
        "size_3d": torch.zeros(1, 3),
        "heading": torch.zeros(1, 24),
        "depth": torch.tensor([[20.0, 0.0]]),
        "depth_confidence": torch.ones(1),
    }
    preds["offset_2d"][0, :, 20, 48] = torch.tensor([0.5, 0.25])
    preds["size_2d"][0, :, 20, 48] = torch.tensor([10.0, 8.0])
    window = input_window(
        np.array([621.0, 187.5]), np.array([1242.0, 375.0]), (384, 128), inverse_affine=inverse_affine
    )
    (dets,) = decode_detections(
        preds,
        model_type="gupnet",
        calib=P2[None],
        coord_range=window[None],
        threshold=0.2,
        backprojection="exact",
    )
    (det,) = dets
    np.testing.assert_allclose(det.box2d, box, atol=1e-9)
    centre = (np.array(box[:2]) + box[2:]) / 2  # the projected 3D centre sits at the 2D centre here
    uv, _ = project_to_image((det.pos - [0.0, det.h / 2, 0.0])[None], P2)
    np.testing.assert_allclose(uv[0], centre, atol=1e-6)


def test_kitti_sized_round_trip_is_exact_only_with_the_exact_window() -> None:
    """Targets of a 1242×375 frame at 1280×384 decode onto the GT boxes with the exact window;
    GUPNet's stretches y about the frame's top by 375/372.6 (heights +0.64 %, ~1 px)."""
    img_size = np.array([1242, 375])
    batch, encoded, exact = round_trip(img_size, seed=5)
    _, _, reference = round_trip(img_size, seed=5, inverse_affine="reference")
    rows = 1242 * 384 / 1280  # 372.6
    for encs, found, ref in zip(encoded, exact, reference, strict=True):
        for e, d, r in zip(encs, found, ref, strict=True):
            np.testing.assert_allclose(d.box2d, e["box2d"], atol=1e-3)
            np.testing.assert_allclose(r.box2d[[0, 2]], e["box2d"][[0, 2]], atol=1e-3)
            y_true = e["box2d"][[1, 3]]
            np.testing.assert_allclose(r.box2d[[1, 3]], (y_true - (375 - rows) / 2) * 375 / rows, atol=1e-3)
    assert sum(map(len, exact)) == sum(map(len, batch)) == sum(map(len, reference))
