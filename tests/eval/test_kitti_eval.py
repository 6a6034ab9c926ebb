"""The evaluator against the official KITTI devkit's golden values, and its protocol on small cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lib.eval.kitti_eval import FrameObjects, evaluate
from lib.eval.kitti_format import load_labels, load_results, result_frame_ids
from lib.kitti_io import LabelTable, read_split

CASES = [f"case_{i}" for i in range(1, 7)]
TOLERANCE = 1e-4  # the devkit prints 6 decimals of a float32 sum


def _case_inputs(root, case: str, all_frames: bool) -> tuple[FrameObjects, FrameObjects]:
    split = read_split(root / case / "ImageSets" / "val.txt")
    if not all_frames:
        have = result_frame_ids(root / case / "pred")
        split = [f for f in split if f in have]
    return load_labels(root / case / "label_2", split), load_results(root / case / "pred", split)


@pytest.mark.parametrize("case", CASES)
def test_matches_devkit_golden_values(fixture_root, report_diff, case):
    """AP40, AP11 (devkit frames) and AP40 over all frames, values and 41-point curves, within 1e-4."""
    gt, det = _case_inputs(fixture_root, case, all_frames=False)
    reports = evaluate(gt, det)
    for name in ("expected_ap40.json", "expected_ap11.json"):
        expected = json.loads((fixture_root / case / name).read_text())
        report = reports[f"ap{expected['ap_mode']}"]
        assert report["num_frames_evaluated"] == expected["num_frames_evaluated"]
        assert report["min_overlap"] == expected["min_overlap"]
        assert report_diff(report, expected) <= TOLERANCE, name

    gt, det = _case_inputs(fixture_root, case, all_frames=True)
    expected = json.loads((fixture_root / case / "expected_ap40_all_frames.json").read_text())
    report = evaluate(gt, det, ap_modes=(40,))["ap40"]
    assert report["num_frames_evaluated"] == expected["num_frames_listed"]
    assert report_diff(report, expected) <= TOLERANCE


def test_shuffled_detections_and_frames_change_nothing(fixture_root):
    """With distinct scores, neither the detection order in a file nor the frame order matters."""
    gt, det = _case_inputs(fixture_root, "case_1", all_frames=True)
    rng = np.random.default_rng(0)
    t = det.table
    distinct = LabelTable(**{**vars(t), "score": rng.permutation(len(t)) / len(t)})
    tables = [_rows(distinct, det.offsets[f], det.offsets[f + 1]) for f in range(len(det))]
    gt_tables = [_rows(gt.table, gt.offsets[f], gt.offsets[f + 1]) for f in range(len(gt))]
    reference = evaluate(gt_tables, tables)

    order = rng.permutation(len(tables))
    shuffled = [_rows(tables[f], 0, len(tables[f]), rng.permutation(len(tables[f]))) for f in order]
    result = evaluate([gt_tables[f] for f in order], shuffled)
    assert result["ap40"]["ap"] == reference["ap40"]["ap"]
    assert result["ap11"]["ap"] == reference["ap11"]["ap"]


def _rows(t: LabelTable, start: int, stop: int, order: np.ndarray | None = None) -> LabelTable:
    """Rows start:stop of a table, optionally reordered."""
    index = np.arange(start, stop) if order is None else np.arange(start, stop)[order]
    return LabelTable(**{k: None if v is None else v[index] for k, v in vars(t).items()})


# ------------------------------------------------------------------------------------------------
# Small hand-made cases
# ------------------------------------------------------------------------------------------------

_DIMS = {"Car": (1.5, 1.6, 3.9), "Pedestrian": (1.75, 0.6, 0.8), "Cyclist": (1.7, 0.6, 1.8)}


def _objects(names, *, height=50.0, x_step=5.0, alpha=0.3, score=None) -> LabelTable:
    """One frame of fully visible objects, side by side 20 m ahead (2D boxes of the given height)."""
    n = len(names)
    x = np.arange(n) * x_step - 10.0
    bbox = np.stack([100.0 + 120 * np.arange(n), np.full(n, 175.25), 180.0 + 120 * np.arange(n),
                     np.full(n, 175.25 + height)], axis=1)  # fmt: skip
    return LabelTable(
        names=np.array(names),
        truncated=np.zeros(n),
        occluded=np.zeros(n, dtype=np.int64),
        alpha=np.full(n, alpha),
        bbox=bbox,
        dims=np.array([_DIMS[c] for c in names]).reshape(n, 3),
        loc=np.stack([x, np.full(n, 1.6), np.full(n, 20.0)], axis=1),
        rotation_y=np.full(n, 0.3),
        score=None if score is None else np.asarray(score, dtype=np.float64),
    )


def _perfect(frames: int, names=("Car", "Pedestrian", "Cyclist"), **kwargs):
    """Ground truth and detections identical to it (distinct scores), one object per class per frame."""
    gt = [_objects(list(names), **kwargs) for _ in range(frames)]
    det = [
        LabelTable(
            **{k: np.copy(v) for k, v in vars(g).items() if k != "score"},
            score=0.5 + np.arange(len(g)) / 100 + f / 1000,
        )
        for f, g in enumerate(gt)
    ]
    return gt, det


@pytest.mark.parametrize("frames", [41, 60])
def test_perfect_detections_score_100(frames):
    """Needs > 40 objects: with n <= 40 the n recall points cap AP40 at (n - 1) / 40."""
    gt, det = _perfect(frames)
    reports = evaluate(gt, det)
    for report in reports.values():
        for name in ("Car", "Pedestrian", "Cyclist"):
            for metric in ("bbox", "aos", "bev", "3d"):
                assert report["ap"][name][metric] == {"easy": 100.0, "moderate": 100.0, "hard": 100.0}


@pytest.mark.parametrize(("frames", "ap11_points"), [(10, 3), (40, 10)])
def test_few_ground_truth_caps_ap40_at_n_minus_1_over_40(frames, ap11_points):
    """With n <= 40 valid objects each TP is one recall point, and point 0 is skipped by AP40."""
    gt, det = _perfect(frames, names=("Car",))
    reports = evaluate(gt, det, ("Car",))
    assert reports["ap40"]["ap"]["Car"]["3d"]["easy"] == pytest.approx((frames - 1) / 40 * 100, abs=1e-5)
    assert reports["ap11"]["ap"]["Car"]["3d"]["easy"] == pytest.approx(ap11_points / 11 * 100, abs=1e-5)


def test_no_detections_gives_null_and_unmatched_gives_zero():
    gt, _ = _perfect(45)
    empty = [LabelTable.empty(with_score=True) for _ in gt]
    report = evaluate(gt, empty)["ap40"]
    assert all(v is None for metrics in report["ap"].values() for v in metrics.values())

    far = [_objects(["Car"], score=[0.9]) for _ in gt]
    for t in far:
        t.loc[:, 2] = 60.0  # 40 m behind the ground truth
        t.bbox[:, 0] += 900.0  # and elsewhere in the image
        t.bbox[:, 2] += 900.0
    report = evaluate(gt, far)["ap40"]
    assert report["ap"]["Car"]["3d"] == {"easy": 0.0, "moderate": 0.0, "hard": 0.0}
    assert report["ap"]["Car"]["bbox"] == {"easy": 0.0, "moderate": 0.0, "hard": 0.0}
    assert report["ap"]["Pedestrian"]["bbox"] is None


def test_height_of_exactly_40_px_is_easy():
    """Boxes exactly 40 px tall (y2 - y1 in double) count as easy; 39.99 px ones are not evaluated."""
    gt, det = _perfect(45, names=("Car",), height=40.0)
    assert evaluate(gt, det, ("Car",))["ap40"]["ap"]["Car"]["bbox"]["easy"] == 100.0
    gt, det = _perfect(45, names=("Car",), height=39.99)
    result = evaluate(gt, det, ("Car",))["ap40"]["ap"]["Car"]["bbox"]
    assert result["easy"] == 0.0 and result["moderate"] == 100.0


def test_alpha_minus_10_disables_aos():
    gt, det = _perfect(45)
    det[3].alpha[0] = -10.0
    report = evaluate(gt, det)["ap40"]
    assert all(report["ap"][c]["aos"] is None for c in ("Car", "Pedestrian", "Cyclist"))
    assert report["ap"]["Car"]["bbox"]["easy"] == 100.0


def test_loose_overlaps_accept_a_half_overlapping_box():
    """A detection shifted by 1/4 of its length has BEV IoU 0.6: a miss at 0.7, a hit at 0.5."""
    gt, det = _perfect(45, names=("Car",))
    for t in det:
        t.loc[:, 0] += 3.9 / 4 * np.cos(0.3)
        t.loc[:, 2] -= 3.9 / 4 * np.sin(0.3)
    assert evaluate(gt, det, ("Car",))["ap40"]["ap"]["Car"]["bev"]["easy"] == 0.0
    loose = evaluate(gt, det, ("Car",), loose=True)["ap40"]
    assert loose["ap"]["Car"]["bev"]["easy"] == 100.0
    assert loose["min_overlap_3d"] == {"Car": 0.5}


def test_bad_arguments_raise():
    gt, det = _perfect(2)
    with pytest.raises(ValueError, match="frames"):
        evaluate(gt, det[:1])
    with pytest.raises(ValueError, match="unknown classes"):
        evaluate(gt, det, ("Truck",))
    with pytest.raises(ValueError, match="score"):
        evaluate(gt, gt)
