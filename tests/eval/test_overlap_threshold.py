"""The overlap test at exactly the threshold: the devkit's strict ``overlap > min_overlap``.

tests/data/kitti_eval/case_threshold (tools/parity/eval_threshold.py, from the devkit copy in
SuperMHP/GUPNet): integer-pixel 2D boxes and binary-exact 3D boxes whose image, BEV and 3D overlaps
are exactly the class threshold (Car 0.7, Pedestrian 0.5), and a detection exactly 70 % inside a
DontCare box. ``expected_ap40.json`` is the devkit as shipped; ``expected_ap40_at_threshold.json`` the
devkit built with ``>=``, which shows that the case tells the two apart.
"""

from __future__ import annotations

import json

import pytest

from lib.eval.kitti_eval import evaluate
from lib.eval.kitti_format import load_labels, load_results
from lib.kitti_io import read_split

TOLERANCE = 1e-4  # the devkit prints 6 decimals of a float32 sum
METRICS = ("bbox", "aos", "bev", "3d")


@pytest.fixture(scope="module")
def case(fixture_root):
    return fixture_root / "case_threshold"


def test_case_separates_strict_from_inclusive_overlap_test(case):
    """Every evaluated (class, metric) differs by more than 10 AP between the two devkit builds."""
    strict = json.loads((case / "expected_ap40.json").read_text())["ap"]
    inclusive = json.loads((case / "expected_ap40_at_threshold.json").read_text())["ap"]
    for cls in ("Car", "Pedestrian"):
        for metric in METRICS:
            gap = inclusive[cls][metric]["moderate"] - strict[cls][metric]["moderate"]
            assert gap > 10.0, (cls, metric, gap)


def test_overlap_exactly_at_threshold_is_no_match(case, report_diff):
    """AP40 values and 41-point curves of every class and metric equal the strict devkit's."""
    split = read_split(case / "ImageSets" / "val.txt")
    gt, det = load_labels(case / "label_2", split), load_results(case / "pred", split)
    report = evaluate(gt, det, ap_modes=(40,))
    expected = json.loads((case / "expected_ap40.json").read_text())
    assert report["ap40"]["num_frames_evaluated"] == expected["num_frames_evaluated"]
    assert report_diff(report["ap40"], expected) <= TOLERANCE
