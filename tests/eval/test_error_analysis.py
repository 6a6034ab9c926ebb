"""Error analysis: hand-computed matches, recalls and box errors on one-object cases."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lib.eval.error_analysis import analyse_errors
from lib.eval.kitti_format import load_labels
from lib.eval.report import format_error_table
from lib.kitti_io import LabelTable, read_split

REPO = Path(__file__).resolve().parents[2]

CAR_DIMS = (1.5, 1.6, 3.9)  # h, w, l metres


def _table(rows: list[dict], *, scores: list[float] | None = None) -> LabelTable:
    """A frame of objects; each row gives name, x, z and optionally dims, ry, bbox, occluded."""
    n = len(rows)
    return LabelTable(
        names=np.array([r.get("name", "Car") for r in rows], dtype="<U16"),
        truncated=np.zeros(n),
        occluded=np.array([r.get("occluded", 0) for r in rows], dtype=np.int64),
        alpha=np.zeros(n),
        bbox=np.array([r.get("bbox", (100.0, 100.0, 200.0, 180.0)) for r in rows], dtype=float).reshape(n, 4),
        dims=np.array([r.get("dims", CAR_DIMS) for r in rows], dtype=float).reshape(n, 3),
        loc=np.array([(r["x"], 1.6, r["z"]) for r in rows], dtype=float).reshape(n, 3),
        rotation_y=np.array([r.get("ry", 0.0) for r in rows], dtype=float),
        score=None if scores is None else np.array(scores, dtype=float),
    )


def _car(**kw) -> dict:
    return {"x": 2.0, "z": 10.0} | kw


def test_shifted_detection_gives_the_known_errors():
    gt = [_table([_car(x=2.0, z=10.0, ry=0.1)])]
    det = [_table([_car(x=2.3, z=10.5, ry=0.4, dims=(1.6, 1.7, 3.6))], scores=[0.9])]
    cell = analyse_errors(gt, det, classes=["Car"])["classes"]["Car"]["all"]
    assert (cell["num_gt"], cell["num_tp"], cell["num_fp"]) == (1, 1, 0)
    assert cell["depth_abs_m"]["median"] == pytest.approx(0.5)
    assert cell["depth_rel"]["median"] == pytest.approx(0.05)
    assert cell["depth_bias_m"]["median"] == pytest.approx(0.5)
    assert cell["lateral_abs_m"]["median"] == pytest.approx(0.3)
    assert cell["size_abs_m"]["median"] == pytest.approx((0.1 + 0.1 + 0.3) / 3)
    assert cell["heading_abs_rad"]["median"] == pytest.approx(0.3)
    assert cell["heading_mod_pi_rad"]["median"] == pytest.approx(0.3)
    assert cell["score_tp"]["median"] == pytest.approx(0.9) and cell["score_fp"]["count"] == 0
    # 3D IoU of the shifted box: about 0.5, not 0.7 (l 3.6 vs 3.9, 0.5 m deeper, 0.3 rad turned).
    assert cell["recall"]["2d@0.5"] == 1.0 and cell["recall"]["3d@0.7"] == 0.0


def test_depth_only_shift_3d_recall_follows_the_iou():
    # ry = pi/2 puts the length along z. Same box 0.3 m deeper: 3D IoU = (3.9 - 0.3) / (3.9 + 0.3)
    # = 0.857; 0.8 m nearer: (3.9 - 0.8) / (3.9 + 0.8) = 0.660 -> recalled at 0.5, not at 0.7.
    ry = math.pi / 2
    gt = [_table([_car(z=10.0, ry=ry)]), _table([_car(z=10.0, ry=ry)])]
    det = [_table([_car(z=10.3, ry=ry)], scores=[0.8]), _table([_car(z=9.2, ry=ry)], scores=[0.7])]
    cell = analyse_errors(gt, det, classes=["Car"])["classes"]["Car"]["all"]
    assert cell["recall"] == {"2d@0.5": 1.0, "3d@0.5": 1.0, "3d@0.7": 0.5}
    assert cell["depth_bias_m"]["median"] == pytest.approx((0.3 - 0.8) / 2)
    assert cell["depth_bias_m"]["mean"] == pytest.approx((0.3 - 0.8) / 2)
    assert cell["depth_abs_m"]["median"] == pytest.approx(0.55)
    assert cell["depth_abs_m"]["p90"] == pytest.approx(0.3 + 0.9 * 0.5)  # linear interpolation


def test_heading_off_by_pi_is_zero_modulo_pi():
    gt = [_table([_car(ry=1.5)])]
    det = [_table([_car(ry=1.5 - math.pi + 0.05)], scores=[0.5])]
    cell = analyse_errors(gt, det, classes=["Car"])["classes"]["Car"]["all"]
    assert cell["heading_abs_rad"]["median"] == pytest.approx(math.pi - 0.05)
    assert cell["heading_mod_pi_rad"]["median"] == pytest.approx(0.05)
    assert cell["recall"]["3d@0.7"] == 1.0  # a box turned by about pi overlaps itself


def test_missed_ground_truth_and_false_positive():
    gt = [_table([_car(z=10.0), _car(x=-8.0, z=30.0, bbox=(500.0, 100.0, 560.0, 140.0))])]
    # One detection on the near car; one far from anything (a FP at z = 50).
    det = [_table([_car(z=10.0), _car(x=9.0, z=50.0, bbox=(900.0, 100.0, 950.0, 140.0))], scores=[0.9, 0.3])]
    report = analyse_errors(gt, det, classes=["Car"])
    cells = report["classes"]["Car"]
    assert report["distance_bins_m"] == ["0-20", "20-40", "40+"]
    assert (cells["all"]["num_gt"], cells["all"]["num_tp"], cells["all"]["num_fp"]) == (2, 1, 1)
    assert cells["all"]["recall"]["2d@0.5"] == 0.5
    assert cells["0-20"]["recall"] == {"2d@0.5": 1.0, "3d@0.5": 1.0, "3d@0.7": 1.0}
    assert cells["20-40"]["recall"] == {"2d@0.5": 0.0, "3d@0.5": 0.0, "3d@0.7": 0.0}
    assert cells["20-40"]["depth_abs_m"] == {"count": 0, "median": None, "p90": None}
    assert cells["40+"]["num_gt"] == 0 and cells["40+"]["recall"]["2d@0.5"] is None
    assert cells["40+"]["num_fp"] == 1 and cells["0-20"]["num_fp"] == 0  # a FP is binned by its own z
    assert cells["all"]["score_fp"]["median"] == pytest.approx(0.3)
    json.dumps(report, allow_nan=False)  # strict JSON


def test_greedy_by_score_and_ignored_ground_truth():
    # Two detections on one car: the higher score takes it, the other is a FP.
    gt = [_table([_car()])]
    det = [_table([_car(z=10.2), _car(z=10.0)], scores=[0.4, 0.8])]
    cell = analyse_errors(gt, det, classes=["Car"])["classes"]["Car"]["all"]
    assert cell["depth_abs_m"]["median"] == 0.0 and cell["num_fp"] == 1
    assert cell["score_tp"]["median"] == pytest.approx(0.8) and cell["score_fp"]["median"] == pytest.approx(
        0.4
    )
    # A heavily occluded car is outside "moderate": neither counted nor a source of FP.
    gt = [_table([_car(occluded=2)])]
    det = [_table([_car()], scores=[0.9])]
    cell = analyse_errors(gt, det, classes=["Car"])["classes"]["Car"]["all"]
    assert (cell["num_gt"], cell["num_tp"], cell["num_fp"]) == (0, 0, 0)
    cell = analyse_errors(gt, det, classes=["Car"], difficulty="hard")["classes"]["Car"]["all"]
    assert (cell["num_gt"], cell["num_tp"], cell["num_fp"]) == (1, 1, 0)


def test_neighbour_class_and_dontcare_are_not_false_positives():
    gt = [
        _table(
            [_car(name="Van"), _car(name="DontCare", bbox=(400.0, 100.0, 600.0, 200.0), x=-1000.0, z=-1000.0)]
        )
    ]
    det = [_table([_car(), _car(bbox=(450.0, 120.0, 500.0, 160.0))], scores=[0.9, 0.5])]
    cell = analyse_errors(gt, det, classes=["Car"])["classes"]["Car"]["all"]
    assert (cell["num_gt"], cell["num_tp"], cell["num_fp"]) == (0, 0, 0)
    cell = analyse_errors(gt, det, classes=["Pedestrian"])["classes"]["Pedestrian"]["all"]
    assert (cell["num_gt"], cell["num_fp"]) == (0, 0)  # no pedestrian detections at all


def test_custom_bins_table_and_bad_input():
    gt = [_table([_car(z=5.0), _car(x=-6.0, z=15.0, bbox=(300.0, 100.0, 400.0, 180.0))])]
    det = [_table([_car(z=5.0)], scores=[0.9])]
    report = analyse_errors(gt, det, classes=["Car"], distance_bins=(0, 10, 100))
    assert report["distance_bins_m"] == ["0-10", "10-100"]
    assert report["classes"]["Car"]["0-10"]["recall"]["2d@0.5"] == 1.0
    assert report["classes"]["Car"]["10-100"]["recall"]["2d@0.5"] == 0.0
    table = format_error_table(report)
    assert "R3D.7" in table and "Car        0-10" in table and len(table.splitlines()) == 2 + 3 + 1
    with pytest.raises(ValueError, match="frames"):
        analyse_errors(gt, [], classes=["Car"])
    with pytest.raises(ValueError, match="increasing"):
        analyse_errors(gt, det, classes=["Car"], distance_bins=(10, 0))
    with pytest.raises(ValueError, match="difficulty"):
        analyse_errors(gt, det, classes=["Car"], difficulty="medium")


def test_evaluate_cli_prints_and_writes_the_error_analysis(fixture_root, tmp_path):
    """tools/evaluate.py on a devkit case: the table is printed and the JSON lies beside ap.json."""
    case = fixture_root / "case_3"
    cmd = [sys.executable, str(REPO / "tools" / "evaluate.py"), "--label-dir", str(case / "label_2")]
    cmd += ["--result-dir", str(case / "pred"), "--split", str(case / "ImageSets" / "val.txt")]
    done = subprocess.run(
        [*cmd, "--json", str(tmp_path / "ap.json")], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert "Error analysis (moderate" in done.stdout and "Cyclist    all" in done.stdout
    report = json.loads((tmp_path / "ap.error_analysis.json").read_text())
    split = read_split(case / "ImageSets" / "val.txt")
    gt = load_labels(case / "label_2", split)
    moderate_cars = (
        (gt.table.names == "Car")
        & (gt.table.occluded <= 1)
        & (gt.table.truncated <= 0.3)
        & (gt.table.bbox[:, 3] - gt.table.bbox[:, 1] >= 25)
    )
    assert report["classes"]["Car"]["all"]["num_gt"] == int(moderate_cars.sum()) > 0
    assert report["num_frames"] == len(split)
