"""The evaluator's warning for fewer than 41 ground-truth objects, and the AP ceiling it names."""

from __future__ import annotations

import numpy as np
import pytest

from lib.eval.kitti_eval import ap_ceiling, evaluate
from lib.eval.report import format_table
from lib.kitti_io import LabelTable


def _car_frames(n: int, *, score: bool) -> list[LabelTable]:
    """n frames with one fully visible car each (50 px tall: easy); with scores 0.5 + f / 1000."""
    return [
        LabelTable(
            names=np.array(["Car"]),
            truncated=np.zeros(1),
            occluded=np.zeros(1, dtype=np.int64),
            alpha=np.full(1, 0.2),
            bbox=np.array([[100.0, 150.0, 180.0, 200.0]]),
            dims=np.array([[1.5, 1.6, 3.9]]),
            loc=np.array([[1.0, 1.6, 20.0]]),
            rotation_y=np.full(1, 0.25),
            score=np.array([0.5 + f / 1000]) if score else None,
        )
        for f in range(n)
    ]


@pytest.mark.parametrize("n", [1, 2, 10, 40])
def test_perfect_detections_reach_exactly_the_named_ceiling(n):
    reports = evaluate(_car_frames(n, score=False), _car_frames(n, score=True), ("Car",))
    assert ap_ceiling(n, 40) == pytest.approx((n - 1) / 40 * 100)
    for mode in (40, 11):
        report = reports[f"ap{mode}"]
        assert report["num_ground_truth"] == {"Car": {"easy": n, "moderate": n, "hard": n}}
        for metric in ("bbox", "bev", "3d"):
            assert report["ap"]["Car"][metric]["moderate"] == pytest.approx(ap_ceiling(n, mode), abs=1e-4)
        assert len(report["warnings"]) == 3  # easy, moderate, hard
        ceiling = f"{ap_ceiling(n, mode):.2f}"
        assert f"Car moderate: {n} ground-truth objects" in report["warnings"][1]
        assert f"AP|R{mode} cannot exceed {ceiling}" in report["warnings"][1]
    assert "warning: Car hard: " in format_table(reports)


def test_no_warning_from_41_objects_on():
    reports = evaluate(_car_frames(41, score=False), _car_frames(41, score=True), ("Car",))
    assert reports["ap40"]["warnings"] == [] and "warning" not in format_table(reports)
    assert reports["ap40"]["ap"]["Car"]["3d"]["moderate"] == 100.0 == ap_ceiling(41, 40)


def test_ap11_ceiling_counts_every_fourth_point():
    # Points 0, 4, 8 of 11 lie below 10 objects' recall thresholds; 40 objects reach points 0..36.
    assert ap_ceiling(10, 11) == pytest.approx(3 / 11 * 100)
    assert ap_ceiling(40, 11) == pytest.approx(10 / 11 * 100)
    assert ap_ceiling(0, 40) == 0.0 == ap_ceiling(0, 11)
